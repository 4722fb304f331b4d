"""Rectified-flow training math (Open-Sora 1.2), once, in numpy: the random inputs of a training step, the
learning-rate schedule, the EMA rule and a float64 reference of the loss.

Upstream sources (tag ``v1.2.0``): ``opensora/schedulers/rf/__init__.py`` (``RFLOW.training_losses``,
``sample_t``), ``opensora/schedulers/rf/rectified_flow.py`` (``add_noise``, ``timestep_transform``),
``opensora/utils/lr_scheduler.py`` (``LinearWarmupLR``), ``opensora/utils/train_utils.py`` (``update_ema``,
``MaskGenerator``), ``opensora/models/layers/blocks.py`` (``CaptionEmbedder.token_drop``), ``scripts/train.py``.

Every random number of one step is drawn here, in numpy, from an injectable ``np.random.Generator``
(``TrainBatchNoise.draw``), so the PyTorch reference and the MindSpore port get the same numbers. Upstream
draws them with torch inside the step; the distributions are the same, the streams are not.

Framework-free: no torch / mindspore / twin imports (tests/test_layering.py).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from opensora_dual.sampling.rflow import add_noise_timepoints, timestep_transform

F32 = np.float32
SAMPLE_METHODS = ("uniform", "logit-normal")

# Upstream MaskGenerator's names (v1.2; "intepolate" is upstream's spelling).
MASK_NAMES = ("identity", "quarter_random", "quarter_head", "quarter_tail", "quarter_head_tail", "image_random",
              "image_head", "image_tail", "image_head_tail", "random", "intepolate")

# v1.2 stage-1/2 mask ratios (configs/opensora-v1-2/train/stage1.py; facts section 7); identity fills the rest.
V1_2_MASK_RATIOS = {"random": 0.05, "intepolate": 0.005, "quarter_random": 0.005, "quarter_head": 0.005,
                    "quarter_tail": 0.005, "quarter_head_tail": 0.005, "image_random": 0.025, "image_head": 0.05,
                    "image_tail": 0.025, "image_head_tail": 0.025}


class TrainingDivergedError(RuntimeError):
    """The loss of a training step is NaN or Inf. No update was applied for that step: the weights, the
    optimizer state and the EMA are those after the previous step; resume from the last good checkpoint."""

    def __init__(self, step: int, loss: float, micro_batch: int = 0, num_micro_batches: int = 1,
                 what: str = "the loss"):
        self.step, self.loss = step, loss
        self.micro_batch, self.num_micro_batches = micro_batch, num_micro_batches
        where = f" (micro-batch {micro_batch + 1} of {num_micro_batches})" if num_micro_batches > 1 else ""
        super().__init__(f"training diverged at step {step}: {what} is {loss}{where}; no update was applied "
                         f"(weights, optimizer state and EMA are as after the previous step); resume from the last "
                         f"good checkpoint, e.g. with a lower learning rate")


# ------------------------------------------------------------------------------------------- timesteps
def sample_timesteps(batch: int, rng: np.random.Generator, method: str = "logit-normal", loc: float = 0.0,
                     scale: float = 1.0, num_timesteps: int = 1000, use_discrete_timesteps: bool = False) -> np.ndarray:
    """Upstream's training draw of t in [0, num_timesteps] (float32 [B]), BEFORE the timestep transform.

    - "uniform": U[0, 1) * num_timesteps (``torch.rand``); with ``use_discrete_timesteps`` integers in
      [0, num_timesteps) (``torch.randint``), the only method upstream allows with discrete timesteps;
    - "logit-normal": sigmoid(N(loc, scale)) * num_timesteps (upstream's ``LogisticNormal(loc, scale)``
      sample, component 0 -- for one dimension the stick-breaking transform is the sigmoid).
    """
    if method not in SAMPLE_METHODS:
        raise ValueError(f"sample_method must be one of {SAMPLE_METHODS}, got {method!r}")
    if use_discrete_timesteps:
        if method != "uniform":
            raise ValueError("only uniform sampling is supported for discrete timesteps (as upstream)")
        return rng.integers(0, num_timesteps, size=(batch,)).astype(F32)
    if method == "uniform":
        return (rng.random(batch, dtype=np.float32) * F32(num_timesteps)).astype(F32)
    z = rng.normal(loc, scale, size=(batch,))
    with np.errstate(over="ignore"):
        u = (1.0 / (1.0 + np.exp(-z))).astype(F32)
    return (u * F32(num_timesteps)).astype(F32)


def training_timesteps(batch: int, rng: np.random.Generator, height=None, width=None, num_frames=None,
                       method: str = "logit-normal", loc: float = 0.0, scale: float = 1.0,
                       num_timesteps: int = 1000, use_discrete_timesteps: bool = False,
                       use_timestep_transform: bool = True, transform_scale: float = 1.0, t=None) -> np.ndarray:
    """The t of ``training_losses``: sampled (``sample_timesteps``) and, with ``use_timestep_transform``,
    shifted by ``opensora_dual.sampling.rflow.timestep_transform(..., scale=transform_scale)`` using the
    batch's pixel ``height``/``width``/``num_frames``. As upstream, an explicitly given ``t`` is returned
    unchanged (NOT transformed) and draws nothing. The v1.2 train configs use logit-normal + transform."""
    if t is not None:
        t = np.asarray(t, F32).reshape(-1)
        if t.shape[0] != batch:
            raise ValueError(f"t has {t.shape[0]} entries for a batch of {batch}")
        return t
    t = sample_timesteps(batch, rng, method, loc, scale, num_timesteps, use_discrete_timesteps)
    if use_timestep_transform:
        if height is None or width is None or num_frames is None:
            raise ValueError("use_timestep_transform needs the batch's height, width and num_frames (pixels)")
        t = timestep_transform(t, height, width, num_frames, scale=transform_scale, num_timesteps=num_timesteps)
    return t.astype(F32)


# ------------------------------------------------------------------------------------------- caption dropout
def caption_drop_mask(batch: int, prob: float, rng: np.random.Generator) -> np.ndarray:
    """bool [B]: True = this sample's whole caption is replaced by the null caption (the model's
    ``y_embedder.y_embedding``), as upstream's ``token_drop``: ``rand(B) < uncond_prob`` (v1.2: 0.1)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"caption drop probability must be in [0, 1], got {prob}")
    return rng.random(batch) < prob


