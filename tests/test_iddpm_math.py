"""Pure-function tests of the Open-Sora 1.0 / 1.1 schedules (``opensora_dual.sampling.iddpm``,
``opensora_dual.sampling.dpm_solver``) against hand-computed values and upstream's behaviour as
``shared/opensora_facts.md`` section 5 describes it."""
import math

import numpy as np
import pytest

from opensora_dual.sampling.dpm_solver import (DPMSolverSampler, DPMSolverSchedule, NoiseScheduleVP, interpolate,
                                               linspace_f32, multistep_orders)
from opensora_dual.sampling.iddpm import (DiffusionSchedule, IDDPMMaskSchedule, IDDPMSampler, cfg_channels,
                                          discretized_gaussian_log_likelihood, get_named_beta_schedule,
                                          hybrid_loss_reference, iddpm_cfg_combine, mean_flat, noised_latent,
                                          space_timesteps)


# --------------------------------------------------------------------------------------------- IDDPM schedule
def test_space_timesteps_examples():
    assert sorted(space_timesteps(1000, "5")) == [0, 250, 500, 749, 999]
    assert sorted(space_timesteps(300, [10, 15, 20]))[:3] == [0, 11, 22]
    assert len(space_timesteps(1000, "100")) == 100
    assert sorted(space_timesteps(1000, "ddim4")) == [0, 250, 500, 750]
    with pytest.raises(ValueError):
        space_timesteps(10, "11")


def test_linear_betas_scaled():
    b = get_named_beta_schedule("linear", 1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000
    b2 = get_named_beta_schedule("linear", 500)           # scaled by 1000/steps
    assert b2[0] == pytest.approx(2e-4) and b2[-1] == pytest.approx(0.04)


def test_respaced_betas_by_hand():
    s = DiffusionSchedule(1000, "5", schedule_dtype="float64")
    betas = np.linspace(1e-4, 0.02, 1000)
    ac = np.cumprod(1 - betas)
    keep = [0, 250, 500, 749, 999]
    want = [1 - ac[0]] + [1 - ac[k] / ac[j] for j, k in zip(keep, keep[1:])]
    np.testing.assert_allclose(s.betas, want, rtol=1e-12)
    assert list(s.timestep_map) == keep
    assert s.betas[0] == pytest.approx(1e-4, rel=1e-12)
    # the respaced cumulative products are the original ones at the kept steps
    np.testing.assert_allclose(s.alphas_cumprod, ac[keep], rtol=1e-12)
    # model timesteps of a 5-step run: the ORIGINAL ones, descending
    run = IDDPMSampler(num_sampling_steps=5, version="v1.0").run_schedule(2)
    assert run["timesteps"][:, 0].tolist() == [999, 749, 500, 250, 0]
    assert run["indices"][:, 0].tolist() == [4, 3, 2, 1, 0]
    assert run["nonzero"].tolist() == [1, 1, 1, 1, 0]


def test_posterior_log_variance_clipped_index0_takes_index1():
    s = DiffusionSchedule(1000, "5", schedule_dtype="float64")
    pv = s.betas * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod)
    assert pv[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1] == math.log(pv[1])
    np.testing.assert_allclose(s.posterior_log_variance_clipped[2:], np.log(pv[2:]), rtol=1e-12)


def test_float32_schedule_differs_from_float64():
    """v1.1's float32 tables vs v1.0's float64: the same maths, visibly different numbers (the facts' ~1.7e-4
    on outputs comes from here: posterior_log_variance_clipped[0..1] moves by ~1.8e-5 relative... and the
    sqrt(1/ac - 1) of the first step by 2.5e-4)."""
    a = DiffusionSchedule(1000, "5", schedule_dtype="float64")
    b = DiffusionSchedule(1000, "5", schedule_dtype="float32")
    assert b.betas.dtype == np.float32 and a.betas.dtype == np.float64
    for name in a.tables:
        np.testing.assert_allclose(b.tables[name], a.tables[name], rtol=2e-3, atol=1e-6)
    rel = abs(b.posterior_log_variance_clipped[0] / a.posterior_log_variance_clipped[0] - 1)
    assert 1e-6 < rel < 1e-4, rel
    # the float64 table cast to float32 is not the float32 table (the difference is real, not a cast)
    assert (a.table32("posterior_log_variance_clipped") != b.table32("posterior_log_variance_clipped")).any()
    assert IDDPMSampler(num_sampling_steps=5).schedule_dtype == "float32"
    assert IDDPMSampler(num_sampling_steps=5, version="v1.0").schedule_dtype == "float64"
    assert IDDPMSampler(num_sampling_steps=5, schedule_dtype="float64").schedule_dtype == "float64"


