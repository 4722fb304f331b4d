"""IDDPM (Open-Sora 1.0 / 1.1, ``opensora/schedulers/iddpm/{__init__,gaussian_diffusion,respace,diffusion_utils}.py``):
the schedule math once, in numpy, shared by both ``IDDPM`` twins.

Conventions (facts section 5): 1000 diffusion steps, linear betas 1e-4 -> 0.02 scaled by 1000/steps, the model
predicts eps (first C output channels) and a LEARNED_RANGE variance interpolation v (last C channels),
sampling respaced to ``num_sampling_steps`` by ``space_timesteps`` with ancestral ``p_sample``; the model receives
the ORIGINAL timestep of each respaced index.

Precision switch (``schedule_dtype``): v1.0 keeps every coefficient in float64 numpy and casts the gathered
value to float32 (``_extract_into_tensor``); v1.1 stores the respaced betas as a float32 tensor, so every
coefficient derives from float32 arithmetic. The tables here are that arithmetic; the twins gather them by index
as float32 and do the per-element maths in float32, in upstream's order.
"""
import math
from typing import Dict, Optional, Sequence

import numpy as np

from opensora_dual.sampling.base import SamplerBase

F32, F64 = np.float32, np.float64
VERSIONS = ("v1.0", "v1.1")
SCHEDULE_DTYPE = {"v1.0": "float64", "v1.1": "float32"}
V1_0_CFG_CHANNEL = 3     # v1.0's forward_with_cfg hard-codes model_out[:, :3]


# --------------------------------------------------------------------------------------------- betas, respacing
def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """float64 betas. "linear": Ho et al.'s 1e-4 -> 0.02, scaled by 1000/steps; "squaredcos_cap_v2": cosine."""
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps),
                             0.999) for i in range(num_diffusion_timesteps)])
    raise NotImplementedError(f"unknown beta schedule: {schedule_name}")


def space_timesteps(num_timesteps: int, section_counts) -> set:
    """Upstream's ``space_timesteps``: the set of original steps kept. ``section_counts``: "N", "a,b,c", a list,
    or "ddimN" (a fixed integer stride)."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired:
                    return set(range(0, num_timesteps, i))
            raise ValueError(f"cannot create exactly {num_timesteps} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)


class DiffusionSchedule:
    """Upstream's ``SpacedDiffusion`` coefficient tables for one respacing.

    ``timestep_map[i]`` is the original timestep of respaced index i. Tables (arrays of ``dtype``, length
    ``num_timesteps`` = number of kept steps): betas, log_betas, alphas_cumprod(_prev), sqrt_alphas_cumprod,
    sqrt_one_minus_alphas_cumprod, log_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod,
    sqrt_recipm1_alphas_cumprod, posterior_variance, posterior_log_variance_clipped (index 0 takes index 1's
    value), posterior_mean_coef1/2. ``gather(name, idx)`` returns them as float32, as upstream's
    ``_extract_into_tensor`` does.
    """

    def __init__(self, diffusion_steps=1000, timestep_respacing=None, noise_schedule="linear",
                 schedule_dtype="float64"):
        if schedule_dtype not in ("float64", "float32"):
            raise ValueError(f"schedule_dtype must be float64 or float32, got {schedule_dtype!r}")
        if timestep_respacing is None or timestep_respacing == "":
            timestep_respacing = [diffusion_steps]
        base_betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
        base_ac = np.cumprod(1.0 - base_betas, axis=0)
        use = space_timesteps(diffusion_steps, timestep_respacing)
        last, new_betas, tmap = 1.0, [], []
        for i, ac in enumerate(base_ac):
            if i in use:
                new_betas.append(1 - ac / last)
                last = ac
                tmap.append(i)
        self.timestep_map = np.asarray(tmap, np.int64)
        self.original_num_steps = diffusion_steps
        self.schedule_dtype = schedule_dtype
        dt = F64 if schedule_dtype == "float64" else F32
        betas = np.asarray(new_betas, dt)
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.num_timesteps = len(betas)
        one = dt(1.0)
        alphas = one - betas
        ac = np.cumprod(alphas, axis=0).astype(dt)
        acp = np.concatenate([np.ones(1, dt), ac[:-1]]).astype(dt)
        t = {"betas": betas, "log_betas": np.log(betas), "alphas_cumprod": ac, "alphas_cumprod_prev": acp,
             "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(one - ac),
             "log_one_minus_alphas_cumprod": np.log(one - ac), "sqrt_recip_alphas_cumprod": np.sqrt(one / ac),
             "sqrt_recipm1_alphas_cumprod": np.sqrt(one / ac - one)}
        pv = betas * (one - acp) / (one - ac)
        t["posterior_variance"] = pv
        t["posterior_log_variance_clipped"] = (np.log(np.concatenate([pv[1:2], pv[1:]])) if len(pv) > 1
                                               else np.zeros(0, dt))
        t["posterior_mean_coef1"] = betas * np.sqrt(acp) / (one - ac)
        t["posterior_mean_coef2"] = (one - acp) * np.sqrt(alphas) / (one - ac)
        self.tables: Dict[str, np.ndarray] = {k: np.asarray(v, dt) for k, v in t.items()}

    def __getattr__(self, name):
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def gather(self, name: str, idx) -> np.ndarray:
        """Table ``name`` at respaced indices ``idx`` (int array) as float32."""
        return self.tables[name][np.asarray(idx, np.int64)].astype(F32)

    def table32(self, name: str) -> np.ndarray:
        return self.tables[name].astype(F32)

    def original_timesteps(self, idx) -> np.ndarray:
        """What the model receives for respaced index ``idx`` (``_WrappedModel``: ``timestep_map[idx]``)."""
        return self.timestep_map[np.asarray(idx, np.int64)]


# --------------------------------------------------------------------------------------------- CFG, masks
def cfg_channels(cfg_channel: Optional[int], out_channels: int) -> int:
    """v1.1 ``forward_with_cfg``: None = half of the output channels."""
    return out_channels // 2 if cfg_channel is None else int(cfg_channel)


def iddpm_cfg_combine(out_cond, out_null, scale, cfg_channel: int, cat):
    """[cond; null] outputs of one forward -> the output upstream's p_sample uses for the cond half: the first
    ``cfg_channel`` channels guided, uncond + s (cond - uncond); every other channel the cond half's own.
    ``cat(list, axis)`` is the framework's concatenation (numpy, torch or MindSpore)."""
    eps = out_null[:, :cfg_channel] + scale * (out_cond[:, :cfg_channel] - out_null[:, :cfg_channel])
    return cat([eps, out_cond[:, cfg_channel:]], 1)


