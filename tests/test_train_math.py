"""Pure-function tests of the training-time math (``opensora_dual.training``) against upstream v1.2's behaviour
(``RFLOW.training_losses``/``sample_t``, ``LinearWarmupLR``, ``update_ema``, ``MaskGenerator``, ``token_drop``)."""
import numpy as np
import pytest

from opensora_dual.sampling import add_noise_timepoints, timestep_transform
from opensora_dual.training import (V1_2_MASK_RATIOS, FrameMaskGenerator, TrainBatchNoise, TrainingDivergedError,
                                    caption_drop_mask, ema_tracked, ema_update, linear_warmup_lr, noised_latents,
                                    rflow_loss_reference, sample_timesteps, split_batch, training_timesteps)

N = 200_000


def _logit(t):
    u = np.asarray(t, np.float64) / 1000
    return np.log(u / (1 - u))


# ------------------------------------------------------------------------------------------- timesteps
@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (0.5, 2.0), (-1.0, 0.5)])
def test_logit_normal_statistics(loc, scale):
    """t = sigmoid(N(loc, scale)) * 1000: logit(t/1000) has mean loc and std scale; t in (0, 1000)."""
    t = sample_timesteps(N, np.random.default_rng(0), "logit-normal", loc, scale)
    assert t.dtype == np.float32 and t.shape == (N,)
    assert (t >= 0).all() and (t <= 1000).all()
    z = _logit(t[(t > 0) & (t < 1000)])
    se = scale / np.sqrt(N)
    assert abs(z.mean() - loc) < 5 * se
    assert abs(z.std() - scale) < 0.01 * scale
    assert abs(np.median(t) - 1000 / (1 + np.exp(-loc))) < 5.0


def test_logit_normal_default_is_centred_and_peaked():
    """loc 0, scale 1 (v1.2 configs): median 500, more mass in the middle than uniform."""
    t = sample_timesteps(N, np.random.default_rng(1))
    assert abs(np.median(t) - 500) < 3
    mid = np.mean((t > 250) & (t < 750))
    assert mid == pytest.approx(0.7281, abs=0.005)   # P(|N(0,1)| < logit(0.75) = 1.0986) = 0.7281
    assert mid > 0.5                                  # uniform would give 0.5


def test_uniform_and_discrete():
    rng = np.random.default_rng(2)
    t = sample_timesteps(N, rng, "uniform")
    assert t.dtype == np.float32 and (t >= 0).all() and (t < 1000).all()
    assert abs(t.mean() - 500) < 5 * 1000 / np.sqrt(12 * N)
    d = sample_timesteps(N, rng, "uniform", use_discrete_timesteps=True)
    assert np.array_equal(d, np.round(d)) and d.min() == 0 and d.max() == 999
    with pytest.raises(ValueError, match="only uniform"):
        sample_timesteps(4, rng, "logit-normal", use_discrete_timesteps=True)
    with pytest.raises(ValueError, match="sample_method"):
        sample_timesteps(4, rng, "cosine")


def test_transform_is_applied_to_sampled_t_only():
    """Upstream: the timestep transform runs only on sampled t; an explicitly given t is used as is."""
    h, w, nf = np.full(5, 240.0), np.full(5, 426.0), np.full(5, 51.0)
    raw = sample_timesteps(5, np.random.default_rng(3))
    got = training_timesteps(5, np.random.default_rng(3), h, w, nf)
    np.testing.assert_array_equal(got, timestep_transform(raw, h, w, nf, num_timesteps=1000))
    assert (got > raw).all()                          # 240p, 51 frames: ratio ~2.42 > 1 shifts t up
    given = np.array([10.0, 250.0, 500.0, 750.0, 999.0], np.float32)
    rng = np.random.default_rng(4)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(training_timesteps(5, rng, h, w, nf, t=given), given)
    assert rng.bit_generator.state == state          # a given t draws nothing
    off = training_timesteps(5, np.random.default_rng(3), h, w, nf, use_timestep_transform=False)
    np.testing.assert_array_equal(off, raw)


def test_transform_scale_is_passed_through():
    h, w, nf = np.full(3, 240.0), np.full(3, 426.0), np.full(3, 51.0)
    a = training_timesteps(3, np.random.default_rng(5), h, w, nf, transform_scale=2.0)
    raw = sample_timesteps(3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, timestep_transform(raw, h, w, nf, scale=2.0, num_timesteps=1000))
    assert (a > training_timesteps(3, np.random.default_rng(5), h, w, nf)).all()
    with pytest.raises(ValueError, match="height, width and num_frames"):
        training_timesteps(3, np.random.default_rng(5))