def test_learned_range_variance_unclamped():
    """frac = (v + 1)/2, no clamp: v = 3 extrapolates beyond log(beta_t)."""
    s = DiffusionSchedule(1000, "5", schedule_dtype="float64")
    i = 2
    lo, hi = s.posterior_log_variance_clipped[i], math.log(s.betas[i])
    for v, want in ((-1.0, lo), (1.0, hi), (0.0, 0.5 * (lo + hi)), (3.0, 2 * hi - lo)):
        frac = (v + 1) / 2
        assert frac * hi + (1 - frac) * lo == pytest.approx(want)
    # the loss reference uses the same rule: variance channel 3 -> log-variance 2 hi - lo
    x0 = np.zeros((1, 1, 1, 1, 1))
    out = np.concatenate([np.zeros_like(x0), np.full_like(x0, 3.0)], 1)
    r = hybrid_loss_reference(s, out, x0, x0, x0, np.array([i]))
    kl = 0.5 * (-1 + (2 * hi - lo) - lo + math.exp(lo - (2 * hi - lo)))   # means equal (all zero)
    assert r["vb"][0] == pytest.approx(kl / math.log(2))


def test_cfg_channels_and_combination():
    assert cfg_channels(None, 8) == 4 and cfg_channels(3, 8) == 3
    assert IDDPMSampler(num_sampling_steps=5, version="v1.0", cfg_channel=None).cfg_channel == 3
    cond = np.arange(8, dtype=np.float64).reshape(1, 8) + 10
    null = np.arange(8, dtype=np.float64).reshape(1, 8)
    out = iddpm_cfg_combine(cond, null, 7.0, 3, np.concatenate)
    assert out[0, :3].tolist() == [70.0, 71.0, 72.0]           # null + 7 (cond - null)
    assert out[0, 3:].tolist() == cond[0, 3:].tolist()          # the cond half's own


def test_mask_schedule_v1_1():
    m = np.array([[0.0, 0.6, 1.0, 0.5]], np.float32)
    ms_ = IDDPMMaskSchedule(m, 5)
    assert ms_.mask_t.tolist() == [[0, 3, 5, 2]]                 # int(m * 5), 0.6 * 5 = 3 in float32
    renoise, x_mask, reset = ms_.step(3)
    assert renoise.tolist() == [[False, True, False, False]]
    assert x_mask.tolist() == [[False, False, True, False]]     # mask_t > t: False on the re-noise step
    assert reset.tolist() == [[True, False, False, True]]
    renoise, x_mask, reset = ms_.step(0)
    assert renoise.tolist() == [[True, False, False, False]]   # m = 0 frames are re-noised at t = 0
    assert not reset.any()
    with pytest.raises(ValueError):
        IDDPMSampler(num_sampling_steps=5, version="v1.0").run_schedule(1, mask=m)


def test_draw_shape_is_the_doubled_batch():
    assert IDDPMSampler.draw_shape((2, 4, 3, 8, 8)) == (4, 4, 3, 8, 8)


# --------------------------------------------------------------------------------------------- loss reference
def test_mean_flat_masked():
    x = np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3, 1, 1)
    m = np.array([[True, False, True], [False, False, True]])
    got = mean_flat(x, m)
    assert got[0] == pytest.approx((0 + 2 + 3 + 5) / 4)
    assert got[1] == pytest.approx((8 + 11) / 2)
    assert mean_flat(x)[0] == pytest.approx(2.5)


