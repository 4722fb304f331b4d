"""Pure-function tests of the Open-Sora 2.0 flow-matching math (``opensora_dual.sampling.flow_matching``) against
upstream's behaviour (``main:opensora/utils/{sampling,inference,train}.py``, ``scripts/diffusion/train.py``) and
the worked examples of ``shared/opensora_facts.md`` section 5."""
import math
import random

import numpy as np
import pytest

import opensora_dual.sampling.flow_matching as fm
from opensora_dual.packing import img_ids, txt_ids, unpack
from opensora_dual.sampling.noise import NumpyNoise, RecordingNoise


# ------------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("res,hw,alpha,digits", [("256px", (192, 336), 5.73, 2), ("768px", (576, 1024), 11.9, 1)])
def test_alpha_examples_from_the_facts(res, hw, alpha, digits):
    """256px / 768px 16:9, 129 frames: T_lat 33; latent 24 x 42 (252 tokens per frame) and 72 x 128 (2304)."""
    T = fm.latent_num_frames(129, 4, True)
    shape = fm.noise_shape(1, *hw, T)
    assert T == 33 and shape[:3] == (1, 16, 33)
    seq = fm.image_seq_len(shape[3], shape[4])
    assert seq == {"256px": 252, "768px": 2304}[res]
    a = fm.shift_alpha(seq, T)
    assert round(a, digits) == alpha   # the facts' rounded values (5.7326..., 11.872...)
    assert a == pytest.approx((2 / 3840 * seq + 1 - 512 / 3840) * math.sqrt(T), rel=1e-12)   # the facts' formula
    ts = fm.get_schedule(50, seq, T)
    assert ts.dtype == np.float32 and ts.shape == (51,) and ts[0] == 1.0 and ts[-1] == 0.0
    assert np.all(np.diff(ts) < 0)
    lin = np.linspace(1, 0, 51)
    np.testing.assert_allclose(ts, a * lin / (1 + (a - 1) * lin), rtol=1e-6, atol=1e-7)


def test_flow_shift_overrides_alpha_and_shift_false_is_linear():
    ts = fm.get_schedule(10, 252, 33, shift_alpha_=2.0)
    lin = np.linspace(1, 0, 11)
    np.testing.assert_allclose(ts, 2 * lin / (1 + lin), rtol=1e-6, atol=1e-7)   # no sqrt(T) on an override
    assert np.array_equal(fm.get_schedule(10, 252, 33, shift=False), fm.linspace_f32(1.0, 0.0, 11))


def test_schedule_is_upstreams_float32_arithmetic():
    """``time_shift`` on ``torch.linspace`` with a Python-float alpha, bit for bit (torch's CPU linspace may
    differ from its scalar formula by an ulp, so the shift is fed the same linspace on both sides)."""
    torch = pytest.importorskip("torch")
    for steps, seq, T in [(50, 252, 33), (50, 2304, 33), (30, 1024, 1), (7, 99, 5)]:
        a = fm.shift_alpha(seq, T)
        lin = fm.linspace_f32(1.0, 0.0, steps + 1)
        t = torch.from_numpy(lin)
        ref = (a * t / (1 + (a - 1) * t)).numpy()
        assert fm.time_shift(a, lin).tobytes() == ref.tobytes()
        assert fm.get_schedule(steps, seq, T).tobytes() == ref.tobytes()
        # dt: difference of the .tolist() doubles, rounded to float32 by the tensor product
        ts = ref.tolist()
        dts = fm.euler_dts(ref)
        one = torch.ones(1)
        for i in range(steps):
            assert dts[i] == ((ts[i + 1] - ts[i]) * one).numpy()[0]


def test_latent_shape_rules(monkeypatch):
    assert fm.round_up_16(190) == 192 and fm.round_up_16(192) == 192 and fm.round_up_16(1) == 16
    assert fm.latent_num_frames(1) == 1 and fm.latent_num_frames(129) == 33 and fm.latent_num_frames(33) == 9
    assert fm.latent_num_frames(128, 4, is_causal_vae=False) == 32   # DC-AE: T // 4
    assert fm.noise_shape(2, 192, 336, 33) == (2, 16, 33, 24, 42)
    assert fm.noise_shape(1, 200, 200, 1) == (1, 16, 1, 26, 26)   # ceil(200/16) = 13 tokens
    monkeypatch.setenv("AE_SPATIAL_COMPRESSION", "32")           # DC-AE f32, patch 1, 128 channels
    assert fm.noise_shape(1, 256, 256, 32, patch_size=1, channel=128) == (1, 128, 32, 8, 8)
    z = fm.get_noise(1, 256, 256, 3, RecordingNoise(NumpyNoise(0)))
    assert z.shape == (1, 16, 3, 16, 16) and z.dtype == np.float32