class IDDPMMaskSchedule:
    """v1.1's masked sampling for a conditioning mask m [B, T] in [0, 1] at respaced index t:
    mask_t = int(m * num_steps) (float32 product, truncated); frames with mask_t == t are re-noised from the
    current latent before the model call (a first draw); x_mask = mask_t > t; after the step frames with
    mask_t < t are reset to the latent entering the step."""

    def __init__(self, mask: Optional[np.ndarray], num_steps: int):
        self.mask = None if mask is None else np.asarray(mask, F32)
        self.mask_t = None if mask is None else (self.mask * F32(num_steps)).astype(np.int32)

    def step(self, t: int):
        """-> (renoise, x_mask, reset), each [B, T] bool."""
        return self.mask_t == t, self.mask_t > t, self.mask_t < t


# --------------------------------------------------------------------------------------------- loss reference
def _approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Upstream's decoder log-likelihood (uint8 bins of [-1, 1], tanh CDF approximation, clamps at 1e-12)."""
    centered = x - means
    inv_stdv = np.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
    log_delta = np.log(np.maximum(cdf_plus - cdf_min, 1e-12))
    return np.where(x < -0.999, log_cdf_plus, np.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def mean_flat(x, mask=None):
    """Mean over non-batch dims; with a frame mask [B, T]: sum over True frames / (#True frames * C*H*W)."""
    if mask is None:
        return x.reshape(x.shape[0], -1).mean(1)
    m = np.asarray(mask, bool)
    per_frame = np.moveaxis(x, 2, 1).reshape(x.shape[0], x.shape[2], -1)     # b t (c h w)
    return (per_frame * m[:, :, None]).sum((1, 2)) / (m.sum(1) * per_frame.shape[-1])


def noised_latent(sched: DiffusionSchedule, x_start, noise, t, mask=None):
    """float64 x_t = q_sample(x0, t, noise); with a frame mask, mask-False frames get q_sample(x0, 0, noise)."""
    x0, n = np.asarray(x_start, F64), np.asarray(noise, F64)
    t = np.asarray(t, np.int64)

    def q(tt):
        a = sched.tables["sqrt_alphas_cumprod"][tt].astype(F64).reshape(-1, 1, 1, 1, 1)
        b = sched.tables["sqrt_one_minus_alphas_cumprod"][tt].astype(F64).reshape(-1, 1, 1, 1, 1)
        return a * x0 + b * n

    x_t = q(t)
    if mask is not None:
        x_t = np.where(np.asarray(mask, bool)[:, None, :, None, None], x_t, q(np.zeros_like(t)))
    return x_t


def hybrid_loss_reference(sched: DiffusionSchedule, model_output, x_start, x_t, noise, t, mask=None):
    """float64 reference of upstream's ``training_losses`` (MSE loss type, LEARNED_RANGE, eps prediction):
    {"mse", "vb", "loss"} per sample. vb is in bits: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0, the
    discretized-Gaussian decoder NLL at t = 0, the model mean taken from the (detached) eps prediction."""
    out = np.asarray(model_output, F64)
    x0, xt, n = (np.asarray(a, F64) for a in (x_start, x_t, noise))
    t = np.asarray(t, np.int64)
    C = x0.shape[1]
    eps, v = out[:, :C], out[:, C:]

    def g(name):
        return sched.tables[name][t].astype(F64).reshape(-1, 1, 1, 1, 1)

    true_mean = g("posterior_mean_coef1") * x0 + g("posterior_mean_coef2") * xt
    true_logvar = g("posterior_log_variance_clipped")
    frac = (v + 1) / 2
    model_logvar = frac * g("log_betas") + (1 - frac) * true_logvar
    pred_x0 = g("sqrt_recip_alphas_cumprod") * xt - g("sqrt_recipm1_alphas_cumprod") * eps
    model_mean = g("posterior_mean_coef1") * pred_x0 + g("posterior_mean_coef2") * xt
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar), mask) / np.log(2.0)
    nll = mean_flat(-discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar), mask) / np.log(2.0)
    vb = np.where(t == 0, nll, kl)
    mse = mean_flat((n - eps) ** 2, mask)
    return {"mse": mse, "vb": vb, "loss": mse + vb}