def test_noised_latent_unmasked_frames_get_t0_noise():
    s = DiffusionSchedule(1000, None, schedule_dtype="float64")
    x0, n = np.ones((1, 1, 2, 1, 1)), np.full((1, 1, 2, 1, 1), 2.0)
    xt = noised_latent(s, x0, n, np.array([500]), np.array([[True, False]]))
    assert xt[0, 0, 0, 0, 0] == pytest.approx(s.sqrt_alphas_cumprod[500] + 2 * s.sqrt_one_minus_alphas_cumprod[500])
    assert xt[0, 0, 1, 0, 0] == pytest.approx(math.sqrt(1 - 1e-4) + 2 * math.sqrt(1e-4), rel=1e-6)


def test_loss_reference_t0_is_the_decoder_nll_by_hand():
    """t = 0: vb = -log(CDF(x + 1/255) - CDF(x - 1/255)) in bits under N(mean, sigma) with upstream's tanh
    CDF approximation; computed here by hand for one element."""
    s = DiffusionSchedule(1000, None, schedule_dtype="float64")
    x0, noise, eps, v = 0.3, 0.2, 0.1, 0.0
    xt = math.sqrt(s.alphas_cumprod[0]) * x0 + math.sqrt(1 - s.alphas_cumprod[0]) * noise
    pred_x0 = math.sqrt(1 / s.alphas_cumprod[0]) * xt - math.sqrt(1 / s.alphas_cumprod[0] - 1) * eps
    mean = s.posterior_mean_coef1[0] * pred_x0 + s.posterior_mean_coef2[0] * xt
    log_var = 0.5 * math.log(s.betas[0]) + 0.5 * s.posterior_log_variance_clipped[0]
    sd = math.exp(0.5 * log_var)

    def cdf(u):
        return 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))

    nll = -math.log(cdf((x0 - mean + 1 / 255) / sd) - cdf((x0 - mean - 1 / 255) / sd)) / math.log(2)
    a = lambda q: np.full((1, 1, 1, 1, 1), q)   # noqa: E731
    r = hybrid_loss_reference(s, np.concatenate([a(eps), a(v)], 1), a(x0), a(xt), a(noise), np.array([0]))
    assert r["vb"][0] == pytest.approx(nll, rel=1e-9)
    assert r["mse"][0] == pytest.approx((noise - eps) ** 2)
    assert r["loss"][0] == pytest.approx(r["mse"][0] + r["vb"][0])
    # the edge bins: x < -0.999 uses log CDF(x + 1/255), x > 0.999 log(1 - CDF(x - 1/255))
    lp = discretized_gaussian_log_likelihood(np.array([-2.0, 2.0]), np.zeros(2), np.zeros(2))
    assert lp[0] == pytest.approx(math.log(cdf(-2 + 1 / 255)))
    assert lp[1] == pytest.approx(math.log(1 - cdf(2 - 1 / 255)))


def test_loss_reference_t_positive_is_the_kl():
    s = DiffusionSchedule(1000, None, schedule_dtype="float64")
    t = 400
    x0, noise, eps, v = 0.5, -0.4, -0.1, 0.2
    sa, s1 = math.sqrt(s.alphas_cumprod[t]), math.sqrt(1 - s.alphas_cumprod[t])
    xt = sa * x0 + s1 * noise
    true_mean = s.posterior_mean_coef1[t] * x0 + s.posterior_mean_coef2[t] * xt
    lo = s.posterior_log_variance_clipped[t]
    pred = xt / sa - math.sqrt(1 / s.alphas_cumprod[t] - 1) * eps
    mean = s.posterior_mean_coef1[t] * pred + s.posterior_mean_coef2[t] * xt
    lv = (v + 1) / 2 * math.log(s.betas[t]) + (1 - (v + 1) / 2) * lo
    kl = 0.5 * (-1 + lv - lo + math.exp(lo - lv) + (true_mean - mean) ** 2 * math.exp(-lv)) / math.log(2)
    a = lambda q: np.full((1, 1, 1, 1, 1), q)   # noqa: E731
    r = hybrid_loss_reference(s, np.concatenate([a(eps), a(v)], 1), a(x0), a(xt), a(noise), np.array([t]))
    assert r["vb"][0] == pytest.approx(kl, rel=1e-9)


