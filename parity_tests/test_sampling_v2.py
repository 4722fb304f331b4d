"""Sampling parity for Open-Sora 2.0 through its pipeline (``opensora_dual.pipelines.opensora_v2``): a small
random-weight pipeline (MMDiT-S widened to the parts, HunyuanVAE-S, T5-S and CLIP-S-text with toy tokenizers)
written by the reference's ``save_pretrained`` and loaded by both twins, teacher-forced per step and free-running
end to end (same noise source), judged at the standard's sampling levels by ``parity_tests.sampling``. 12 steps,
so the text / image oscillation (scale 1.0 on odd steps >= 10) happens on step 11."""
import numpy as np
import pytest

from parity_tests.sampling import SamplingCase, format_sampling_result, run_sampling_case

STEPS = 12
SIZE = dict(image_size=(32, 48), num_frames=9)   # latent 3 x 8 x 12 (x4 VAE), 3 x 4 x 6 = 72 tokens


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from opensora_dual.inference import save_sample
    from pt_reference.pipelines.opensora_v2 import write_random_pipeline

    d = tmp_path_factory.mktemp("sampling_v2")
    write_random_pipeline(str(d / "pipe"), scheduler=dict(num_sampling_steps=STEPS))
    yy, xx = np.mgrid[0:40, 0:64]
    image = np.stack([(xx * 4) % 256, (yy * 6) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
    image[10:26, 8:24] = (240, 40, 40)
    return {"dir": d, "pipe": str(d / "pipe"), "image": save_sample(image[None], 8, str(d / "ref_image"))}


@pytest.fixture(scope="module")
def pipes(assets):
    from ms_impl.pipelines.opensora_v2 import OpenSoraV2Pipeline as MsPipeline
    from pt_reference.pipelines.opensora_v2 import OpenSoraV2Pipeline as PtPipeline

    sched = dict(num_sampling_steps=STEPS)
    return PtPipeline.from_pretrained(assets["pipe"], scheduler=sched), \
        MsPipeline.from_pretrained(assets["pipe"], scheduler=sched)


def _check(res, report):
    print(report)
    assert res.steps and res.latent is not None
    assert res.passed, report
    assert len({r.step for r in res.steps}) == STEPS
    assert res.reference_output.videos[0].std() > 1.0          # a video, not a blank frame
    assert all(r.dz.ref_norm > 0 for r in res.steps)          # every step moved the latent


def test_v2_t2v_fp32(pipes):
    pt, port = pipes
    assert pt.recipe.name == port.recipe.name == "v2.0"
    case = SamplingCase("v2.0-t2v", ["a cat walking in the snow", "two boats on a river at dawn"],
                        dict(SIZE, fps=24, motion_score="4"), seed=5)
    res = run_sampling_case(case, pt, port)
    _check(res, format_sampling_result(res))
    out = res.reference_output
    assert out.prompts[0] == "a cat walking in the snow. 24 FPS. 4 motion score."
    assert out.videos[0].shape == (9, 32, 48, 3)


def test_v2_i2v_head_fp32(pipes, assets):
    pt, port = pipes
    case = SamplingCase("v2.0-i2v_head", ["a red square on a gradient"],
                        dict(SIZE, cond_type="i2v_head", reference_path=[assets["image"]]), seed=6)
    res = run_sampling_case(case, pt, port)
    _check(res, format_sampling_result(res))
    # the reference's latent is pasted back into frame 0 in both twins
    for pipe, out in ((pt, res.reference_output), (port, res.port_output)):
        ref_latent = pipe.collect_references_v2([assets["image"]], "i2v_head", SIZE["image_size"])[0][0]
        assert np.array_equal(out.latents[0, :, :1], ref_latent)
    # the conditioning changes the result: the same seed without the reference gives another video
    t2v = pt(case.prompts, noise=None, seed=6, progress=False, output_type="latent", **SIZE)
    assert np.abs(t2v.latents[0, :, 1:] - res.reference_output.latents[0, :, 1:]).max() > 1e-3


def test_v2_bad_inputs(pipes, assets):
    from opensora_dual.inference import InferenceInputError

    pt, _ = pipes
    with pytest.raises(InferenceInputError, match="4k\\+1"):
        pt(["a cat"], image_size=(32, 48), num_frames=8, progress=False)
    with pytest.raises(InferenceInputError, match="cond_type"):
        pt(["a cat"], cond_type="i2v_middle", progress=False, **SIZE)
    with pytest.raises(InferenceInputError, match="at least 33 frames"):
        pt(["a cat"], cond_type="v2v_head", reference_path=[assets["image"]], image_size=(32, 48), num_frames=33,
           progress=False)


def test_v2_i2v_head_fp16_teacher_forced(assets, pipes):
    """The port in fp16 (fp16 matmuls, fp32 norms / softmax) against the fp32 reference, per step, with image
    guidance on (i2v_head: three rows per forward, the temporal image-scale ramp)."""
    from ms_impl.pipelines.opensora_v2 import OpenSoraV2Pipeline as MsPipeline

    pt = pipes[0]
    ms16 = MsPipeline.from_pretrained(assets["pipe"], scheduler=dict(num_sampling_steps=STEPS), dtype="fp16")
    case = SamplingCase("v2.0-i2v_head-fp16", ["a red square on a gradient"],
                        dict(SIZE, cond_type="i2v_head", reference_path=[assets["image"]]), dtype="fp16", seed=6,
                        free_running=False)
    res = run_sampling_case(case, pt, ms16)
    report = format_sampling_result(res)
    print(report)
    assert len(res.steps) == STEPS and res.passed, report
    assert max(r.dz.rel_fro for r in res.steps) > 1e-5, report   # fp16 really ran
