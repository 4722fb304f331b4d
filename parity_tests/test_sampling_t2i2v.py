"""Open-Sora 2.0 t2i2v and the video DC-AE through the 2.0 pipeline (``opensora_dual.pipelines.opensora_v2``).

t2i2v: a small random pipeline with the image parts (Flux-S, guidance embedding and the distilled sampler;
FluxAE-S) written by the reference's ``save_pretrained`` and loaded by both twins. The image step makes the
first frame, it is rescaled and saved as PNG, then the video model samples i2v_head from it. Judged at the
standard's sampling levels by ``parity_tests.sampling`` (the video sampler teacher-forced, the whole run
free-running) plus the generated first frames (PSNR, the free-running gate). The image sampler itself is
teacher-forced in ``test_flow_matching.py::test_distilled_single_pass``.

DC-AE: MMDiT-S with patch 1 on DC-AE-S latents (upstream's ``high_compression.py`` layout), t2v."""
import os

import numpy as np
import pytest

from parity_tests.sampling import SamplingCase, format_sampling_result, run_sampling_case
from parity_tests.standard import compare, judge, psnr

STEPS = 4
SIZE = dict(image_size=(32, 48), num_frames=9)   # video latent 3 x 8 x 12 (x4 VAE)
IMAGE_RES = "64px"                               # the image step at 64 x 64 (FluxAE-S: 2x, latent 32 x 32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from pt_reference.pipelines.opensora_v2 import write_random_pipeline

    d = tmp_path_factory.mktemp("t2i2v")
    write_random_pipeline(str(d / "pipe"), scheduler=dict(num_sampling_steps=STEPS), image_model="Flux-S",
                          image_vae="FluxAE-S")
    return d


@pytest.fixture(scope="module")
def pipes(folder):
    from ms_impl.pipelines.opensora_v2 import OpenSoraV2Pipeline as MsPipeline
    from pt_reference.pipelines.opensora_v2 import OpenSoraV2Pipeline as PtPipeline

    sched = dict(num_sampling_steps=STEPS)
    return PtPipeline.from_pretrained(str(folder / "pipe"), scheduler=sched), \
        MsPipeline.from_pretrained(str(folder / "pipe"), scheduler=sched)


def test_t2i2v_fp32(pipes, folder):
    pt, port = pipes
    assert os.path.isdir(folder / "pipe" / "image_model") and os.path.isdir(folder / "pipe" / "image_vae")
    assert type(pt.image_vae).__name__ == type(port.image_vae).__name__ == "AutoEncoderFlux"
    case = SamplingCase("v2.0-t2i2v", ["a lighthouse on a cliff at sunset"],
                        dict(SIZE, t2i2v=True, image_resolution=IMAGE_RES), seed=3)
    res = run_sampling_case(case, pt, port)
    report = format_sampling_result(res)
    ref, out = res.reference_output, res.port_output
    images = compare(np.stack(out.images).astype(np.float32), np.stack(ref.images).astype(np.float32))
    images.extra["psnr"] = psnr(np.stack(out.images), np.stack(ref.images))
    verdict = judge(images, "sampling_free_running", "fp32")
    print(report, f"\nfirst frames: {images.extra}")
    assert res.passed, report
    assert verdict, verdict.reasons
    assert len(res.steps) == STEPS                               # the video sampler's steps (one call)
    assert ref.images[0].shape == (32, 48, 3) and ref.images[0].std() > 1.0
    # the video starts from the generated frame: its latent is pasted into frame 0 (i2v_head)
    lat = pt.encode_video((np.asarray(ref.images[0], np.float32)[None, :, :, :, None].transpose(0, 3, 4, 1, 2)
                           / 127.5 - 1.0))
    assert lat.shape[2] == 1
    assert ref.videos[0].shape == (9, 32, 48, 3)


