"""The training objective of a train step (Open-Sora 1.0 / 1.1: IDDPM; 1.2: rectified flow), framework-free.

Upstream (tags ``v1.0.0`` / ``v1.1.0``): ``scripts/train.py`` draws ``t = torch.randint(0, num_timesteps, (B,))``
(the IDDPM ``UniformSampler``), builds the v1.1 frame masks with ``MaskGenerator`` and calls
``scheduler.training_losses(model, x, t, model_args, mask=mask)``; the loss is ``loss_dict["loss"].mean()``, the
hybrid loss MSE(eps) + vb of ``opensora/schedulers/iddpm/gaussian_diffusion.py`` (float64 reference:
``opensora_dual.sampling.iddpm.hybrid_loss_reference``). The scheduler is unrespaced (``timestep_respacing=""``).

Here the randoms of an IDDPM step are a ``TrainBatchNoise`` like the rectified flow's (``iddpm_noise``): ``t``
holds the integer timesteps (exact in float32), the noise, the caption-drop ids and the frame masks, drawn in
that order from one numpy generator. ``objective_settings`` validates the ``objective`` / ``objective_kwargs`` of
both twins' ``TrainStep`` once.
"""
from typing import Mapping, Optional, Sequence

import numpy as np

from opensora_dual.training.rflow import TrainBatchNoise

OBJECTIVES = ("rflow", "iddpm")
# IDDPM constructor arguments a training objective may set (the twins' ``schedulers.iddpm.IDDPM``); sampling-only
# ones (num_sampling_steps, cfg_scale, cfg_channel) are refused.
IDDPM_TRAIN_KEYS = ("timestep_respacing", "noise_schedule", "use_kl", "sigma_small", "predict_xstart", "learn_sigma",
                    "rescale_learned_sigmas", "diffusion_steps", "version", "schedule_dtype")


def objective_settings(objective: str, objective_kwargs: Optional[Mapping[str, object]] = None) -> dict:
    """Check a train step's objective: "rflow" takes no kwargs (its randoms carry everything); "iddpm" takes
    ``IDDPM_TRAIN_KEYS`` (default ``timestep_respacing=""``, upstream's train configs) and must be unrespaced
    (t indexes the full schedule). Returns the IDDPM constructor kwargs ({} for rflow)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    kw = dict(objective_kwargs or {})
    if objective == "rflow":
        if kw:
            raise ValueError(f"the rflow objective takes no objective_kwargs (got {sorted(kw)}): its timestep "
                             f"sampling is part of the drawn TrainBatchNoise")
        return {}
    bad = sorted(set(kw) - set(IDDPM_TRAIN_KEYS))
    if bad:
        raise ValueError(f"unknown IDDPM training argument(s) {bad}; known: {IDDPM_TRAIN_KEYS}")
    kw.setdefault("timestep_respacing", "")
    if kw["timestep_respacing"] not in ("", None):
        raise ValueError(f"IDDPM training needs the unrespaced schedule (timestep_respacing=''), got "
                         f"{kw['timestep_respacing']!r}")
    return kw


def iddpm_noise(rng: np.random.Generator, shape: Sequence[int], caption_drop_prob: float = 0.1,
                mask_ratios: Optional[Mapping[str, float]] = None, num_timesteps: int = 1000, t=None,
                x_mask=None) -> TrainBatchNoise:
    """One IDDPM step's randoms for latents of ``shape`` [B, C, T, H, W], in this order: t ~ uniform integers in
    [0, num_timesteps) (upstream's ``UniformSampler`` / ``torch.randint``; unless ``t`` is given), noise, caption
    drop, frame masks (with ``mask_ratios``: v1.1's ``MaskGenerator``; or pass ``x_mask``)."""
    if t is not None:
        t = np.asarray(t)
        if not np.issubdtype(t.dtype, np.integer) and not np.array_equal(t, np.round(t)):
            raise ValueError(f"IDDPM timesteps must be integers, got {t}")
        if t.size and (t.min() < 0 or t.max() >= num_timesteps):
            raise ValueError(f"IDDPM timesteps must be in [0, {num_timesteps}), got {t}")
    return TrainBatchNoise.draw(rng, shape, sample_method="uniform", num_timesteps=num_timesteps,
                                use_discrete_timesteps=True, use_timestep_transform=False,
                                caption_drop_prob=caption_drop_prob, mask_ratios=mask_ratios, t=t, x_mask=x_mask)


def integer_timesteps(noise: TrainBatchNoise) -> np.ndarray:
    """The IDDPM timesteps of ``noise`` as int64 [B] (they must be integers in [0, num_timesteps))."""
    t = np.asarray(noise.t)
    ti = np.rint(t).astype(np.int64)
    if not np.array_equal(ti, t) or ti.min() < 0 or ti.max() >= noise.num_timesteps:
        raise ValueError(f"the IDDPM objective needs integer timesteps in [0, {noise.num_timesteps}) "
                         f"(opensora_dual.training.iddpm_noise), got {t}")
    return ti