# --------------------------------------------------------------------------------------------- DPM-Solver
def test_dpm_solver_times_orders_model_times():
    s = DPMSolverSchedule(5)
    np.testing.assert_array_equal(s.times, np.float32([1.0, 0.8002, 0.6004, 0.4006, 0.2008, 0.001]))
    assert s.orders == [1, 2, 2, 2, 1]
    np.testing.assert_allclose(s.model_times, [999.0, 799.2, 599.4, 399.6, 199.8], rtol=1e-6)
    assert s.model_times.dtype == np.float32
    assert multistep_orders(12) == [1] + [2] * 11          # >= 10 steps: no lower order at the end
    assert multistep_orders(3) == [1, 2, 1]
    with pytest.raises(ValueError):
        DPMSolverSampler(num_sampling_steps=5).run_schedule(1, mask=np.ones((1, 3)))


def test_dpm_solver_schedule_interpolation():
    ns = NoiseScheduleVP()
    assert ns.total_N == 1000                               # no clip for the linear schedule (lambda > -5.1)
    betas = np.linspace(1e-4, 0.02, 1000)
    la = 0.5 * np.cumsum(np.log(1 - betas))
    np.testing.assert_allclose(ns.log_alpha_array, la, rtol=1e-6)
    np.testing.assert_array_equal(ns.t_array[[0, 499, 999]], np.float32([0.001, 0.5, 1.0]))
    # at a knot: the knot's value; half-way: the mean of its neighbours
    assert ns.marginal_log_mean_coeff(np.float32([1.0]))[0] == pytest.approx(la[-1], rel=1e-6)
    mid = (ns.t_array[10] + ns.t_array[11]) / 2
    assert ns.marginal_log_mean_coeff(np.float32([mid]))[0] == pytest.approx((la[10] + la[11]) / 2, rel=1e-5)
    # outside the knots the outermost segment extends
    assert interpolate(np.float32([3.0]), np.float32([0, 1, 2]), np.float32([0, 10, 30]))[0] == 50.0
    assert interpolate(np.float32([-1.0]), np.float32([0, 1, 2]), np.float32([0, 10, 30]))[0] == -10.0
    # lambda, alpha, sigma consistent: alpha^2 + sigma^2 = 1
    t = np.float32([0.3])
    assert ns.marginal_alpha(t)[0] ** 2 + ns.marginal_std(t)[0] ** 2 == pytest.approx(1.0, rel=1e-6)
    assert ns.marginal_lambda(t)[0] == pytest.approx(math.log(ns.marginal_alpha(t)[0] / ns.marginal_std(t)[0]),
                                                     rel=1e-5)


def test_dpm_solver_update_coefficients_by_hand():
    """Step 1 (order 2) of 5: cx = sigma_2/sigma_1, cm = alpha_2 expm1(-h), cd = cm/2, inv_r0 = h/h_0."""
    s = DPMSolverSchedule(5)
    ns = s.ns
    lam = [float(ns.marginal_lambda(np.float32([t]))[0]) for t in s.times[:3]]
    sig = [float(ns.marginal_std(np.float32([t]))[0]) for t in s.times[:3]]
    alpha2 = float(ns.marginal_alpha(np.float32([s.times[2]]))[0])
    h, h0 = lam[2] - lam[1], lam[1] - lam[0]
    assert s.cx[1] == pytest.approx(sig[2] / sig[1], rel=1e-6)
    assert s.cm[1] == pytest.approx(alpha2 * math.expm1(-h), rel=1e-5)
    assert s.cd[1] == pytest.approx(0.5 * alpha2 * math.expm1(-h), rel=1e-5)
    assert s.inv_r0[1] == pytest.approx(h / h0, rel=1e-5)
    assert s.cd[0] == s.cd[4] == 0.0                         # order-1 steps


def test_linspace_f32_matches_its_formula():
    a = linspace_f32(1.0, 0.001, 6)
    step = np.float32(np.float32(0.001) - np.float32(1.0)) / np.float32(5)
    assert a[1] == np.float32(1.0) + step and a[4] == np.float32(0.001) - step
    assert linspace_f32(0.0, 1.0, 1001)[-1] == 1.0