def test_pack_unpack_and_ids():
    x = np.arange(2 * 3 * 2 * 4 * 6, dtype=np.float32).reshape(2, 3, 2, 4, 6)
    p = fm.pack(x)
    assert p.shape == (2, 2 * 2 * 3, 12)
    # token (t=1, h=0, w=2), channel (c=2, ph=1, pw=0)
    assert p[0, 1 * 6 + 0 * 3 + 2, 2 * 4 + 1 * 2 + 0] == x[0, 2, 1, 1, 4]
    assert np.array_equal(unpack(p, 2, 4, 6), x)
    ids = img_ids(2, 2, 2, 3)
    assert ids.shape == (2, 12, 3) and ids[1, 1 * 6 + 1 * 3 + 2].tolist() == [1, 1, 2]
    assert not txt_ids(2, 5).any()


# --------------------------------------------------------------------------------------------------- guidance
def test_oscillation_rule():
    got = [fm.oscillation_gs(7.5, i) for i in range(16)]
    assert got == [7.5] * 11 + [1.0, 7.5, 1.0, 7.5, 1.0]


def test_temporal_osci_values():
    """Per step upper = linspace(g_img, 1, N + 1)[i]; per latent frame linspace(1, upper, T_lat)."""
    N, T = 50, 33
    s0 = fm.temporal_image_scales(3.0, 0, N + 1, T)
    assert s0[0] == 1.0 and s0[-1] == 3.0 and s0.shape == (T,)
    np.testing.assert_allclose(s0, np.linspace(1, 3, T), rtol=1e-6)
    s = fm.temporal_image_scales(3.0, 8, N + 1, T)
    assert s[-1] == pytest.approx(3.0 - 2.0 * 8 / 50, rel=1e-6) and s[0] == 1.0
    assert np.all(np.diff(s) > 0)


def test_step_guidance_combines_the_rules():
    kw = dict(num_timesteps=13, guidance=7.5, guidance_img=3.0, num_frames_latent=5)
    tg, ig = fm.step_guidance(3, text_osci=True, image_osci=True, scale_temporal_osci=True, **kw)
    assert tg == 7.5 and isinstance(ig, np.ndarray) and ig[0] == 1.0
    assert ig[-1] == pytest.approx(3.0 - 2.0 * 3 / 12, rel=1e-6)
    tg, ig = fm.step_guidance(11, text_osci=True, image_osci=True, scale_temporal_osci=True, **kw)
    assert tg == 1.0 and ig == 1.0                        # oscillated: no temporal ramp (image_gs > 1 is false)
    tg, ig = fm.step_guidance(11, text_osci=False, image_osci=False, scale_temporal_osci=False, **kw)
    assert tg == 7.5 and ig == 3.0
    tg, ig = fm.step_guidance(10, text_osci=True, image_osci=True, scale_temporal_osci=False, **kw)
    assert tg == 7.5 and ig == 3.0


def test_guidance_combination_formula():
    rng = np.random.default_rng(0)
    c, u, u2 = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    v = fm.guidance_combine(c, u, u2, 7.5, 3.0)
    np.testing.assert_allclose(v, u2 + 3.0 * (u - u2) + 7.5 * (c - u), rtol=1e-6)
    assert np.array_equal(fm.guidance_combine(c, u, u2, 1.0, 1.0), u2 + (u - u2) + (c - u))
    # the per-frame scale broadcast: packed like the prediction, frame t's tokens carry scale[t]
    sc = fm.broadcast_frame_scales(np.float32([1, 2, 3]), (2, 16, 3, 4, 4))
    assert sc.shape == (2, 12, 64) and np.array_equal(sc[1, 4:8], np.full((4, 64), 2, np.float32))


# --------------------------------------------------------------------------------------------- cond types
EXPECTED_FRAMES = {   # T_lat = 20, causal: which latent frames each cond type conditions
    "t2v": [], "i2v_head": [0], "i2v_tail": [19], "i2v_loop": [0, 19], "v2v_head": list(range(9)),
    "v2v_tail": list(range(11, 20)), "v2v_head_easy": list(range(17)), "v2v_tail_easy": list(range(3, 20)),
}


