"""Sampling parity (the standard's sampling levels): the small random-weight Open-Sora 1.2 pipeline in both
twins, every inference mode, with CFG: teacher-forced per step and free-running end to end (same noise),
decoded videos by PSNR; fp16 teacher-forced. The cases are rows; ``parity_tests.sampling`` runs them."""

import numpy as np
import pytest

from parity_tests.sampling import SamplingCase, format_sampling_result, run_sampling_case

# latent 12x16 with the small VAE (x2). At 24x32 pixels the timestep transform maps t = 1000 of a video to
# 999.9998 (every frame active at step 0) but of an image to 1000.0005 (upstream's float32 quirk: the first
# step updates nothing); the cases below exercise both.
SIZE = dict(image_size=(24, 32), fps=24, guidance_scale=7.0)
STEPS = 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Reference image/video files and the pipeline folder the port loads (weights through the converter)."""
    from opensora_dual.inference import save_sample
    from pt_reference.pipelines.opensora import write_random_pipeline

    d = tmp_path_factory.mktemp("sampling")
    write_random_pipeline(str(d / "pipeline"), scheduler=dict(num_sampling_steps=STEPS))
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:40, 0:64]
    frames = []
    for t in range(17):   # a moving gradient square: smooth content the VAE can carry
        f = np.stack([(xx * 4 + t * 6) % 256, (yy * 6) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
        f[10:26, 8 + t:24 + t] = (240, 40, 40)
        frames.append(f)
    video = np.stack(frames)
    paths = {
        "image1": save_sample(video[:1], 24, str(d / "ref_image1")),
        "image2": save_sample(rng.integers(0, 255, (1, 40, 64, 3), dtype=np.uint8), 24, str(d / "ref_image2")),
        "video": save_sample(video, 24, str(d / "ref_video")),
    }
    return {"dir": d, "pipeline": str(d / "pipeline"), **paths}


@pytest.fixture(scope="module")
def pipes(assets):
    from ms_impl.pipelines.opensora import OpenSoraPipeline as MsPipeline
    from pt_reference.pipelines.opensora import OpenSoraPipeline as PtPipeline

    sched = dict(num_sampling_steps=STEPS)
    pt = PtPipeline.from_pretrained(assets["pipeline"], scheduler=sched)
    ms_ = MsPipeline.from_pretrained(assets["pipeline"], scheduler=sched)
    return pt, ms_


def _cases(a):
    return [
        SamplingCase("t2i", ["a red car on a road"], dict(SIZE, num_frames=1)),
        SamplingCase("t2v", ["a cat walking in the snow", "two boats on a river at sunset"],
                     dict(SIZE, num_frames=17, aes=6.5)),
        SamplingCase("i2v", ["a dog running on the beach"],
                     dict(SIZE, num_frames=17, reference_path=[a["image1"]], mask_strategy=["0"])),
        SamplingCase("v2v", ["a red square moving across the field"],
                     dict(SIZE, num_frames=17, reference_path=[a["video"]], mask_strategy=["0,0,-2,0,2"])),
        SamplingCase("connect", ["a city street at night"],
                     dict(SIZE, num_frames=17, reference_path=[f"{a['image1']};{a['image2']}"],
                          mask_strategy=["0;0,1,0,-1,1"])),
        SamplingCase("edit", ["a red square moving across snow"],          # 0 < m < 1: replayed noise is used
                     dict(SIZE, num_frames=17, reference_path=[a["video"]], mask_strategy=["0,0,0,0,5,0.6"])),
        SamplingCase("loop", ["|0|a bird flying over a forest|1|a bird landing on a tree"],
                     dict(SIZE, num_frames=34, loop=2, condition_frame_length=5, condition_frame_edit=0.0)),
    ]


CASE_NAMES = ["t2i", "t2v", "i2v", "v2v", "connect", "edit", "loop"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_sampling_fp32(name, assets, pipes):
    case = next(c for c in _cases(assets) if c.name == name)
    res = run_sampling_case(case, *pipes)
    report = format_sampling_result(res)
    print(report)
    assert res.steps and res.latent is not None
    assert res.passed, report
    # the run did something: the latent moved away from the starting noise, frames are not constant
    assert res.reference_output.videos[0].std() > 1.0
    if name == "loop":   # two loops joined: 34 + (34 - 17 re-encoded condition frames)
        assert res.reference_output.videos[0].shape[0] == 51
        assert len({r.call for r in res.steps}) == 2   # both loops' sampler runs were teacher-forced
    if name == "t2i":
        assert res.reference_output.videos[0].shape[0] == 1
        assert res.steps[0].t > 1000 and res.steps[0].dz.ref_norm == 0   # the quirk, in both twins
    elif name == "edit":   # m = 0.6 everywhere: nothing is active until t <= 600
        assert res.steps[0].dz.ref_norm == 0 and res.steps[1].dz.ref_norm > 0
    else:
        assert res.steps[0].dz.ref_norm > 0


def test_edit_consumes_replayed_noise(assets, pipes):
    """Editing (0 < m < 1) is the one mode whose per-step draws change the result: a different draw must move
    the output, so the replay in the teacher-forced rows is exercised, not ignored."""
    from opensora_dual.sampling.noise import NumpyNoise

    pt, _ = pipes
    case = next(c for c in _cases(assets) if c.name == "edit")
    kw = dict(case.kwargs, progress=False, output_type="latent")

    class Shifted(NumpyNoise):   # same starting latent, different per-step draws
        def randn(self, shape):
            self.n = getattr(self, "n", 0) + 1
            a = super().randn(shape)
            return a if self.n == 1 else -a

    a = pt(case.prompts, noise=NumpyNoise(0), **kw).latents
    b = pt(case.prompts, noise=Shifted(0), **kw).latents
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("name", ["t2v", "i2v"])
def test_sampling_fp16_teacher_forced(name, assets, pipes):
    from ms_impl.pipelines.opensora import OpenSoraPipeline as MsPipeline

    sched = dict(num_sampling_steps=STEPS)
    pt = pipes[0]
    ms16 = MsPipeline.from_pretrained(assets["pipeline"], scheduler=sched, dtype="fp16")
    case = next(c for c in _cases(assets) if c.name == name)
    case = SamplingCase(case.name, case.prompts, case.kwargs, dtype="fp16", free_running=False)
    res = run_sampling_case(case, pt, ms16)
    report = format_sampling_result(res)
    print(report)
    assert res.steps and res.passed, report
    # fp16 really ran: the port's per-step error is above fp32's
    assert max(r.dz.rel_fro for r in res.steps) > 1e-5, report


def test_teacher_forced_catches_a_wrong_sampler(assets, pipes):
    """The engine can fail: a port sampler with the wrong last-step dt is caught on that step only."""
    pt, ms_ = pipes
    case = next(c for c in _cases(assets) if c.name == "t2v")
    case = SamplingCase(case.name, case.prompts[:1], case.kwargs, free_running=False)
    orig = ms_.scheduler.schedule.dts

    def wrong(ts):
        d = orig(ts)
        d[-1] = d[-1] * 0.5
        return d

    ms_.scheduler.schedule.dts = wrong
    try:
        res = run_sampling_case(case, pt, ms_)
    finally:
        ms_.scheduler.schedule.dts = orig
    failed = [r.step for r in res.steps if not r.passed]
    assert failed == [STEPS - 1], format_sampling_result(res)