# ------------------------------------------------------------------------------------------- frame masks
class FrameMaskGenerator:
    """Upstream's ``MaskGenerator`` (v1.2) with a numpy generator: per sample, pick a mask type by the
    cumulative ratios, then a [T] bool mask (True = generated frame, False = conditioning frame).

    Kept from upstream: the type test ``u < cumulative ratio`` in the dict's order, ``condition_frames_max =
    T // 4`` for the "quarter" types, "random" keeps each frame with ``rand > U(0.1, 0.9)`` and then forces the
    last frame on if none is, T <= 1 gives all True. Differences: with T < 4 upstream's "quarter" types raise
    (``randint(1, 0)``), here they give the identity mask; the "at least one generated frame" rule is applied
    to every type (upstream only to "random"; "image_head_tail" at T = 2 would otherwise make the loss 0/0).
    """

    def __init__(self, mask_ratios: Mapping[str, float]):
        ratios = dict(mask_ratios)
        bad = [k for k in ratios if k not in MASK_NAMES]
        if bad:
            raise ValueError(f"unknown mask names {bad}; valid: {MASK_NAMES}")
        if any(not 0.0 <= v <= 1.0 for v in ratios.values()):
            raise ValueError(f"mask ratios must be in [0, 1], got {ratios}")
        if "identity" not in ratios:
            ratios["identity"] = 1.0 - sum(ratios.values())
        if abs(sum(ratios.values()) - 1.0) > 1e-6 or ratios["identity"] < -1e-6:
            raise ValueError(f"mask ratios must sum to 1, got {sum(ratios.values())}")
        self.mask_ratios = ratios

    def mask_name(self, rng: np.random.Generator) -> str:
        u, acc = rng.random(), 0.0
        for name, r in self.mask_ratios.items():
            acc += r
            if u < acc:
                return name
        return "identity"  # upstream leaves it None (= identity) when rounding leaves u above the sum

    def get_mask(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        name = self.mask_name(rng)
        mask = np.ones(num_frames, bool)
        if num_frames <= 1:
            return mask
        cmax = num_frames // 4
        if name.startswith("quarter") and cmax < 1:
            return mask
        if name == "quarter_random":
            size = int(rng.integers(1, cmax + 1))
            pos = int(rng.integers(0, num_frames - size + 1))
            mask[pos:pos + size] = False
        elif name == "image_random":
            mask[int(rng.integers(0, num_frames))] = False
        elif name == "quarter_head":
            mask[:int(rng.integers(1, cmax + 1))] = False
        elif name == "image_head":
            mask[:1] = False
        elif name == "quarter_tail":
            mask[-int(rng.integers(1, cmax + 1)):] = False
        elif name == "image_tail":
            mask[-1:] = False
        elif name == "quarter_head_tail":
            size = int(rng.integers(1, cmax + 1))
            mask[:size] = False
            mask[-size:] = False
        elif name == "image_head_tail":
            mask[:1] = False
            mask[-1:] = False
        elif name == "intepolate":
            mask[int(rng.integers(0, 2))::2] = False
        elif name == "random":
            ratio = rng.uniform(0.1, 0.9)
            mask = rng.random(num_frames) > ratio
        if not mask.any():  # every sample keeps at least one generated frame (else the masked loss is 0/0)
            mask[-1] = True
        return mask

    def get_masks(self, batch: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([self.get_mask(num_frames, rng) for _ in range(batch)])


# ------------------------------------------------------------------------------------------- one step's randoms
@dataclass
class TrainBatchNoise:
    """Every random input of one training step, drawn once in numpy (both twins get these numbers).

    t [B] float32: the model timesteps in [0, num_timesteps] (already sampled + transformed);
    noise [B, C, T, H, W] float32: the epsilon of x_t = (1 - t/1000) x0 + (t/1000) noise;
    drop_ids [B] bool: True = the caption is replaced by the null caption;
    x_mask [B, T] bool or None: True = generated frame, False = conditioning frame (kept clean, no loss);
    None = no frame mask (plain MSE over every element, the model gets no x_mask).
    """

    t: np.ndarray
    noise: np.ndarray
    drop_ids: np.ndarray
    x_mask: Optional[np.ndarray] = None
    num_timesteps: int = 1000
    meta: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        self.t = np.asarray(self.t, F32).reshape(-1)
        self.noise = np.asarray(self.noise, F32)
        self.drop_ids = np.asarray(self.drop_ids, bool).reshape(-1)
        B = self.noise.shape[0]
        if self.noise.ndim != 5:
            raise ValueError(f"noise must be [B, C, T, H, W], got shape {self.noise.shape}")
        if self.t.shape[0] != B or self.drop_ids.shape[0] != B:
            raise ValueError(f"t ({self.t.shape}) and drop_ids ({self.drop_ids.shape}) must have B={B} entries")
        if self.x_mask is not None:
            self.x_mask = np.asarray(self.x_mask, bool)
            if self.x_mask.shape != (B, self.noise.shape[2]):
                raise ValueError(f"x_mask must be [B, T] = {(B, self.noise.shape[2])}, got {self.x_mask.shape}")
            if not self.x_mask.any(axis=1).all():
                raise ValueError("every sample needs at least one generated frame (x_mask True): the masked loss "
                                 "divides by the number of such frames")

    @property
    def batch(self) -> int:
        return self.noise.shape[0]

    def timepoints(self) -> np.ndarray:
        """The clean-sample weight 1 - t/num_timesteps (float32 [B]), upstream's ``add_noise`` arithmetic."""
        return add_noise_timepoints(self.t, self.num_timesteps)

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: Sequence[int], height=None, width=None, num_frames=None,
             sample_method: str = "logit-normal", loc: float = 0.0, scale: float = 1.0, num_timesteps: int = 1000,
             use_discrete_timesteps: bool = False, use_timestep_transform: bool = True,
             transform_scale: float = 1.0, caption_drop_prob: float = 0.1,
             mask_ratios: Optional[Mapping[str, float]] = None, t=None, x_mask=None) -> "TrainBatchNoise":
        """Draw one step's randoms for latents of ``shape`` [B, C, T, H, W], in this fixed order: t (unless
        given), noise, caption drop, frame masks (only with ``mask_ratios``; or pass ``x_mask``).
        ``height``/``width``/``num_frames`` are the batch's pixel sizes (per sample), used by the transform.
        Defaults are the v1.2 recipe: logit-normal(0, 1) + timestep transform, caption drop 0.1."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 5:
            raise ValueError(f"shape must be [B, C, T, H, W], got {shape}")
        B = shape[0]
        tt = training_timesteps(B, rng, height, width, num_frames, sample_method, loc, scale, num_timesteps,
                                use_discrete_timesteps, use_timestep_transform, transform_scale, t=t)
        noise = rng.standard_normal(shape, dtype=np.float32)
        drop = caption_drop_mask(B, caption_drop_prob, rng)
        if x_mask is None and mask_ratios is not None:
            x_mask = FrameMaskGenerator(mask_ratios).get_masks(B, shape[2], rng)
        return cls(t=tt, noise=noise, drop_ids=drop, x_mask=x_mask, num_timesteps=num_timesteps)

    def split(self, k: int) -> List["TrainBatchNoise"]:
        """k micro-batches of B/k samples each (contiguous, in order), for gradient accumulation."""
        B = self.batch
        if k < 1 or B % k:
            raise ValueError(f"a batch of {B} cannot be split into {k} equal micro-batches")
        n = B // k
        return [TrainBatchNoise(self.t[i * n:(i + 1) * n], self.noise[i * n:(i + 1) * n],
                                self.drop_ids[i * n:(i + 1) * n],
                                None if self.x_mask is None else self.x_mask[i * n:(i + 1) * n],
                                self.num_timesteps) for i in range(k)]


def split_batch(batch: Mapping[str, object], k: int) -> List[Dict[str, object]]:
    """Split a batch dict into k micro-batches along axis 0. Arrays whose first dimension is the batch size
    (that of ``x0``) are split; others (e.g. a shared ``fps`` of shape [1]) and None are passed whole."""
    B = np.asarray(batch["x0"]).shape[0]
    if k < 1 or B % k:
        raise ValueError(f"a batch of {B} cannot be split into {k} equal micro-batches")
    n = B // k
    out = []
    for i in range(k):
        mb = {}
        for key, v in batch.items():
            if v is not None and np.ndim(v) >= 1 and np.shape(v)[0] == B:
                mb[key] = np.asarray(v)[i * n:(i + 1) * n]
            else:
                mb[key] = v
        out.append(mb)
    return out


def default_noise(batch: Mapping[str, object], rng: np.random.Generator, caption_drop_prob: float = 0.1,
                  objective: str = "rflow", **kw) -> TrainBatchNoise:
    """``TrainBatchNoise.draw`` for a batch dict (x0, height, width, num_frames) with the v1.2 defaults; for the
    "iddpm" objective ``opensora_dual.training.iddpm_noise`` (uniform integer t, no frame mask)."""
    x0 = np.asarray(batch["x0"])
    if objective == "iddpm":
        from opensora_dual.training.iddpm import iddpm_noise

        return iddpm_noise(rng, x0.shape, caption_drop_prob=caption_drop_prob, **kw)
    return TrainBatchNoise.draw(rng, x0.shape, batch.get("height"), batch.get("width"), batch.get("num_frames"),
                                caption_drop_prob=caption_drop_prob, **kw)


# ------------------------------------------------------------------------------------------- schedule, EMA
def linear_warmup_lr(step: int, base_lr: float, warmup_steps: int, initial_lr: float = 0.0) -> float:
    """Upstream's ``LinearWarmupLR`` for the ``step``-th optimizer update (0-based): while step < warmup_steps
    the lr is initial_lr + (step + 1)/(warmup_steps + 1) * base_lr, then base_lr. So the first update already
    uses base_lr/(warmup_steps + 1), and warmup_steps = 0 means base_lr throughout (v1.2 stage configs: 1000)."""
    if step < warmup_steps:
        return initial_lr + (step + 1) / (warmup_steps + 1) * base_lr
    return base_lr


def ema_tracked(name: str, requires_grad: bool) -> bool:
    """Which parameters upstream's ``update_ema`` moves: every ``named_parameters()`` entry (so no buffers, e.g.
    the null caption ``y_embedder.y_embedding``) except a parameter named exactly "pos_embed" and any parameter
    with requires_grad False (``rope.freqs``; a frozen ``y_embedder`` under ``freeze_y_embedder``). The
    untracked ones keep the EMA copy's initial values (a copy of the model when training starts)."""
    return requires_grad and name != "pos_embed"