@pytest.mark.parametrize("cond_type", fm.COND_TYPES)
def test_inference_condition_per_cond_type(cond_type):
    T = 20
    rng = np.random.default_rng(1)
    shape = (2, 16, T, 4, 6)
    refs = [[rng.standard_normal((16, 20, 4, 6)).astype(np.float32),
             rng.standard_normal((16, 20, 4, 6)).astype(np.float32)], None]
    if cond_type == "t2v":
        masks, masked = fm.inference_condition(shape, cond_type, None)
    else:   # sample 1 has no reference: upstream warns and leaves it unconditioned
        with pytest.warns(UserWarning, match="no reference found"):
            masks, masked = fm.inference_condition(shape, cond_type, refs)
    frames = EXPECTED_FRAMES[cond_type]
    assert np.flatnonzero(masks[0, 0, :, 0, 0]).tolist() == frames
    assert np.array_equal(fm.conditioned_frames(cond_type, T), np.isin(np.arange(T), frames))
    assert (masks[0] == masks[0, :, :, :1, :1]).all()               # whole frames
    assert not masks[1].any() and not masked[1].any()               # no reference: unconditioned
    assert not masked[0][:, ~np.isin(np.arange(T), frames)].any()
    r0, r1 = refs[0]
    if cond_type == "i2v_head":
        assert np.array_equal(masked[0, :, 0], r0[:, 0])
    elif cond_type == "i2v_tail":
        assert np.array_equal(masked[0, :, -1], r1[:, -1])           # last frame of the LAST reference
    elif cond_type == "i2v_loop":
        assert np.array_equal(masked[0, :, 0], r0[:, 0]) and np.array_equal(masked[0, :, -1], r1[:, -1])
    elif cond_type.startswith("v2v_head"):
        assert np.array_equal(masked[0, :, :len(frames)], r0[:, :len(frames)])
    elif cond_type.startswith("v2v_tail"):
        assert np.array_equal(masked[0, :, -len(frames):], r0[:, -len(frames):])
    # non-causal (DC-AE): 8 / 16 frames for v2v
    if cond_type.startswith("v2v"):
        assert fm.conditioned_frames(cond_type, T, causal=False).sum() == len(frames) - 1
    # an image (T = 1) is never conditioned
    m1, _ = fm.inference_condition((1, 16, 1, 4, 6), cond_type, None if cond_type == "t2v" else [refs[0]])
    assert not m1.any()


def test_paste_back_only_batch_zero():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 5, 4, 4)).astype(np.float32)
    head, tail = (rng.standard_normal((16, 1, 4, 4)).astype(np.float32) for _ in range(2))
    refs = [[head, tail], [tail, head]]
    y = fm.paste_references(x, "i2v_loop", refs)
    assert np.array_equal(y[0, :, :1], head) and np.array_equal(y[0, :, -1:], tail)
    assert np.array_equal(y[1], x[1]) and np.array_equal(y[0, :, 1:-1], x[0, :, 1:-1])
    assert np.array_equal(fm.paste_references(x, "i2v_tail", refs)[0, :, -1:], head)   # refs[0][0]
    assert np.array_equal(fm.paste_references(x, "v2v_head", refs), x)


def test_normalize_references():
    a = np.zeros((2, 2, 16, 1, 4, 4), np.float32)
    r = fm.normalize_references(a, 2)
    assert len(r) == 2 and len(r[0]) == 2 and r[0][0].shape == (16, 1, 4, 4)
    assert fm.normalize_references(None, 3) == [None] * 3
    r = fm.normalize_references([None, np.zeros((16, 3, 4, 4))], 2)
    assert r[0] is None and r[1][0].shape == (16, 3, 4, 4)


def test_sampler_plan_falls_back_to_t2v_without_references():
    s = fm.FlowMatchingSampler(num_sampling_steps=4)
    with pytest.warns(UserWarning):
        plan = s.plan((1, 16, 5, 4, 4), {"cond_type": "i2v_head"})
    assert plan["cond_type"] == "t2v" and not plan["masks"].any()
    assert plan["timesteps"].shape == (4, 1) and plan["dts"].shape == (4,)
    # t2v: image scales are scalars (no temporal ramp), i2v: per-frame arrays on the non-oscillated steps
    assert all(isinstance(g, float) for _, g in plan["scales"])