# ------------------------------------------------------------------------------------------- caption dropout
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_caption_drop_frequency(p):
    d = caption_drop_mask(N, p, np.random.default_rng(6))
    assert d.dtype == bool
    assert abs(d.mean() - p) < 5 * np.sqrt(p * (1 - p) / N)


def test_caption_drop_extremes():
    rng = np.random.default_rng(7)
    assert not caption_drop_mask(1000, 0.0, rng).any()
    assert caption_drop_mask(1000, 1.0, rng).all()
    with pytest.raises(ValueError):
        caption_drop_mask(3, 1.5, rng)


# ------------------------------------------------------------------------------------------- lr schedule
class _UpstreamLinearWarmupLR:
    """Upstream ``LinearWarmupLR.get_lr`` driven like torch's _LRScheduler: last_epoch starts at 0 after
    construction, the optimizer step uses the current lr, then ``scheduler.step()`` increments last_epoch."""

    def __init__(self, base_lr, warmup_steps, initial_lr=0.0):
        self.base_lr, self.warmup_steps, self.initial_lr, self.last_epoch = base_lr, warmup_steps, initial_lr, 0

    def lr(self):
        if self.last_epoch < self.warmup_steps:
            return self.initial_lr + (self.last_epoch + 1) / (self.warmup_steps + 1) * self.base_lr
        return self.base_lr

    def step(self):
        self.last_epoch += 1


@pytest.mark.parametrize("warmup", [0, 1, 3, 1000])
def test_linear_warmup_lr_matches_upstream(warmup):
    up = _UpstreamLinearWarmupLR(1e-4, warmup)
    for step in range(warmup + 5):
        assert linear_warmup_lr(step, 1e-4, warmup) == up.lr()
        up.step()