def test_t2i2v_saves_conditions_and_offloads(pipes, folder, tmp_path):
    """The condition PNGs land at ``condition_paths``; with offloading (lazy image parts, the video model freed
    during the image step) the numbers are the same and both diffusion models are never held together."""
    from PIL import Image

    from pt_reference.pipelines.opensora_v2 import OpenSoraV2Pipeline as PtPipeline

    pt, _ = pipes
    kw = dict(SIZE, t2i2v=True, image_resolution=IMAGE_RES, seed=4, progress=False, output_type="latent")
    base = pt(["a red kite"], condition_paths=[str(tmp_path / "a" / "kite")], **kw)
    assert np.asarray(Image.open(tmp_path / "a" / "kite.png")).shape == (32, 48, 3)
    lazy = PtPipeline.from_pretrained(str(folder / "pipe"), scheduler=dict(num_sampling_steps=STEPS),
                                      lazy=("image_model", "image_vae"))
    assert lazy.image_model is None and lazy.model is not None
    held = []
    orig = lazy.text_to_image

    def spy(*a, **k):
        held.append(lazy.model is None)
        return orig(*a, **k)

    lazy.text_to_image = spy
    out = lazy(["a red kite"], condition_paths=[str(tmp_path / "b" / "kite")], offload=True, **kw)
    assert held == [True]                                  # the video model was freed for the image step
    assert lazy.image_model is None and lazy.model is not None   # image parts freed after, video model back
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "kite.png")),
                          np.asarray(Image.open(tmp_path / "b" / "kite.png")))
    assert np.array_equal(out.latents, base.latents)


def test_t2i2v_needs_the_image_parts(folder):
    from opensora_dual.inference import InferenceInputError
    from pt_reference.pipelines.opensora_v2 import OpenSoraV2Pipeline as PtPipeline

    p = folder / "pipe"
    pipe = PtPipeline.from_pretrained(None, model=str(p / "model"), vae=str(p / "vae"),
                                      text_encoder=str(p / "text_encoder"), clip=str(p / "clip"))
    with pytest.raises(InferenceInputError, match="Flux image model"):
        pipe(["a cat"], t2i2v=True, progress=False, **SIZE)
    with pytest.raises(InferenceInputError, match="both"):
        PtPipeline.from_pretrained(None, model=str(p / "model"), vae=str(p / "vae"),
                                   image_model=str(p / "image_model"), load_text_encoder=False)


def test_t2i_image_size_follows_upstream():
    from opensora_dual.pipelines.opensora_v2 import t2i_image_size

    assert t2i_image_size("768px", "16:9") == (576, 1024)      # modify_option_to_t2i, img_resolution 768px
    assert t2i_image_size("768px", "9:16") == (1024, 576)
    assert t2i_image_size("64px", None, (32, 48)) == (64, 64)


def test_dc_ae_t2v_fp32(tmp_path):
    """MMDiT with patch 1 on the video DC-AE's latents (non-causal, 4x time): upstream keeps is_causal_vae True,
    so 9 frames -> 3 latent frames -> 12 decoded frames, the first 9 kept."""
    from ms_impl.pipelines.opensora_v2 import OpenSoraV2Pipeline as MsPipeline
    from pt_reference.pipelines.opensora_v2 import OpenSoraV2Pipeline as PtPipeline
    from pt_reference.pipelines.opensora_v2 import write_random_pipeline

    write_random_pipeline(str(tmp_path / "pipe"), scheduler=dict(num_sampling_steps=STEPS), vae="DC-AE-S",
                          patch_size=1, cond_embed=True)
    sched = dict(num_sampling_steps=STEPS)
    pt = PtPipeline.from_pretrained(str(tmp_path / "pipe"), scheduler=sched)
    port = MsPipeline.from_pretrained(str(tmp_path / "pipe"), scheduler=sched)
    assert pt.latent_size(9, (32, 48)) == (3, 4, 6) and pt.latent_channels == 8
    case = SamplingCase("v2.0-dc_ae-t2v", ["a paper boat"], dict(SIZE), seed=8)
    res = run_sampling_case(case, pt, port)
    report = format_sampling_result(res)
    print(report)
    assert res.passed, report
    assert res.reference_output.videos[0].shape == (9, 32, 48, 3)