# --------------------------------------------------------------------------------------------- sampler base
class IDDPMSampler(SamplerBase):
    """What both ``IDDPM`` twins share: upstream's constructor arguments, the schedule and the CFG/mask rules.

    ``version``: "v1.1" (default; ``cfg_channel``, masked sampling, float32 schedule) or "v1.0" (float64
    schedule, CFG on 3 channels, no conditioning mask). ``schedule_dtype`` overrides the version's default.
    Only the LEARNED_RANGE / eps-prediction / MSE(+vb) configuration every Open-Sora config uses is implemented
    (``learn_sigma=True``, ``predict_xstart=False``, ``use_kl=False``, ``sigma_small`` unused); other settings raise.
    """

    noise_error = "IDDPM draws noise at every step (ancestral sampling): pass a noise source"

    def __init__(self, num_sampling_steps=None, timestep_respacing=None, noise_schedule="linear", use_kl=False,
                 sigma_small=False, predict_xstart=False, learn_sigma=True, rescale_learned_sigmas=False,
                 diffusion_steps=1000, cfg_scale=4.0, cfg_channel=None, version="v1.1", schedule_dtype=None,
                 **kwargs):
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if use_kl or predict_xstart or not learn_sigma:
            raise NotImplementedError("only learn_sigma=True, predict_xstart=False, use_kl=False (Open-Sora's "
                                      "configs) are implemented")
        if num_sampling_steps is not None:
            if timestep_respacing is not None:
                raise ValueError("give num_sampling_steps or timestep_respacing, not both (upstream asserts)")
            timestep_respacing = str(num_sampling_steps)
        self.num_sampling_steps = num_sampling_steps
        self.timestep_respacing = timestep_respacing
        self.noise_schedule = noise_schedule
        self.use_kl, self.sigma_small, self.predict_xstart = use_kl, sigma_small, predict_xstart
        self.learn_sigma, self.rescale_learned_sigmas = learn_sigma, rescale_learned_sigmas
        self.diffusion_steps = diffusion_steps
        self.cfg_scale = cfg_scale
        self.version = version
        self.cfg_channel = V1_0_CFG_CHANNEL if version == "v1.0" else cfg_channel
        self.schedule_dtype = schedule_dtype or SCHEDULE_DTYPE[version]
        self.schedule = DiffusionSchedule(diffusion_steps, timestep_respacing, noise_schedule, self.schedule_dtype)
        self.num_timesteps = self.schedule.num_timesteps

    def needs_noise(self, state) -> bool:
        return True

    def noise_draws(self, batch, latent_shape, has_mask):
        """Per step: the re-noise draw (v1.1 with a mask), then the p_sample draw, each of the doubled batch."""
        shape = self.draw_shape((batch, *latent_shape))
        return [shape] * (self.num_timesteps * (2 if has_mask else 1))

    def run_schedule(self, batch: int, mask=None):
        """Per-run arrays: respaced indices [S, B] (descending), the model's original timesteps [S, B] float32,
        the p_sample coefficients per step (float32 [S]) and the mask schedule."""
        if mask is not None and self.version == "v1.0":
            raise ValueError("v1.0's IDDPM has no conditioning mask (masked sampling arrived in v1.1)")
        S = self.num_timesteps
        idx = np.arange(S)[::-1].copy()
        s = self.schedule
        return {"indices": np.repeat(idx[:, None], batch, 1),
                "timesteps": np.repeat(s.original_timesteps(idx).astype(F32)[:, None], batch, 1),
                "coef": {k: s.gather(k, idx) for k in ("sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                                                        "posterior_mean_coef1", "posterior_mean_coef2",
                                                        "posterior_log_variance_clipped", "log_betas",
                                                        "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")},
                "nonzero": (idx != 0).astype(F32),
                "mask": IDDPMMaskSchedule(mask, S)}

    @staticmethod
    def draw_shape(z_shape: Sequence[int]):
        """Upstream samples the doubled CFG batch [z; z] and keeps the first half: each draw is
        ``randn_like`` of [2B, ...] and the first B rows are used. Drawing that shape keeps the random stream
        of upstream's (``TorchNoise(seed)`` gives upstream's numbers)."""
        return (2 * z_shape[0],) + tuple(z_shape[1:])
