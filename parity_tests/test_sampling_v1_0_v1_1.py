"""Sampling parity for Open-Sora 1.0 and 1.1 through the one pipeline (``opensora_dual.pipelines.opensora``, the
release recipe picked from the model family): small random-weight pipelines (STDiT-S/2 or STDiT2-S/2, the small 2D
AutoencoderKL run frame by frame, T5-S with a toy tokenizer) in both twins, teacher-forced per step and
free-running end to end (same noise source), judged at the standard's sampling levels by
``parity_tests.sampling``. The cases are rows: IDDPM (1.0 and 1.1 settings), DPM-Solver (1.0), and 1.1's
conditioning (image-to-video, video editing with 0 < edit ratio < 1, a 2-loop extension)."""
import numpy as np
import pytest

from parity_tests.sampling import SamplingCase, format_sampling_result, run_sampling_case

STEPS = 4
# 1.0: a fixed-size model: the pipeline is built for the latent of 3 frames x 20x28 pixels (x2 small VAE)
V1_0 = dict(model="STDiT-S/2", image_size=(20, 28), num_frames=3)
V1_1 = dict(model="STDiT2-S/2", image_size=(24, 32), num_frames=6)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Pipeline folders (written by the reference, loaded by both twins through the converter) and references."""
    from opensora_dual.inference import save_sample
    from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder
    from pt_reference.pipelines.opensora import write_random_pipeline

    d = tmp_path_factory.mktemp("sampling_v1")
    tok = str(d / "tokenizer")
    build_t5_tokenizer_folder(tok, vocab_size=512)
    out = {"dir": d}
    for name, spec in (("v1.0", V1_0), ("v1.1", V1_1)):
        extra = {}
        if name == "v1.0":   # STDiT's position tables are built for one latent size
            h, w = spec["image_size"]
            extra = dict(input_size=(spec["num_frames"], h // 2, w // 2))
        out[name] = str(d / name.replace(".", "_"))
        write_random_pipeline(out[name], tokenizer=tok, model=spec["model"], scheduler=dict(num_sampling_steps=STEPS),
                              **extra)
    yy, xx = np.mgrid[0:40, 0:64]
    frames = []
    for t in range(8):   # a moving gradient square
        f = np.stack([(xx * 4 + t * 6) % 256, (yy * 6) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
        f[10:26, 8 + 2 * t:24 + 2 * t] = (240, 40, 40)
        frames.append(f)
    video = np.stack(frames)
    out["image"] = save_sample(video[:1], 8, str(d / "ref_image"))
    out["video"] = save_sample(video, 8, str(d / "ref_video"))
    return out


@pytest.fixture(scope="module")
def loaded():
    """(reference, port) pipelines per (release, sampler setting), loaded once in this file, freed after it."""
    cache = {}
    yield cache
    cache.clear()


def pipes(assets, release, scheduler=None, cache=None):
    from ms_impl.pipelines.opensora import OpenSoraPipeline as MsPipeline
    from pt_reference.pipelines.opensora import OpenSoraPipeline as PtPipeline

    sched = dict(num_sampling_steps=STEPS, **(scheduler or {}))
    key = (release, tuple(sorted(sched.items())))
    if key not in cache:
        cache[key] = (PtPipeline.from_pretrained(assets[release], scheduler=sched),
                      MsPipeline.from_pretrained(assets[release], scheduler=sched))
    return cache[key]


def _cases(a):
    v10 = dict(image_size=V1_0["image_size"], num_frames=V1_0["num_frames"], fps=8, guidance_scale=7.0)
    v11 = dict(image_size=V1_1["image_size"], fps=24, guidance_scale=7.0)
    return [
        ("v1.0", None, SamplingCase("v1.0-iddpm-t2v", ["a cat walking in the snow", "two boats on a river"], v10)),
        ("v1.0", {"type": "dpm-solver"}, SamplingCase("v1.0-dpm-solver-t2v", ["a red car on a road"], v10)),
        ("v1.1", None, SamplingCase("v1.1-iddpm-t2v", ["a cat walking in the snow", "two boats on a river"],
                                    dict(v11, num_frames=V1_1["num_frames"]))),
        ("v1.1", None, SamplingCase("v1.1-iddpm-t2i", ["a red car on a road"], dict(v11, num_frames=1))),
        ("v1.1", None, SamplingCase("v1.1-iddpm-i2v", ["a dog running on the beach"],
                                    dict(v11, num_frames=V1_1["num_frames"], reference_path=[a["image"]],
                                         mask_strategy=["0"]))),
        ("v1.1", None, SamplingCase("v1.1-iddpm-edit", ["a red square moving across snow"],
                                    dict(v11, num_frames=V1_1["num_frames"], reference_path=[a["video"]],
                                         mask_strategy=["0,0,0,0,4,0.5"]))),
        ("v1.1", None, SamplingCase("v1.1-iddpm-loop", ["|0|a bird flying over a forest|1|a bird landing on a tree"],
                                    dict(v11, num_frames=V1_1["num_frames"], loop=2, condition_frame_length=2))),
    ]


CASE_NAMES = ["v1.0-iddpm-t2v", "v1.0-dpm-solver-t2v", "v1.1-iddpm-t2v", "v1.1-iddpm-t2i", "v1.1-iddpm-i2v",
              "v1.1-iddpm-edit", "v1.1-iddpm-loop"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_sampling_v1_0_v1_1_fp32(name, assets, loaded):
    release, sched, case = next(c for c in _cases(assets) if c[2].name == name)
    pt, port = pipes(assets, release, sched, loaded)
    assert pt.recipe.name == release and port.recipe.name == release
    res = run_sampling_case(case, pt, port)
    report = format_sampling_result(res)
    print(report)
    assert res.steps and res.latent is not None
    assert res.passed, report
    assert len({r.step for r in res.steps}) == STEPS
    assert res.reference_output.videos[0].std() > 1.0          # a video, not a blank frame
    assert max(r.dz.ref_norm for r in res.steps) > 0           # the sampler moved the latent
    if name.endswith("loop"):   # two clips joined: 6 + (6 - 2 condition frames)
        assert res.reference_output.videos[0].shape[0] == 10
        assert len({r.call for r in res.steps}) == 2


def test_v1_0_refuses_references(assets, loaded):
    from opensora_dual.inference import InferenceInputError

    pt, _ = pipes(assets, "v1.0", cache=loaded)
    with pytest.raises(InferenceInputError, match="text-to-video only"):
        pt(["a cat"], image_size=V1_0["image_size"], num_frames=V1_0["num_frames"], reference_path=[assets["image"]],
           mask_strategy=["0"], progress=False)


def test_v1_1_fp16_teacher_forced(assets, loaded):
    from ms_impl.pipelines.opensora import OpenSoraPipeline as MsPipeline

    pt, _ = pipes(assets, "v1.1", cache=loaded)
    ms16 = MsPipeline.from_pretrained(assets["v1.1"], scheduler=dict(num_sampling_steps=STEPS), dtype="fp16")
    _, _, case = next(c for c in _cases(assets) if c[2].name == "v1.1-iddpm-i2v")
    case = SamplingCase(case.name, case.prompts, case.kwargs, dtype="fp16", free_running=False)
    res = run_sampling_case(case, pt, ms16)
    report = format_sampling_result(res)
    print(report)
    assert res.steps and res.passed, report
    assert max(r.dz.rel_fro for r in res.steps) > 1e-5, report   # fp16 really ran
