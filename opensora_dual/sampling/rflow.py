"""Rectified flow (Open-Sora 1.2, ``v1.2.0:opensora/schedulers/rf/{__init__,rectified_flow}.py``): the schedule
math once, in numpy float32, reproducing upstream's float32 tensor arithmetic step for step.

Conventions (facts section 5): t in [0, num_timesteps], x_t = (1 - t/1000) x0 + (t/1000) eps, the model predicts
the velocity v with x0 = x_t + v t/1000, sampling integrates from t = 1000 to 0 with Euler steps.
"""
from typing import Optional, Tuple

import numpy as np

from opensora_dual.sampling.base import SamplerBase

F32 = np.float32


def sampling_timesteps(num_sampling_steps: int, num_timesteps: int = 1000, use_discrete_timesteps: bool = False):
    """Upstream's list ``[(1 - i/S) * num_timesteps for i < S]`` (Python floats; ints rounded when discrete)."""
    ts = [(1.0 - i / num_sampling_steps) * num_timesteps for i in range(num_sampling_steps)]
    if use_discrete_timesteps:
        ts = [int(round(t)) for t in ts]
    return ts


def timestep_transform(t, height, width, num_frames, base_resolution=512 * 512, base_num_frames=1, scale=1.0,
                       num_timesteps=1, upstream_nf0=False):
    """Resolution- and length-aware shift t' = r t / (1 + (r - 1) t) on t/num_timesteps, returned x num_timesteps.

    ``t``, ``height``, ``width``, ``num_frames``: per-sample arrays (pixels; PIXEL frames). As upstream:
    r = sqrt(H W / 512^2) * sqrt(nf) * scale, nf = 1 if ``num_frames[0] == 1`` else ``num_frames // 17 * 5``
    (the VAE's reduction hard-coded). Every operation is float32 in upstream's order with correctly rounded
    sqrt, as on upstream's GPUs (torch's CPU float32 sqrt is off by one ulp for ~15% of inputs).

    Difference from upstream (docs/sampling.md): for 2-16 pixel frames upstream's nf is 0, which gives t' = 0
    for t < 1000 and NaN at t = 1000 -- a video of NaNs. Here nf is clamped to 1 there (``upstream_nf0=True``
    restores upstream's arithmetic); every other input gives upstream's numbers.
    """
    t = np.asarray(t)
    t = (t.astype(F32) if t.dtype.kind == "f" else t.astype(F32)) / F32(num_timesteps)
    height, width = np.asarray(height, F32), np.asarray(width, F32)
    num_frames = np.asarray(num_frames, F32)
    resolution = height * width
    ratio_space = np.sqrt(resolution / F32(base_resolution))
    if num_frames.reshape(-1)[0] == 1:
        nf = np.ones_like(num_frames)
    else:
        nf = np.floor_divide(num_frames, F32(17)) * F32(5)
        if not upstream_nf0:
            nf = np.where(nf == 0, F32(1), nf).astype(F32)
    ratio_time = np.sqrt(nf / F32(base_num_frames))
    ratio = ratio_space * ratio_time * F32(scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        new_t = ratio * t / (F32(1) + (ratio - F32(1)) * t)
    return (new_t * F32(num_timesteps)).astype(F32)


def add_noise_timepoints(t, num_timesteps=1000):
    """The clean-sample weight of ``RFlowScheduler.add_noise``: 1 - t/num_timesteps (float32 [B]);
    x_t = tp * x0 + (1 - tp) * noise."""
    return (F32(1) - np.asarray(t, F32) / F32(num_timesteps)).astype(F32)


def cfg_combine(pred_cond, pred_uncond, scale):
    """v = v_uncond + s (v_cond - v_uncond), for numpy, torch or MindSpore tensors alike."""
    return pred_uncond + scale * (pred_cond - pred_uncond)


class RFlowSchedule:
    """Per-run timesteps [S, B] and Euler step sizes dt [S, B] (already divided by num_timesteps), float32.

    The last step's dt is the last timestep itself, so the run integrates to exactly 0.
    ``transform_scale`` is kept for training: upstream's sampler never passes it to the transform.
    """

    def __init__(self, num_sampling_steps=10, num_timesteps=1000, use_discrete_timesteps=False,
                 use_timestep_transform=False, transform_scale=1.0):
        self.num_sampling_steps = int(num_sampling_steps)
        self.num_timesteps = num_timesteps
        self.use_discrete_timesteps = use_discrete_timesteps
        self.use_timestep_transform = use_timestep_transform
        self.transform_scale = transform_scale
        if self.num_sampling_steps < 1:
            raise ValueError(f"num_sampling_steps must be >= 1, got {num_sampling_steps}")

    def timesteps(self, batch: int, height=None, width=None, num_frames=None) -> np.ndarray:
        ts = sampling_timesteps(self.num_sampling_steps, self.num_timesteps, self.use_discrete_timesteps)
        dtype = np.int64 if self.use_discrete_timesteps else F32
        out = np.stack([np.full((batch,), t, dtype=dtype) for t in ts])
        if self.use_timestep_transform:
            if height is None or width is None or num_frames is None:
                raise ValueError("use_timestep_transform needs height, width and num_frames")
            out = np.stack([timestep_transform(row, height, width, num_frames, num_timesteps=self.num_timesteps)
                            for row in out])
        return out.astype(F32)

    def dts(self, timesteps: np.ndarray) -> np.ndarray:
        ts = np.asarray(timesteps, F32)
        d = np.empty_like(ts)
        d[:-1] = ts[:-1] - ts[1:]
        d[-1] = ts[-1]
        return (d / F32(self.num_timesteps)).astype(F32)


class MaskSchedule:
    """Which latent frames are generated at each step, for a conditioning mask m [B, T] in [0, 1]
    (1 = generate, 0 = keep the reference, 0 < m < 1 = edit with that strength).

    At timestep t a frame is active when m * num_timesteps >= t (float32, as upstream). A frame gets noise added
    (from the current latent) the step it first becomes active; frames with m = 1 count as noised from the start.
    After the update, inactive frames are reset to the latent before the step.
    """

    def __init__(self, mask: Optional[np.ndarray], num_timesteps=1000):
        self.mask = None if mask is None else np.asarray(mask, F32)
        self.num_timesteps = num_timesteps
        self.noise_added = None if mask is None else (self.mask == 1)

    def step(self, t) -> Tuple[np.ndarray, np.ndarray]:
        """-> (active [B, T] bool: the model's x_mask and the frames updated, add_noise [B, T] bool)."""
        mask_t = self.mask * F32(self.num_timesteps)
        active = mask_t >= np.asarray(t, F32)[:, None]
        add_noise = active & ~self.noise_added
        self.noise_added = active
        return active, add_noise


class RFlowSampler(SamplerBase):
    """What both ``RFLOW`` twins share: upstream's constructor arguments and the schedule built from them.
    The twins add ``prepare`` and ``step`` with their framework's tensors; the loop is ``SamplerBase.sample``."""

    noise_error = "a conditioning mask needs a noise source (frames get noise when they become active)"

    def __init__(self, num_sampling_steps=10, num_timesteps=1000, cfg_scale=4.0, use_discrete_timesteps=False,
                 use_timestep_transform=False, transform_scale=1.0, **kwargs):
        self.num_sampling_steps = num_sampling_steps
        self.num_timesteps = num_timesteps
        self.cfg_scale = cfg_scale
        self.use_discrete_timesteps = use_discrete_timesteps
        self.use_timestep_transform = use_timestep_transform
        self.transform_scale = transform_scale
        self.schedule = RFlowSchedule(num_sampling_steps, num_timesteps, use_discrete_timesteps,
                                      use_timestep_transform, transform_scale)

    def noise_draws(self, batch, latent_shape, has_mask):
        """One latent-shaped draw per step when a conditioning mask is given (upstream's ``randn_like``)."""
        return [(batch, *latent_shape)] * self.num_sampling_steps if has_mask else []

    def needs_noise(self, state) -> bool:
        return state["mask"].mask is not None