def ema_update(ema: np.ndarray, param: np.ndarray, decay: float) -> np.ndarray:
    """ema <- decay * ema + (1 - decay) * param (upstream: ``ema.mul_(decay).add_(param, alpha=1 - decay)``,
    after the optimizer step, on the fp32 master weights; the EMA copy is fp32). decay = 0 copies."""
    return (np.asarray(ema, F32) * F32(decay) + F32(1.0 - decay) * np.asarray(param, F32)).astype(F32)


# ------------------------------------------------------------------------------------------- loss reference
def noised_latents(x0: np.ndarray, noise: np.ndarray, t: np.ndarray, x_mask: Optional[np.ndarray] = None,
                   num_timesteps: int = 1000) -> np.ndarray:
    """x_t = tp x0 + (1 - tp) noise, tp = 1 - t/num_timesteps (float32, upstream's ``add_noise``); frames with
    x_mask False are x0 exactly (upstream: ``add_noise(x0, noise, t=0)``)."""
    tp = add_noise_timepoints(t, num_timesteps).reshape(-1, 1, 1, 1, 1)
    x_t = (tp * np.asarray(x0, F32) + (F32(1) - tp) * np.asarray(noise, F32)).astype(F32)
    if x_mask is not None:
        x_t = np.where(np.asarray(x_mask, bool)[:, None, :, None, None], x_t, np.asarray(x0, F32))
    return x_t


def rflow_loss_reference(model_output: np.ndarray, x0: np.ndarray, noise: np.ndarray,
                         x_mask: Optional[np.ndarray] = None) -> float:
    """The training loss in float64, upstream's ``training_losses`` + ``.mean()``: velocity prediction = the
    first C output channels (the model outputs 2C with pred_sigma); target = x0 - noise; per sample, the
    squared error summed over frames with x_mask True / (mask.sum(1) * C * H * W) (no mask: the mean over all
    elements); then the mean over the batch."""
    x0 = np.asarray(x0, np.float64)
    C = x0.shape[1]
    err = (np.asarray(model_output, np.float64)[:, :C] - (x0 - np.asarray(noise, np.float64))) ** 2
    if x_mask is None:
        return float(err.reshape(err.shape[0], -1).mean(axis=1).mean())
    m = np.asarray(x_mask, np.float64)
    per_frame = err.transpose(0, 2, 1, 3, 4).reshape(err.shape[0], err.shape[2], -1)
    denom = m.sum(axis=1) * per_frame.shape[-1]
    return float(((per_frame * m[:, :, None]).sum(axis=(1, 2)) / denom).mean())