# ----------------------------------------------------------------------------------------------- training
def test_training_t_and_target():
    rec = RecordingNoise(NumpyNoise(3))
    shape = (16, 33, 24, 42)
    x0 = np.random.default_rng(4).standard_normal((2, 33 * 12 * 21, 64)).astype(np.float32)
    out = fm.training_sample(x0, shape, rec)
    n_t, x1 = rec.draws
    assert n_t.shape == (2,) and x1.shape == x0.shape        # t first, then x1 like the packed x0
    a = fm.training_shift_alpha(shape)
    assert a == pytest.approx(5.73, abs=0.01)
    s = 1 / (1 + np.exp(-n_t.astype(np.float64)))
    np.testing.assert_allclose(out["t"], a * s / (1 + (a - 1) * s), rtol=1e-6)
    t = out["t"].astype(np.float64)[:, None, None]
    np.testing.assert_allclose(out["x_t"], (1 - t) * x0 + (1 - (1 - 1e-5) * (1 - t)) * x1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["target"], (1 - 1e-5) * x1 - x0, rtol=1e-6, atol=1e-6)
    # the target is the time derivative of x_t: x_t(t + h) - x_t(t) = h v
    h = 1e-3
    d = fm.noised_latent(x0.astype(np.float64), x1, out["t"] + h) - out["x_t"]
    np.testing.assert_allclose(d / h, out["target"], atol=2e-2)
    assert fm.flow_matching_loss(out["target"], out["target"]) == 0.0
    # an image: T = 1 -> alpha = lin(seq) only
    assert fm.training_shift_alpha((16, 1, 24, 42)) == pytest.approx(0.99792, abs=1e-5)


def test_training_t_is_shifted_toward_noise_for_large_latents():
    t_small = fm.sample_training_t(4000, (16, 1, 16, 16), NumpyNoise(0))    # seq 64 -> alpha 0.9
    t_big = fm.sample_training_t(4000, (16, 33, 72, 128), NumpyNoise(0))
    assert t_small.mean() == pytest.approx(0.5, abs=0.03) and t_big.mean() > 0.85


def test_condition_type_sampling_matches_random_choices():
    cfg = dict(t2v=1, i2v_head=5, i2v_loop=1, i2v_tail=1)          # configs/diffusion/train/stage1_i2v.py
    got = fm.sample_condition_types(cfg, 33, 200, random.Random(7))
    r = random.Random(7)
    expect = [r.choices(list(cfg), weights=list(cfg.values()), k=1)[0] for _ in range(200)]
    assert got == expect and got.count("i2v_head") > got.count("t2v")
    assert fm.sample_condition_types(cfg, 1, 3, random.Random(0)) == ["t2v"] * 3   # images draw nothing
    full = dict(t2v=1, v2v_head=1, v2v_tail=1, v2v_head_easy=1, v2v_tail_easy=1)
    assert list(fm.training_condition_options(full, 9)) == ["t2v"]                 # <= 33 frames: no v2v
    assert list(fm.training_condition_options(full, 17)) == ["t2v", "v2v_head", "v2v_tail"]
    assert list(fm.training_condition_options(full, 18)) == list(full)
    assert list(fm.training_condition_options(full, 8, causal=False)) == ["t2v"]
    # numpy generators work as the uniform source too
    assert set(fm.sample_condition_types(cfg, 33, 50, np.random.default_rng(0))) <= set(cfg)


def test_training_condition_frames_and_cond():
    assert np.flatnonzero(fm.training_condition_frames("v2v_head", 33)).tolist() == list(range(9))
    assert np.flatnonzero(fm.training_condition_frames("v2v_tail_easy", 33)).tolist() == list(range(16, 33))
    assert fm.training_condition_frames("v2v_head", 32, causal=False).sum() == 8
    assert fm.training_condition_frames("i2v_loop", 5).tolist() == [True, False, False, False, True]
    lat = np.ones((2, 16, 5, 2, 2), np.float32)
    cond = fm.training_condition(["i2v_head", "t2v"], lat, lat.shape)
    assert cond.shape == (2, 17, 5, 2, 2)
    assert cond[0, :, 0].min() == 1 and not cond[0, :, 1:].any() and not cond[1].any()


def test_dropout_condition_and_null_padding():
    txt = np.ones((3, 4, 2), np.float32)
    null = np.zeros((1, 4, 2), np.float32)
    out = fm.dropout_condition(0.31622777, txt, null, np.array([0.1, 0.5, 0.3]))
    assert out[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    padded = fm.pad_null_txt(np.arange(6, dtype=np.float32).reshape(1, 3, 2), 5)
    assert padded.shape == (1, 5, 2) and padded[0, -1].tolist() == [4.0, 5.0] and padded[0, 3].tolist() == [4, 5]
