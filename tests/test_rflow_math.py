"""Pure-function tests of the rectified-flow schedule (``opensora_dual.sampling``) against upstream's behaviour
as ``shared/opensora_facts.md`` section 5 describes it."""
import math

import numpy as np
import pytest

from opensora_dual.sampling import (MaskSchedule, NumpyNoise, RecordingNoise, RFlowSchedule, add_noise_timepoints,
                                    cfg_combine, sampling_timesteps, timestep_transform)


def _ratio(h, w, nf_pixels):
    nf = 1 if nf_pixels == 1 else nf_pixels // 17 * 5
    return math.sqrt(h * w / 512 ** 2) * math.sqrt(nf)


def test_sampling_timesteps_upstream_list():
    assert sampling_timesteps(4) == [1000.0, 750.0, 500.0, 250.0]
    assert sampling_timesteps(3, use_discrete_timesteps=True) == [1000, 667, 333]
    assert len(sampling_timesteps(30)) == 30


@pytest.mark.parametrize("h,w,nf,r", [(240, 426, 51, 2.42), (720, 1280, 102, 10.3)])
def test_transform_ratio_examples_from_the_facts(h, w, nf, r):
    assert _ratio(h, w, nf) == pytest.approx(r, rel=0.01)
    t = np.float32([500.0])
    out = timestep_transform(t, [h], [w], [nf], num_timesteps=1000)[0]
    expect = r * 0.5 / (1 + (r - 1) * 0.5) * 1000
    assert out == pytest.approx(expect, rel=2e-3)


def test_transform_is_upstreams_float32_arithmetic():
    """Same expression, same order, float32, as upstream's torch code; sqrt correctly rounded (as on GPU)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = float(rng.integers(16, 1100)), float(rng.integers(16, 2000))
        nf = float(rng.choice([1, 17, 34, 51, 102, 204, 408]))
        for t in sampling_timesteps(int(rng.integers(1, 40))):
            tt = torch.tensor([t]) / 1000
            res = torch.tensor([h]) * torch.tensor([w])
            rs = torch.from_numpy(np.sqrt((res / (512 * 512)).numpy()))
            n = torch.ones(1) if nf == 1 else torch.tensor([nf]) // 17 * 5
            rt = torch.from_numpy(np.sqrt((n / 1).numpy()))
            r = rs * rt * 1.0
            ref = (r * tt / (1 + (r - 1) * tt) * 1000).numpy()
            got = timestep_transform(np.float32([t]), [h], [w], [nf], num_timesteps=1000)
            assert got.dtype == np.float32
            assert got.tobytes() == ref.tobytes(), (h, w, nf, t)


def test_transform_above_1000_quirk_flips_the_first_step():
    """Small ratios map t = 1000 to 1000.0001 in float32 (upstream): an m = 1 frame is then NOT active at step 0."""
    out = timestep_transform(np.float32([1000.0]), [504], [96], [1], num_timesteps=1000)[0]
    assert out > 1000.0
    sched = MaskSchedule(np.ones((1, 3), np.float32))
    active, add = sched.step(np.float32([out]))
    assert not active.any() and not add.any()


def test_short_clips_not_nan():
    """2-16 pixel frames: upstream's nf = 0 gives NaN at t = 1000 and 0 below; ours clamps nf to 1."""
    t = np.float32([1000.0, 500.0])
    up = timestep_transform(t, [240, 240], [426, 426], [16, 16], num_timesteps=1000, upstream_nf0=True)
    assert np.isnan(up[0]) and up[1] == 0
    ours = timestep_transform(t, [240, 240], [426, 426], [16, 16], num_timesteps=1000)
    img = timestep_transform(t, [240, 240], [426, 426], [1, 1], num_timesteps=1000)
    assert np.array_equal(ours, img)


def test_schedule_integrates_to_zero_and_last_dt_is_last_t():
    s = RFlowSchedule(30, use_timestep_transform=True)
    ts = s.timesteps(2, [240, 240], [426, 426], [51, 51])
    d = s.dts(ts)
    assert ts.shape == (30, 2) and ts.dtype == np.float32
    assert np.all(np.diff(ts[:, 0]) < 0)
    assert d[-1, 0] == np.float32(ts[-1, 0] / np.float32(1000))
    assert d.sum(0)[0] == pytest.approx(ts[0, 0] / 1000, rel=1e-6)
    plain = RFlowSchedule(4).timesteps(1)
    assert plain[:, 0].tolist() == [1000.0, 750.0, 500.0, 250.0]


def test_transform_needs_sizes():
    with pytest.raises(ValueError):
        RFlowSchedule(3, use_timestep_transform=True).timesteps(1)


def test_mask_schedule_edit_ratio_noise_once():
    m = np.array([[0.0, 1.0, 0.6]], np.float32)
    s = MaskSchedule(m)
    hist = [s.step(np.float32([t])) for t in (1000.0, 750.0, 600.0, 500.0, 250.0)]
    active = np.stack([a[0] for a, _ in hist])
    added = np.stack([n[0] for _, n in hist])
    assert active[:, 0].tolist() == [False] * 5                     # kept frame: never generated
    assert active[:, 1].tolist() == [True] * 5 and not added[:, 1].any()   # m = 1: noised from the start
    assert active[:, 2].tolist() == [False, False, True, True, True]      # 600 >= t from t = 600 on
    assert added[:, 2].tolist() == [False, False, True, False, False]     # noise added exactly once


def test_add_noise_and_cfg():
    tp = add_noise_timepoints(np.float32([1000, 250, 0]))
    assert tp.tolist() == [0.0, 0.75, 1.0]
    c, u = np.float32([2.0]), np.float32([1.0])
    assert cfg_combine(c, u, 7.0)[0] == 8.0
    assert cfg_combine(c, u, 1.0)[0] == 2.0


def test_noise_sources_replay():
    rec = RecordingNoise(NumpyNoise(3))
    a = [rec.randn((2, 3)), rec.randn((4,))]
    rep = rec.replay()
    assert np.array_equal(rep.randn((2, 3)), a[0]) and np.array_equal(rep.randn((4,)), a[1])
    with pytest.raises(RuntimeError):
        rep.randn((1,))
    assert np.array_equal(NumpyNoise(3).randn((2, 3)), a[0])
    with pytest.raises(RuntimeError):
        rec.replay().randn((3, 2))