def test_linear_warmup_lr_values():
    assert [linear_warmup_lr(s, 1.0, 3) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert linear_warmup_lr(0, 1e-4, 0) == 1e-4
    assert linear_warmup_lr(0, 1e-4, 1000) == pytest.approx(1e-4 / 1001)
    assert linear_warmup_lr(999, 1e-4, 1000) == pytest.approx(1e-4 * 1000 / 1001)
    assert linear_warmup_lr(1000, 1e-4, 1000) == 1e-4


def test_linear_warmup_lr_against_a_torch_scheduler():
    torch = pytest.importorskip("torch")
    from torch.optim.lr_scheduler import _LRScheduler

    class LinearWarmupLR(_LRScheduler):  # upstream's class, verbatim logic
        def __init__(self, optimizer, initial_lr=0, warmup_steps=0, last_epoch=-1):
            self.initial_lr, self.warmup_steps = initial_lr, warmup_steps
            super().__init__(optimizer, last_epoch=last_epoch)

        def get_lr(self):
            if self.last_epoch < self.warmup_steps:
                return [self.initial_lr + (self.last_epoch + 1) / (self.warmup_steps + 1) * lr for lr in self.base_lrs]
            return self.base_lrs

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = LinearWarmupLR(opt, warmup_steps=4)
    for step in range(8):
        assert opt.param_groups[0]["lr"] == pytest.approx(linear_warmup_lr(step, 1e-4, 4), rel=1e-12)
        opt.step()
        sched.step()


# ------------------------------------------------------------------------------------------- EMA
def test_ema_update_formula():
    ema, p = np.array([1.0, 2.0], np.float32), np.array([3.0, -2.0], np.float32)
    np.testing.assert_allclose(ema_update(ema, p, 0.99), 0.99 * ema + 0.01 * p, rtol=1e-6)
    np.testing.assert_array_equal(ema_update(ema, p, 0.0), p)          # decay 0: upstream's initial sync
    np.testing.assert_array_equal(ema_update(ema, p, 1.0), ema)
    assert ema_update(ema, p, 0.99).dtype == np.float32


def test_ema_tracks_trainable_parameters_except_pos_embed():
    assert ema_tracked("spatial_blocks.0.attn.qkv.weight", True)
    assert not ema_tracked("pos_embed", True)
    assert ema_tracked("x_embedder.pos_embed", True)   # upstream compares the full name only
    assert not ema_tracked("rope.freqs", False)
    assert not ema_tracked("y_embedder.y_proj.fc1.weight", False)   # freeze_y_embedder


# ------------------------------------------------------------------------------------------- frame masks
def test_frame_mask_generator_v1_2_ratios():
    gen = FrameMaskGenerator(V1_2_MASK_RATIOS)
    assert gen.mask_ratios["identity"] == pytest.approx(0.80)
    masks = gen.get_masks(20_000, 15, np.random.default_rng(8))
    assert masks.shape == (20_000, 15) and masks.dtype == bool
    assert masks.any(axis=1).all()                                    # always a generated frame
    assert np.mean(masks.all(axis=1)) == pytest.approx(0.80, abs=0.02)
    assert np.mean(~masks[:, 0] & masks[:, 1:].all(axis=1)) > 0.05    # image_head (+ a few others)


@pytest.mark.parametrize("name,check", [
    ("image_head", lambda m: not m[0] and m[1:].all()),
    ("image_tail", lambda m: not m[-1] and m[:-1].all()),
    ("image_head_tail", lambda m: not m[0] and not m[-1] and m[1:-1].all()),
    ("quarter_head", lambda m: 1 <= (~m).sum() <= 3 and not m[0] and m[-1]),
    ("intepolate", lambda m: (~m).sum() in (6, 7)),
    ("identity", lambda m: m.all()),
])
def test_frame_mask_types(name, check):
    gen = FrameMaskGenerator({name: 1.0})
    rng = np.random.default_rng(9)
    for _ in range(50):
        assert check(gen.get_mask(13, rng)), name


def test_frame_masks_edge_cases():
    rng = np.random.default_rng(10)
    assert FrameMaskGenerator({"image_head": 1.0}).get_mask(1, rng).all()          # images: nothing to condition
    assert FrameMaskGenerator({"quarter_head": 1.0}).get_mask(3, rng).all()        # upstream would raise here
    assert FrameMaskGenerator({"image_head_tail": 1.0}).get_mask(2, rng).tolist() == [False, True]
    with pytest.raises(ValueError, match="unknown"):
        FrameMaskGenerator({"interpolate": 0.1})
    with pytest.raises(ValueError, match="sum to 1"):
        FrameMaskGenerator({"random": 0.7, "image_head": 0.7})


# ------------------------------------------------------------------------------------------- one step's randoms
def test_train_batch_noise_draw_is_deterministic_and_splits():
    kw = dict(height=np.full(4, 240.0), width=np.full(4, 426.0), num_frames=np.full(4, 51.0),
              mask_ratios={"image_head": 0.5})
    a = TrainBatchNoise.draw(np.random.default_rng(11), (4, 4, 3, 4, 6), **kw)
    b = TrainBatchNoise.draw(np.random.default_rng(11), (4, 4, 3, 4, 6), **kw)
    for f in ("t", "noise", "drop_ids", "x_mask"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.noise.shape == (4, 4, 3, 4, 6) and a.noise.dtype == np.float32 and a.x_mask.shape == (4, 3)
    np.testing.assert_array_equal(a.timepoints(), add_noise_timepoints(a.t))
    halves = a.split(2)
    np.testing.assert_array_equal(np.concatenate([h.noise for h in halves]), a.noise)
    np.testing.assert_array_equal(np.concatenate([h.x_mask for h in halves]), a.x_mask)
    with pytest.raises(ValueError, match="cannot be split"):
        a.split(3)
    with pytest.raises(ValueError, match="at least one generated frame"):
        TrainBatchNoise(a.t, a.noise, a.drop_ids, np.zeros((4, 3), bool))
    given = TrainBatchNoise.draw(np.random.default_rng(11), (4, 4, 3, 4, 6), t=[1.0, 2.0, 3.0, 4.0], **kw)
    np.testing.assert_array_equal(given.t, np.float32([1, 2, 3, 4]))   # not transformed


def test_split_batch_keeps_shared_entries_whole():
    batch = {"x0": np.zeros((4, 2, 1, 1, 1)), "fps": np.array([24.0]), "height": np.arange(4.0), "mask": None}
    parts = split_batch(batch, 2)
    assert [p["height"].tolist() for p in parts] == [[0.0, 1.0], [2.0, 3.0]]
    assert all(p["fps"].tolist() == [24.0] and p["mask"] is None for p in parts)


# ------------------------------------------------------------------------------------------- loss reference
def test_noised_latents():
    rng = np.random.default_rng(12)
    x0, noise = rng.standard_normal((2, 3, 4, 2, 2)).astype(np.float32), rng.standard_normal((2, 3, 4, 2, 2))
    xt = noised_latents(x0, noise, np.float32([0.0, 1000.0]))
    np.testing.assert_array_equal(xt[0], x0[0])
    np.testing.assert_allclose(xt[1], noise[1].astype(np.float32), atol=1e-7)
    mid = noised_latents(x0, noise, np.float32([250.0, 250.0]), np.array([[0, 1, 1, 0], [1, 1, 1, 1]], bool))
    np.testing.assert_array_equal(mid[0, :, 0], x0[0, :, 0])         # conditioning frames are x0 exactly
    np.testing.assert_allclose(mid[0, :, 1], 0.75 * x0[0, :, 1] + 0.25 * noise[0, :, 1], rtol=1e-6)


def test_rflow_loss_reference_semantics():
    rng = np.random.default_rng(13)
    x0, noise = rng.standard_normal((2, 4, 3, 2, 2)), rng.standard_normal((2, 4, 3, 2, 2))
    out = rng.standard_normal((2, 8, 3, 2, 2))
    err = (out[:, :4] - (x0 - noise)) ** 2
    assert rflow_loss_reference(out, x0, noise) == pytest.approx(err.mean())
    assert rflow_loss_reference(out, x0, noise, np.ones((2, 3), bool)) == pytest.approx(err.mean())
    m = np.array([[0, 1, 1], [1, 0, 0]], bool)
    want = np.mean([err[0, :, 1:].sum() / (2 * 16), err[1, :, :1].sum() / (1 * 16)])
    assert rflow_loss_reference(out, x0, noise, m) == pytest.approx(want)
    out2 = out.copy()
    out2[0, :, 0] += 100.0                      # a conditioning frame's error does not count
    out2[:, 4:] += 100.0                        # nor do the sigma channels
    assert rflow_loss_reference(out2, x0, noise, m) == pytest.approx(want)


def test_training_diverged_error_names_the_step():
    e = TrainingDivergedError(12, float("nan"), 1, 2)
    assert "step 12" in str(e) and "nan" in str(e) and "micro-batch 2 of 2" in str(e) and e.step == 12


def test_iddpm_noise_draws_uniform_integer_timesteps_and_objective_settings():
    """IDDPM randoms: t ~ uniform integers in [0, 1000) (upstream's UniformSampler), then noise, caption drop and
    frame masks from the same generator in that order; the objective's arguments are checked once."""
    from opensora_dual.training import integer_timesteps, iddpm_noise, objective_settings

    n = iddpm_noise(np.random.default_rng(0), (4000, 1, 1, 1, 1), caption_drop_prob=0.0)
    t = integer_timesteps(n)
    assert t.min() >= 0 and t.max() <= 999 and np.array_equal(t, n.t) and len(np.unique(t)) > 900
    assert abs(t.mean() - 499.5) < 15 and (t == 0).any()
    a = iddpm_noise(np.random.default_rng(1), (3, 4, 2, 2, 2), mask_ratios={"image_head": 1.0})
    rng = np.random.default_rng(1)
    assert np.array_equal(a.t, rng.integers(0, 1000, size=3).astype(np.float32))
    assert np.array_equal(a.noise, rng.standard_normal((3, 4, 2, 2, 2), dtype=np.float32))
    assert a.x_mask.tolist() == [[False, True]] * 3
    with pytest.raises(ValueError, match="integer"):
        integer_timesteps(TrainBatchNoise(t=[0.5], noise=np.zeros((1, 1, 1, 1, 1)), drop_ids=[False]))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        iddpm_noise(np.random.default_rng(0), (1, 1, 1, 1, 1), t=[1000])
    assert objective_settings("iddpm") == {"timestep_respacing": ""}
    assert objective_settings("rflow") == {}
    for bad, msg in ((("ddim", None), "objective must be"), (("iddpm", {"cfg_scale": 4}), "unknown IDDPM"),
                     (("iddpm", {"timestep_respacing": "50"}), "unrespaced"), (("rflow", {"version": "v1.0"}),
                                                                                "takes no objective_kwargs")):
        with pytest.raises(ValueError, match=msg):
            objective_settings(*bad)
