"""DPM-Solver (Open-Sora 1.0 / 1.1 ``dpm-solver``, ``opensora/schedulers/dpms/{__init__,dpm_solver}.py``): the
schedule and the per-step solver coefficients once, in numpy float32, shared by both ``DPM_SOLVER`` twins.

What upstream runs (``DPMS(...).sample(z, steps=N, order=2, skip_type="time_uniform", method="multistep")``):
DPM-Solver++ (data prediction x0 = (x - sigma_t eps) / alpha_t), multistep order 2 with lower orders at the
first and (N < 10) last steps, on the discrete VP schedule of the linear betas: log alpha_n = 0.5 cumsum
log(1 - beta) (float64, the lambda > -5.1 clip, then float32) at knots t_n = (n + 1)/1000, piecewise-linearly
interpolated; times linspace(1, 0.001, N + 1) in float32; the model receives (t - 0.001) * 1000.

Step i (i = 0..N-1) of the twins, from time t_i to t_{i+1}, with the model evaluated at (z_i, t_i):
    m_i = (z_i - sigma_i eps_i) / alpha_i
    order 1: z_{i+1} = cx_i z_i - cm_i m_i
    order 2: z_{i+1} = cx_i z_i - cm_i m_i - cd_i (inv_r0_i (m_i - m_{i-1}))
which is upstream's order of evaluations (it evaluates m_i right after computing z_i; the last latent is not
evaluated) and its expression order, coefficient by coefficient.
"""
from typing import Dict, List

import numpy as np

from opensora_dual.sampling.base import SamplerBase
from opensora_dual.sampling.iddpm import get_named_beta_schedule

F32 = np.float32


def linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace`` in float32 by its scalar formula (the CUDA kernel's, and the CPU kernel's scalar path):
    step = (end - start)/(steps - 1) in float32; the first half start + step*i, the second end - step*(steps-1-i).
    Torch's vectorised CPU path builds 8/16-wide runs from one base and can differ by one ulp at some entries
    (machine dependent); this is the formula upstream's GPU runs use."""
    f = F32
    idx = np.arange(steps)
    step = f((f(end) - f(start)) / f(steps - 1)) if steps > 1 else f(0)
    lo = f(start) + step * idx.astype(f)
    hi = f(end) - step * (steps - 1 - idx).astype(f)
    return np.where(idx < steps // 2, lo, hi).astype(f)


def interpolate(x, xp, yp):
    """Upstream's ``interpolate_fn`` for increasing knots ``xp``: linear through the segment holding x (the
    outermost segments extend beyond the ends). A knot-valued x uses the segment ending at that knot (x sorts
    before equal knots), as upstream's sort does. float32."""
    x, xp, yp = np.asarray(x, F32), np.asarray(xp, F32), np.asarray(yp, F32)
    K = xp.shape[0]
    k = np.clip(np.searchsorted(xp, x, side="left"), 1, K - 1)
    x0, x1, y0, y1 = xp[k - 1], xp[k], yp[k - 1], yp[k]
    return (y0 + (x - x0) * (y1 - y0) / (x1 - x0)).astype(F32)


class NoiseScheduleVP:
    """The discrete VP schedule of ``DPMS``: ``log_alpha_array`` and ``t_array`` (float32 knots)."""

    def __init__(self, noise_schedule="linear", diffusion_steps=1000, clipped_lambda=-5.1):
        betas = get_named_beta_schedule(noise_schedule, diffusion_steps).astype(np.float64)
        log_alphas = 0.5 * np.cumsum(np.log(1 - betas))
        log_sigmas = 0.5 * np.log(1.0 - np.exp(2.0 * log_alphas))
        lambs = log_alphas - log_sigmas
        idx = int(np.searchsorted(lambs[::-1], clipped_lambda, side="left"))   # numerical_clip_alpha
        if idx > 0:
            log_alphas = log_alphas[:-idx]
        self.log_alpha_array = log_alphas.astype(F32)
        self.total_N = len(self.log_alpha_array)
        self.t_array = linspace_f32(0.0, 1.0, self.total_N + 1)[1:]
        self.T = 1.0

    def marginal_log_mean_coeff(self, t):
        return interpolate(t, self.t_array, self.log_alpha_array)

    def marginal_alpha(self, t):
        return np.exp(self.marginal_log_mean_coeff(t)).astype(F32)

    def marginal_std(self, t):
        return np.sqrt(F32(1.0) - np.exp(F32(2.0) * self.marginal_log_mean_coeff(t))).astype(F32)

    def marginal_lambda(self, t):
        lmc = self.marginal_log_mean_coeff(t)
        return (lmc - F32(0.5) * np.log(F32(1.0) - np.exp(F32(2.0) * lmc))).astype(F32)

    def model_time(self, t):
        """``get_model_input_time``: (t - 1/N) * 1000 in float32."""
        return ((np.asarray(t, F32) - F32(1.0 / self.total_N)) * F32(1000.0)).astype(F32)


def multistep_orders(steps: int, order: int = 2, lower_order_final: bool = True) -> List[int]:
    """The solver order of each of the ``steps`` updates: the first ``order - 1`` warm up with orders 1..,
    then ``order`` (min(order, steps + 1 - step) at the end when steps < 10)."""
    if steps < order:
        raise ValueError(f"multistep DPM-Solver needs steps >= order ({steps} < {order})")
    orders = list(range(1, order))
    for step in range(order, steps + 1):
        orders.append(min(order, steps + 1 - step) if lower_order_final and steps < 10 else order)
    return orders


class DPMSolverSchedule:
    """Everything one run needs, float32 arrays over the N steps: times t_i (N + 1), model times, alpha_i and
    sigma_i of the evaluation points, the update coefficients cx, cm, cd, inv_r0 and the orders."""

    def __init__(self, num_sampling_steps: int, order: int = 2, noise_schedule="linear", diffusion_steps=1000):
        ns = self.ns = NoiseScheduleVP(noise_schedule, diffusion_steps)
        N = self.steps = int(num_sampling_steps)
        t_0 = 1.0 / ns.total_N
        self.times = linspace_f32(ns.T, t_0, N + 1)
        self.orders = multistep_orders(N, order)
        self.model_times = ns.model_time(self.times[:N])
        self.alpha = ns.marginal_alpha(self.times[:N])
        self.sigma = ns.marginal_std(self.times[:N])
        lam = ns.marginal_lambda(self.times)
        sig = ns.marginal_std(self.times)
        alpha_t = np.exp(ns.marginal_log_mean_coeff(self.times)).astype(F32)
        cx, cm, cd, inv_r0 = (np.zeros(N, F32) for _ in range(4))
        for i in range(N):
            h = F32(lam[i + 1] - lam[i])
            phi_1 = F32(np.expm1(-h))
            cx[i] = F32(sig[i + 1] / sig[i])
            cm[i] = F32(alpha_t[i + 1] * phi_1)
            if self.orders[i] == 2:
                h_0 = F32(lam[i] - lam[i - 1])
                r0 = F32(h_0 / h)
                inv_r0[i] = F32(F32(1.0) / r0)
                cd[i] = F32(F32(0.5) * cm[i])
        self.cx, self.cm, self.cd, self.inv_r0 = cx, cm, cd, inv_r0

    def coefficients(self, i: int) -> Dict[str, float]:
        return {"alpha": self.alpha[i], "sigma": self.sigma[i], "cx": self.cx[i], "cm": self.cm[i],
                "cd": self.cd[i], "inv_r0": self.inv_r0[i], "order": self.orders[i]}


class DPMSolverSampler(SamplerBase):
    """What both ``DPM_SOLVER`` twins share: upstream's constructor (num_sampling_steps, cfg_scale) and the
    schedule. No conditioning mask (upstream asserts ``mask is None``); no random draws after the start."""

    def __init__(self, num_sampling_steps=None, cfg_scale=4.0, **kwargs):
        if num_sampling_steps is None:
            raise ValueError("DPM_SOLVER needs num_sampling_steps")
        self.num_sampling_steps = int(num_sampling_steps)
        self.cfg_scale = cfg_scale
        self.schedule = DPMSolverSchedule(self.num_sampling_steps, order=2)

    def run_schedule(self, batch: int, mask=None):
        if mask is not None:
            raise ValueError("mask is not supported in dpm-solver (upstream asserts mask is None)")
        s = self.schedule
        return {"timesteps": np.repeat(s.model_times[:, None], batch, 1).astype(F32),
                "times": s.times, "coef": [s.coefficients(i) for i in range(s.steps)]}

