"""The training objective of Open-Sora 2.0 (flow matching on the MMDiT), framework-free: the randoms of one step
and the model inputs built from a batch, once, in numpy, so both twins' ``TrainStep(objective="flow_matching")``
consume identical numbers.

Upstream (``main:scripts/diffusion/train.py::prepare_inputs`` / ``run_iter``, ``opensora/utils/train.py``
``prepare_visual_condition_{causal,uncausal}`` and ``dropout_condition``, configs ``configs/diffusion/train/*.py``):

    cond types   one per sample, ``random.choices(condition_config)`` (only with a ``condition_config``, video only)
    t            = time_shift(alpha, sigmoid(randn(B)))        alpha = lin((W_lat H_lat)//4) sqrt(T_lat)
    T5 dropout   rand(B) < dropout_ratio["t5"]   -> txt   = the T5 encoding of "" (padded by repeating its last token)
    CLIP dropout rand(B) < dropout_ratio["clip"] -> y_vec = the CLIP pooled encoding of ""
    x1           = randn_like(pack(x0))
    x_t = (1 - t) x0 + (1 - (1 - sigma_min)(1 - t)) x1,  target v = (1 - sigma_min) x1 - x0   (packed tokens)
    loss = F.mse_loss(model(x_t, img_ids, txt, txt_ids, t, y_vec, cond=pack(cat(mask, mask * ref)),
                            guidance=...).float(), v.float())                                  (plain mean)

``FlowMatchingBatchNoise.draw`` draws in exactly that order from one numpy generator (upstream draws the cond types
from Python's ``random`` and the rest from torch: same distributions, other streams). The two dropout uniform
vectors are always drawn (upstream draws them only when ``dropout_ratio`` is set), so the stream does not depend on
the ratios. ``flow_matching_inputs`` turns a batch + these randoms into the model's numpy inputs and the target.

Batch (numpy): ``x0`` [B, C, T, H, W] (unpacked latent), ``txt`` [B, L, D] (T5, no mask), ``y_vec`` [B, D']
(CLIP pooled), ``txt_null`` [1 or B, L0, D] / ``y_vec_null`` [1 or B, D'] (the encodings of ""), optional ``ref``
[B, C, T, H, W]: the separately encoded reference latents on the conditioned frames (upstream encodes the
conditioning image apart from the video to avoid leakage; default: x0 itself).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from opensora_dual.packing import img_ids as make_img_ids, pack, txt_ids as make_txt_ids
from opensora_dual.sampling.flow_matching import (COND_TYPES, SIGMA_MIN, dropout_condition, noised_latent,
                                                  pad_null_txt, sample_condition_types, sample_training_t,
                                                  training_condition, velocity_target)
from opensora_dual.training.rflow import default_noise

F32 = np.float32
OBJECTIVE = "flow_matching"
# configs/diffusion/train/image.py (inherited by stage1/stage2): dropout_ratio = {"t5": 0.31622777, "clip": ...}
DROPOUT_RATIO = {"t5": 0.31622777, "clip": 0.31622777}
# configs/diffusion/train/stage1_i2v.py: condition_config (stage1.py / image.py have none: t2v only)
CONDITION_CONFIG_I2V = {"t2v": 1, "i2v_head": 5, "i2v_loop": 1, "i2v_tail": 1}
# objective_kwargs of TrainStep(objective="flow_matching"), with their defaults (upstream's cfg.get defaults):
# sigma_min (train.py: cfg.get("sigma_min", 1e-5)), dropout_ratio (image.py), guidance (train.py:
# cfg.get("guidance", 4); only a guidance_embed model reads it), condition_config (None = t2v), is_causal_vae
# (HunyuanVAE: True), time_compression (4) -- the last three only shape the randoms drawn when step() gets none.
FLOW_MATCHING_DEFAULTS = dict(sigma_min=SIGMA_MIN, dropout_ratio=DROPOUT_RATIO, guidance=4.0, condition_config=None,
                              is_causal_vae=True, time_compression=4)
FLOW_MATCHING_KEYS = tuple(FLOW_MATCHING_DEFAULTS)


def flow_matching_settings(objective_kwargs: Optional[Mapping[str, object]] = None) -> dict:
    """Validated ``objective_kwargs`` of the flow-matching objective, defaults filled in."""
    kw = dict(objective_kwargs or {})
    bad = sorted(set(kw) - set(FLOW_MATCHING_KEYS))
    if bad:
        raise ValueError(f"unknown flow-matching training argument(s) {bad}; known: {FLOW_MATCHING_KEYS}")
    out = {**FLOW_MATCHING_DEFAULTS, **kw}
    dr = out["dropout_ratio"]
    dr = {} if dr is None else dict(dr)
    if sorted(set(dr) - {"t5", "clip"}):
        raise ValueError(f"dropout_ratio takes the keys t5 and clip, got {sorted(dr)}")
    out["dropout_ratio"] = {"t5": float(dr.get("t5", 0.0)), "clip": float(dr.get("clip", 0.0))}
    if any(not 0.0 <= v <= 1.0 for v in out["dropout_ratio"].values()):
        raise ValueError(f"dropout ratios must be in [0, 1], got {out['dropout_ratio']}")
    cc = out["condition_config"]
    if cc is not None:
        cc = {str(k): float(v) for k, v in dict(cc).items()}
        bad = sorted(set(cc) - set(COND_TYPES))
        if bad:
            raise ValueError(f"unknown condition type(s) {bad} in condition_config; known: {COND_TYPES}")
        out["condition_config"] = cc
    out["sigma_min"] = float(out["sigma_min"])
    out["guidance"] = None if out["guidance"] is None else float(out["guidance"])
    out["time_compression"] = int(out["time_compression"])
    out["is_causal_vae"] = bool(out["is_causal_vae"])
    return out


def objective_key(settings: Mapping[str, object]) -> str:
    """A hashable, stable form of the settings (compiled-graph cache keys)."""
    return repr(sorted((k, repr(v)) for k, v in settings.items()))


class _Normals:
    """A noise source (``randn(shape)``) over a numpy generator: float32 standard normals."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def randn(self, shape):
        return self.rng.standard_normal(tuple(shape), dtype=F32)


@dataclass
class FlowMatchingBatchNoise:
    """Every random input of one Open-Sora 2.0 training step (both twins get these numbers).

    t [B] float32 in (0, 1) (t = 1 is noise; already time-shifted); x1 [B, N, D] float32 (noise like the packed x0);
    u_t5 / u_clip [B] float64 uniforms (sample i's T5 / CLIP embedding is replaced by the "" encoding when
    u < dropout_ratio); cond_types [B] condition types (``COND_TYPES``; "t2v" = nothing conditioned)."""

    t: np.ndarray
    x1: np.ndarray
    u_t5: np.ndarray
    u_clip: np.ndarray
    cond_types: List[str] = None
    meta: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        self.t = np.asarray(self.t, F32).reshape(-1)
        self.x1 = np.asarray(self.x1, F32)
        self.u_t5 = np.asarray(self.u_t5, np.float64).reshape(-1)
        self.u_clip = np.asarray(self.u_clip, np.float64).reshape(-1)
        B = self.t.shape[0]
        if self.cond_types is None:
            self.cond_types = ["t2v"] * B
        self.cond_types = [str(c) for c in self.cond_types]
        if self.x1.ndim != 3 or self.x1.shape[0] != B:
            raise ValueError(f"x1 must be packed [B={B}, N, D], got {self.x1.shape}")
        if self.u_t5.shape[0] != B or self.u_clip.shape[0] != B or len(self.cond_types) != B:
            raise ValueError("t, u_t5, u_clip and cond_types must have one entry per sample")
        bad = sorted(set(self.cond_types) - set(COND_TYPES))
        if bad:
            raise ValueError(f"unknown condition type(s) {bad}; known: {COND_TYPES}")

    @property
    def batch(self) -> int:
        return self.t.shape[0]

    def drops(self, dropout_ratio: Mapping[str, float]):
        """(T5 dropped, CLIP dropped) bool [B] for these ratios."""
        return self.u_t5 < float(dropout_ratio.get("t5", 0.0)), self.u_clip < float(dropout_ratio.get("clip", 0.0))

    @classmethod
    def draw(cls, rng: np.random.Generator, x0_shape: Sequence[int], patch_size: int = 2,
             condition_config: Optional[Mapping[str, float]] = None, is_causal_vae: bool = True,
             time_compression: int = 4, t=None, cond_types=None) -> "FlowMatchingBatchNoise":
        """Draw one step's randoms for an unpacked latent batch of shape [B, C, T, H, W] in upstream's order:
        cond types (one ``rng.random()`` per sample, only with a ``condition_config`` and T > 1; or pass
        ``cond_types``), t (B normals; unless ``t`` is given), the T5 uniforms, the CLIP uniforms, x1."""
        B, C, T, H, W = (int(s) for s in x0_shape)
        p = int(patch_size)
        if cond_types is None:
            if condition_config:
                cond_types = sample_condition_types(dict(condition_config), T, B, rng, time_compression,
                                                    is_causal_vae)
            else:
                cond_types = ["t2v"] * B
        normals = _Normals(rng)
        if t is None:
            t = sample_training_t(B, (C, T, H, W), normals)
        u_t5 = rng.random(B)
        u_clip = rng.random(B)
        x1 = normals.randn((B, T * (H // p) * (W // p), C * p * p))
        return cls(t=t, x1=x1, u_t5=u_t5, u_clip=u_clip, cond_types=list(cond_types))

    def split(self, k: int) -> List["FlowMatchingBatchNoise"]:
        """k micro-batches of B/k samples each (contiguous, in order), for gradient accumulation."""
        B = self.batch
        if k < 1 or B % k:
            raise ValueError(f"a batch of {B} cannot be split into {k} equal micro-batches")
        n = B // k
        return [FlowMatchingBatchNoise(self.t[i * n:(i + 1) * n], self.x1[i * n:(i + 1) * n],
                                       self.u_t5[i * n:(i + 1) * n], self.u_clip[i * n:(i + 1) * n],
                                       self.cond_types[i * n:(i + 1) * n]) for i in range(k)]


def flow_matching_noise(batch: Mapping[str, object], rng: np.random.Generator, patch_size: int = 2,
                        condition_config=None, is_causal_vae: bool = True, time_compression: int = 4,
                        **kw) -> FlowMatchingBatchNoise:
    """``FlowMatchingBatchNoise.draw`` for a batch dict (its ``x0``), as ``iddpm_noise`` / ``default_noise``."""
    return FlowMatchingBatchNoise.draw(rng, np.asarray(batch["x0"]).shape, patch_size, condition_config,
                                       is_causal_vae, time_compression, **kw)


def flow_matching_inputs(batch: Mapping[str, object], noise: FlowMatchingBatchNoise, patch_size: int = 2,
                         sigma_min: float = SIGMA_MIN, dropout_ratio: Optional[Mapping[str, float]] = None,
                         with_cond: bool = False, guidance: Optional[float] = None, is_causal_vae: bool = True,
                         time_compression: int = 4) -> Dict[str, Optional[np.ndarray]]:
    """The model inputs of one (micro-)batch and the target, float32 numpy (upstream's ``prepare_inputs``):
    img (x_t packed) [B, N, C p^2], img_ids [B, N, 3], txt (after dropout) [B, L, D], txt_ids [B, L, 3],
    timesteps [B], y_vec (after dropout) [B, D'], cond [B, N, (C + 1) p^2] or None (``with_cond``: the model has
    ``cond_in``), guidance [B] or None (a ``guidance`` value: the model has ``guidance_in``), target [B, N, C p^2]."""
    dropout_ratio = DROPOUT_RATIO if dropout_ratio is None else dropout_ratio
    p = int(patch_size)
    x0 = np.asarray(batch["x0"], F32)
    if x0.ndim != 5:
        raise ValueError(f"x0 must be an unpacked latent [B, C, T, H, W], got {x0.shape}")
    B, C, T, H, W = x0.shape
    if noise.batch != B:
        raise ValueError(f"the noise is drawn for {noise.batch} samples, the batch has {B}")
    x0p = pack(x0, p)
    if noise.x1.shape != x0p.shape:
        raise ValueError(f"x1 {noise.x1.shape} does not match the packed x0 {x0p.shape}")
    txt, y_vec = np.asarray(batch["txt"], F32), np.asarray(batch["y_vec"], F32)
    if txt.ndim == 4:   # [B, 1, L, D] as the v1.x batches carry it
        txt = txt[:, 0]
    L = txt.shape[1]
    drop_t5, drop_clip = noise.drops(dropout_ratio)
    if drop_t5.any():
        null_txt = np.asarray(batch["txt_null"], F32)
        null_txt = null_txt[:, 0] if null_txt.ndim == 4 else null_txt
        if null_txt.shape[1] > L:
            raise ValueError(f"the null T5 encoding has {null_txt.shape[1]} tokens, more than the captions' {L}")
        txt = dropout_condition(float(dropout_ratio.get("t5", 0.0)), txt, pad_null_txt(null_txt, L), noise.u_t5)
    if drop_clip.any():
        y_vec = dropout_condition(float(dropout_ratio.get("clip", 0.0)), y_vec,
                                  np.asarray(batch["y_vec_null"], F32), noise.u_clip)
    out = dict(img=noised_latent(x0p, noise.x1, noise.t, sigma_min),
               img_ids=np.array(make_img_ids(B, T, H // p, W // p)),
               txt=np.ascontiguousarray(txt, F32), txt_ids=make_txt_ids(B, L), timesteps=noise.t.copy(),
               y_vec=np.ascontiguousarray(y_vec, F32), cond=None, guidance=None,
               target=velocity_target(x0p, noise.x1, sigma_min))
    if with_cond:
        ref = batch.get("ref")
        ref = x0 if ref is None else np.asarray(ref, F32)
        out["cond"] = pack(training_condition(noise.cond_types, ref, x0.shape, time_compression, is_causal_vae), p)
    if guidance is not None:
        out["guidance"] = np.full((B,), guidance, F32)
    return out


def flow_matching_loss_reference(pred, target) -> float:
    """The loss in float64: plain MSE over every element."""
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return float(np.mean(d * d))


class TrainStepInputs:
    """What both ``TrainStep`` twins do in numpy before the model: the 2.0 inputs and target of a (micro-)batch
    and the randoms ``step`` draws when it gets none. Needs ``self.fm`` (``flow_matching_settings`` or None),
    ``self.model`` (``patch_size``, ``cond_embed``, ``guidance_embed``), ``self.rng``, ``self.caption_drop_prob``
    and ``self.objective``."""

    def flow_matching_inputs(self, batch, noise: FlowMatchingBatchNoise):
        """The numpy model inputs and target of a 2.0 (micro-)batch (``flow_matching_inputs``)."""
        fm, m = self.fm, self.model
        return flow_matching_inputs(batch, noise, m.patch_size, fm["sigma_min"], fm["dropout_ratio"],
                                    with_cond=bool(m.cond_embed), guidance=fm["guidance"] if m.guidance_embed else None,
                                    is_causal_vae=fm["is_causal_vae"], time_compression=fm["time_compression"])

    def draw_noise(self, batch):
        """This step's randoms when ``step`` gets none (from the step's generator)."""
        if self.fm is not None:
            return flow_matching_noise(batch, self.rng, self.model.patch_size, self.fm["condition_config"],
                                       self.fm["is_causal_vae"], self.fm["time_compression"])
        return default_noise(batch, self.rng, self.caption_drop_prob, objective=self.objective)
