"""Flow matching (Open-Sora 2.0, ``main:opensora/utils/sampling.py``, ``main:opensora/utils/inference.py``,
``main:scripts/diffusion/train.py``, ``main:opensora/utils/train.py``): the schedule, the guidance rules, the
conditioning (cond types) and the training target, once, in numpy -- shared by the sampler twins
(``{pt_reference,ms_impl}.schedulers.flow_matching.FlowMatching``).

Conventions (facts section 5): t in [0, 1], t = 1 is noise; the model predicts v with x0 = x_t - t v
(sampling integrates t from 1 to 0 with Euler steps ``img += (t_prev - t_curr) v``); the model receives t itself
(its embedding multiplies by 1000). Training: x_t = (1 - t) x0 + (1 - (1 - sigma_min)(1 - t)) x1, target
v = (1 - sigma_min) x1 - x0 ("follow MovieGen").

Numerics: upstream's schedule is float32 torch arithmetic (``torch.linspace(1, 0, N + 1)`` then ``time_shift``
with a Python-float alpha, then ``.tolist()``); it is reproduced here bit for bit (``linspace_f32`` is
``torch.linspace``'s scalar formula, the GPU kernel's). Every random number comes from an injectable source:
a noise source (``randn(shape)``, ``opensora_dual.sampling.noise``) for normals and an object with ``random()``
(``random.Random`` reproduces upstream's ``random.choices``; a ``numpy.random.Generator`` works too) for the
training condition type.
"""
import math
import os
import warnings
from bisect import bisect
from dataclasses import dataclass
from itertools import accumulate
from typing import Dict, List, Optional, Sequence

import numpy as np

from opensora_dual.packing import pack
from opensora_dual.sampling.base import SamplerBase
from opensora_dual.sampling.dpm_solver import linspace_f32

F32 = np.float32

COND_TYPES = ("t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail", "v2v_head_easy", "v2v_tail_easy")
I2V, DISTILLED = "i2v", "distill"   # upstream's SamplingMethod values
SIGMA_MIN = 1e-5
OSCILLATION_FORCE_NUM = 10          # get_oscillation_gs: steps before this keep the scale


@dataclass
class SamplingOption:
    """Upstream's ``SamplingOption`` dataclass defaults (the class, not a config). ``CONFIG_256PX`` holds what
    ``configs/diffusion/inference/256px.py`` sets (768px.py only changes the resolution)."""
    width: Optional[int] = None
    height: Optional[int] = None
    resolution: Optional[str] = None
    aspect_ratio: Optional[str] = None
    num_frames: int = 1
    num_steps: int = 50
    guidance: float = 4.0
    text_osci: bool = False
    guidance_img: Optional[float] = None
    image_osci: bool = False
    scale_temporal_osci: bool = False
    seed: Optional[int] = None
    shift: bool = True
    method: str = I2V
    temporal_reduction: int = 1
    is_causal_vae: bool = False
    flow_shift: Optional[float] = None


CONFIG_256PX = dict(resolution="256px", aspect_ratio="16:9", num_frames=129, num_steps=50, shift=True,
                    temporal_reduction=4, is_causal_vae=True, guidance=7.5, guidance_img=3.0, text_osci=True,
                    image_osci=True, scale_temporal_osci=True, method=I2V, seed=None)
CONFIG_768PX = dict(CONFIG_256PX, resolution="768px")


# ---------------------------------------------------------------------------------------------- latent shape
def round_up_16(x: int) -> int:
    """``sanitize_sampling_option``: H and W rounded up to a multiple of 16 (always 16, whatever the AE)."""
    return (x // 16 + (1 if x % 16 else 0)) * 16


def latent_num_frames(num_frames: int, temporal_reduction: int = 4, is_causal_vae: bool = True) -> int:
    """``api_fn``: 1 for an image; causal (T - 1)//r + 1, otherwise T//r."""
    if num_frames == 1:
        return 1
    return (num_frames - 1) // temporal_reduction + 1 if is_causal_vae else num_frames // temporal_reduction


def spatial_compression() -> int:
    """``AE_SPATIAL_COMPRESSION`` (default 16 = the VAE's 8 x the 2x2 packing), read at call time as upstream."""
    return int(os.environ.get("AE_SPATIAL_COMPRESSION", 16))


def noise_shape(num_samples: int, height: int, width: int, num_frames_latent: int, patch_size: int = 2,
                channel: int = 16):
    """``get_noise``'s shape: [B, C, T_lat, p ceil(H/D), p ceil(W/D)] (H, W already rounded to 16; upstream's
    caller passes ``channel = model.in_channels // p**2`` = 64 // 4 = 16)."""
    D = spatial_compression()
    return (num_samples, channel, num_frames_latent, patch_size * math.ceil(height / D),
            patch_size * math.ceil(width / D))


def get_noise(num_samples, height, width, num_frames_latent, noise, patch_size=2, channel=16) -> np.ndarray:
    """The starting latent, one draw from the noise source (upstream: ``torch.randn`` with a seeded generator)."""
    return np.asarray(noise.randn(noise_shape(num_samples, height, width, num_frames_latent, patch_size, channel)), F32)


def image_seq_len(latent_h: int, latent_w: int, patch_size: int = 2) -> int:
    """Tokens per latent frame after packing: (W_lat H_lat) // p^2."""
    return (latent_w * latent_h) // patch_size ** 2


# ------------------------------------------------------------------------------------------------ schedule
def get_lin_function(x1: float = 256, y1: float = 1, x2: float = 4096, y2: float = 3):
    """``get_res_lin_function``: the line through (x1, y1) and (x2, y2) (Python floats)."""
    m = (y2 - y1) / (x2 - x1)
    b = y1 - m * x1
    return lambda x: m * x + b


def shift_alpha(image_seq_len: int, num_frames: int, base_shift: float = 1, max_shift: float = 3) -> float:
    """alpha = lin(seq) sqrt(T_lat) = (2/3840 seq + 1 - 512/3840) sqrt(T_lat) (Python float, as upstream)."""
    return get_lin_function(y1=base_shift, y2=max_shift)(image_seq_len) * math.sqrt(num_frames)


def time_shift(alpha: float, t) -> np.ndarray:
    """alpha t / (1 + (alpha - 1) t) in float32 with torch's scalar rules: ``alpha`` and the Python-evaluated
    ``alpha - 1`` are each rounded to float32 before meeting the tensor."""
    t = np.asarray(t, F32)
    return (F32(alpha) * t / (F32(1) + F32(alpha - 1) * t)).astype(F32)


def get_schedule(num_steps: int, image_seq_len: int, num_frames: int, shift_alpha_: Optional[float] = None,
                 base_shift: float = 1, max_shift: float = 3, shift: bool = True) -> np.ndarray:
    """N + 1 float32 points from 1 to 0 (the extra one is 0), shifted. ``shift_alpha_`` (upstream's
    ``shift_alpha``, fed from ``flow_shift``) replaces the computed alpha, sqrt(T) included."""
    ts = linspace_f32(1.0, 0.0, num_steps + 1)
    if shift:
        alpha = shift_alpha_ if shift_alpha_ is not None else shift_alpha(image_seq_len, num_frames, base_shift,
                                                                          max_shift)
        ts = time_shift(alpha, ts)
    return ts


def euler_dts(ts: np.ndarray) -> np.ndarray:
    """(t_prev - t_curr) per step: upstream subtracts the ``.tolist()`` Python floats (exact in double) and the
    product with a float32 tensor rounds that to float32."""
    ts = np.asarray(ts, F32).astype(np.float64)
    return (ts[1:] - ts[:-1]).astype(F32)


# -------------------------------------------------------------------------------------------------- guidance
def oscillation_gs(guidance_scale: float, i: int, force_num: int = OSCILLATION_FORCE_NUM) -> float:
    """``get_oscillation_gs``: the scale for i < force_num and for even i; 1.0 for odd i >= force_num."""
    if i < force_num or (i >= force_num and i % 2 == 0):
        return guidance_scale
    return 1.0


def temporal_image_scales(image_gs: float, i: int, num_timesteps: int, num_frames_latent: int) -> np.ndarray:
    """``scale_temporal_osci``: the step's upper bound linspace(g_img, 1, N + 1)[i] (N + 1 = len(timesteps)), then
    per latent frame linspace(1, upper, T_lat) -- the first frame gets 1.0. float32 [T_lat]."""
    upper = linspace_f32(image_gs, 1.0, num_timesteps)[i]
    return linspace_f32(1.0, float(upper), num_frames_latent)


def step_guidance(i: int, num_timesteps: int, guidance: float, guidance_img: float, text_osci: bool,
                  image_osci: bool, scale_temporal_osci: bool, num_frames_latent: int):
    """The scales of step i: (text_gs, image_gs) with image_gs a float or a float32 [T_lat] per-frame array.
    Upstream checks ``image_gs > 1.0`` after the oscillation: on an oscillated step the temporal ramp is off."""
    text_gs = oscillation_gs(guidance, i) if text_osci else guidance
    image_gs = oscillation_gs(guidance_img, i) if image_osci else guidance_img
    if image_gs > 1.0 and scale_temporal_osci:
        image_gs = temporal_image_scales(image_gs, i, num_timesteps, num_frames_latent)
    return text_gs, image_gs


def broadcast_frame_scales(scales: np.ndarray, shape, patch_size: int = 2) -> np.ndarray:
    """[T_lat] -> upstream's ``repeat(b, c, 1, h, w)`` then ``pack``: [B, seq, C p^2] matching the packed pred."""
    b, c, t, H, W = shape
    full = np.broadcast_to(np.asarray(scales, F32)[None, None, :, None, None], (b, c, t, H, W))
    return pack(np.ascontiguousarray(full), patch_size)


def guidance_combine(cond, uncond, uncond_2, text_gs, image_gs):
    """v = u2 + g_img (u - u2) + g_txt (c - u), in upstream's order (numpy, torch or MindSpore alike)."""
    return uncond_2 + image_gs * (uncond - uncond_2) + text_gs * (cond - uncond)


# ------------------------------------------------------------------------------------ inference conditioning
def normalize_references(ref, batch: int) -> List[Optional[List[np.ndarray]]]:
    """Per sample a list of reference latents [C, T', H, W] (upstream's ``collect_references_batch`` output), or
    None. Accepts None, an array [B, R, C, T', H, W] (R references per sample) or [B, C, T', H, W] (one), or a
    list with per sample None, an array [C, T', H, W] / [R, C, T', H, W], or a list of [C, T', H, W] arrays."""
    if ref is None:
        return [None] * batch
    if isinstance(ref, np.ndarray) and ref.dtype != object:
        if ref.ndim == 6:
            return [[np.asarray(r, F32) for r in ref[i]] for i in range(batch)]
        if ref.ndim == 5:
            return [[np.asarray(ref[i], F32)] for i in range(batch)]
        raise ValueError(f"reference latents must be [B, R, C, T, H, W] or [B, C, T, H, W], got {ref.shape}")
    out = []
    for r in ref:
        if r is None:
            out.append(None)
        elif isinstance(r, np.ndarray) and r.ndim == 4:
            out.append([np.asarray(r, F32)])
        else:
            out.append([np.asarray(x, F32) for x in r])
    if len(out) != batch:
        raise ValueError(f"{len(out)} reference entries for a batch of {batch}")
    return out


def conditioned_frames(cond_type: str, num_frames_latent: int, causal: bool = True) -> np.ndarray:
    """Which latent frames ``prepare_inference_condition`` conditions (bool [T_lat]); none for images (T = 1)."""
    T = num_frames_latent
    m = np.zeros(T, bool)
    if T <= 1 or cond_type == "t2v":
        return m
    k = (16 if cond_type.endswith("_easy") else 8) + int(causal)
    if cond_type == "i2v_head":
        m[0] = True
    elif cond_type == "i2v_tail":
        m[-1] = True
    elif cond_type == "i2v_loop":
        m[0] = m[-1] = True
    elif cond_type in ("v2v_head", "v2v_head_easy"):
        m[:k] = True
    elif cond_type in ("v2v_tail", "v2v_tail_easy"):
        m[-k:] = True
    else:
        raise ValueError(f"Unknown mask condition {cond_type}")
    return m


def inference_condition(shape, cond_type: str, refs: Sequence, causal: bool = True):
    """``prepare_inference_condition``: (masks [B, 1, T, H, W], masked_ref [B, C, T, H, W]) float32. Per sample
    with a reference (and T > 1): mask 1 on the conditioned frames, the reference latent copied there
    (i2v_head: ref[0][:, 0]; i2v_tail: ref[-1][:, -1]; i2v_loop: both; v2v_*: ref[0]'s first / last k frames,
    k = 8 (16 easy) + causal). A sample without a reference stays unconditioned (upstream prints a warning)."""
    B, C, T, H, W = shape
    masks = np.zeros((B, 1, T, H, W), F32)
    masked = np.zeros((B, C, T, H, W), F32)
    if refs is None:
        assert cond_type == "t2v", f"reference is required for {cond_type}"
        refs = [None] * B
    k = (16 if cond_type.endswith("_easy") else 8) + int(causal)
    for i in range(B):
        ref = refs[i]
        if ref is None and cond_type != "t2v":
            warnings.warn("no reference found. will default to cond_type t2v!")
        if ref is None or T <= 1:
            continue
        if cond_type == "i2v_head":
            masks[i, :, 0] = 1
            masked[i, :, 0] = ref[0][:, 0]
        elif cond_type == "i2v_tail":
            masks[i, :, -1] = 1
            masked[i, :, -1] = ref[-1][:, -1]
        elif cond_type in ("v2v_head", "v2v_head_easy"):
            masks[i, :, :k] = 1
            masked[i, :, :k] = ref[0][:, :k]
        elif cond_type in ("v2v_tail", "v2v_tail_easy"):
            masks[i, :, -k:] = 1
            masked[i, :, -k:] = ref[0][:, -k:]
        elif cond_type == "i2v_loop":
            masks[i, :, 0] = 1
            masks[i, :, -1] = 1
            masked[i, :, 0] = ref[0][:, 0]
            masked[i, :, -1] = ref[-1][:, -1]
        else:
            assert cond_type == "t2v", f"Unknown mask condition {cond_type}"
    return masks, masked


def paste_references(x: np.ndarray, cond_type: str, refs) -> np.ndarray:
    """``api_fn`` after sampling: the reference latent pasted back -- into batch index 0 only, from sample 0's
    references, for i2v_head / i2v_tail / i2v_loop (not v2v), even for a one-frame output (upstream quirks)."""
    x = np.array(x, copy=True)
    if cond_type == "i2v_head":
        x[0, :, :1] = refs[0][0]
    elif cond_type == "i2v_tail":
        x[0, :, -1:] = refs[0][0]
    elif cond_type == "i2v_loop":
        x[0, :, :1] = refs[0][0]
        x[0, :, -1:] = refs[0][1]
    return x


# ------------------------------------------------------------------------------------------- the sampler
class FlowMatchingSampler(SamplerBase):
    """What both ``FlowMatching`` twins share: upstream's sampling options (defaults: ``256px.py``) and the
    per-run bookkeeping. The twins add ``prepare``'s tensors and ``step``.

    Protocol mapping (``SamplerBase``): ``z`` the starting noise [B, 16, T_lat, H_lat, W_lat] (unpacked; the twins
    pack per step, which is a permutation); ``y`` the prompt's T5 features [B, L, 4096]; ``additional_args``:
    ``y_vec`` [B, 768] (CLIP pooled), ``txt_null`` / ``y_vec_null`` (the encodings of the negative prompt,
    upstream default "", [B or 1, ...]; ``y_null`` is an alias of ``txt_null``), ``cond_type`` (str, default
    t2v), ``ref`` (reference latents, see ``normalize_references``), optional ``guidance_img``. ``y_mask`` and
    ``mask`` are not used by 2.0 (no text mask; conditioning by cond type)."""

    def __init__(self, num_sampling_steps=50, guidance=7.5, guidance_img=3.0, text_osci=True, image_osci=True,
                 scale_temporal_osci=True, shift=True, flow_shift=None, method=I2V, patch_size=2,
                 is_causal_vae=True, sigma_min=SIGMA_MIN, **kwargs):
        self.num_sampling_steps = int(num_sampling_steps)
        self.cfg_scale = guidance
        self.guidance_img = guidance_img
        self.text_osci, self.image_osci, self.scale_temporal_osci = text_osci, image_osci, scale_temporal_osci
        self.shift, self.flow_shift = shift, flow_shift
        self.method = method.value if hasattr(method, "value") else str(method)
        if self.method not in (I2V, DISTILLED):
            raise ValueError(f"unknown sampling method {method!r}")
        self.patch_size = patch_size
        self.is_causal_vae = is_causal_vae
        self.sigma_min = sigma_min   # popped and unused by upstream's I2VDenoiser

    # ---- numpy side of prepare -------------------------------------------------------------------------
    def plan(self, z_shape, additional_args=None, guidance_scale=None):
        """Everything framework-free of one run: schedule, per-step scales, ids, conditioning (numpy)."""
        add = dict(additional_args or {})
        B, C, T, H, W = z_shape
        p = self.patch_size
        ts = get_schedule(self.num_sampling_steps, image_seq_len(H, W, p), T, shift=self.shift,
                          shift_alpha_=self.flow_shift)
        steps = len(ts) - 1
        guidance = self.guidance(guidance_scale)
        plan = {"t_list": ts, "timesteps": np.repeat(ts[:-1, None], B, 1).astype(F32), "dts": euler_dts(ts),
                "guidance": guidance, "grid": (T, H // p, W // p)}
        if self.method == DISTILLED:
            return plan
        cond_type = str(np.asarray(add.get("cond_type", "t2v")))
        refs = normalize_references(add.get("ref"), B)
        if cond_type != "t2v" and all(r is None for r in refs):
            warnings.warn("no reference given: cond_type falls back to t2v (as upstream)")
            cond_type = "t2v"
        if cond_type not in COND_TYPES:
            raise ValueError(f"unknown cond_type {cond_type!r}")
        g_img = add.get("guidance_img", self.guidance_img)
        if g_img is None:
            raise ValueError("the i2v method needs guidance_img (upstream fails on None)")
        g_img = float(np.asarray(g_img))
        if cond_type == "t2v":   # api_fn collects references only for the other types
            refs = [None] * B
        masks, masked_ref = inference_condition(z_shape, cond_type, refs, causal=self.is_causal_vae)
        temporal = self.scale_temporal_osci and "i2v" in cond_type   # api_fn: no temporal osci for t2v / v2v
        scales = []
        for i in range(steps):
            text_gs, image_gs = step_guidance(i, len(ts), guidance, g_img, self.text_osci, self.image_osci,
                                              temporal, T)
            if isinstance(image_gs, np.ndarray):
                image_gs = broadcast_frame_scales(image_gs, masked_ref.shape, p)
            scales.append((float(text_gs), image_gs))
        plan.update(cond_type=cond_type, refs=refs, masks=masks, masked_ref=masked_ref,
                    cond=pack(np.concatenate([masks, masked_ref], 1), p), scales=scales, guidance_img=g_img)
        return plan

    @staticmethod
    def text_inputs(y, add, batch, method, y_null=None):
        """numpy txt / y_vec for the batched forward: [prompt, neg, neg] for i2v, the prompt alone for distill."""
        txt = np.asarray(y, F32)
        vec = np.asarray(add["y_vec"], F32)
        if txt.ndim == 4:   # [B, 1, L, C] as the v1.x samplers take it
            txt = txt[:, 0]
        if txt.shape[0] == 1 and batch > 1:
            txt = np.repeat(txt, batch, 0)
        if vec.shape[0] == 1 and batch > 1:
            vec = np.repeat(vec, batch, 0)
        if method == DISTILLED:
            return txt, vec
        neg_txt = y_null if y_null is not None else add.get("txt_null")
        neg_vec = add.get("y_vec_null")
        if neg_txt is None or neg_vec is None:
            raise ValueError("the i2v method needs txt_null and y_vec_null (the encodings of the negative prompt)")
        neg_txt = np.asarray(neg_txt, F32)
        neg_txt = neg_txt[:, 0] if neg_txt.ndim == 4 else neg_txt
        neg_txt = np.broadcast_to(neg_txt, (batch,) + neg_txt.shape[1:])
        neg_vec = np.broadcast_to(np.asarray(neg_vec, F32), (batch,) + vec.shape[1:])
        return (np.concatenate([txt, neg_txt, neg_txt], 0), np.concatenate([vec, neg_vec, neg_vec], 0))

    # ---- the loop ------------------------------------------------------------------------------------
    def sample(self, model, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, noise=None,
               progress=True, y_null=None, callback=None):
        """Euler from t = 1 to 0, then the i2v paste-back (``api_fn``). ``callback(i, z)`` after every step."""
        from tqdm import tqdm

        z = self.as_latent(z)
        state = self.prepare(z, y, y_mask, additional_args, mask, guidance_scale, y_null, model)
        for i in tqdm(range(len(state["timesteps"])), desc="steps", leave=False, disable=not progress):
            z = self.step(model, z, i, state, noise)
            if callback is not None:
                callback(i, z)
        if self.method == I2V and state["cond_type"] in ("i2v_head", "i2v_tail", "i2v_loop"):
            z = self.as_latent(paste_references(self.to_numpy(z), state["cond_type"], state["refs"]))
        return z

    def to_numpy(self, z):
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ training
def training_shift_alpha(latent_shape) -> float:
    """``prepare_inputs``: lin((W_lat H_lat) // 4) sqrt(T_lat) on the (unpacked) x0 latent."""
    T, H, W = latent_shape[-3:]
    return get_lin_function()((W * H) // 4) * math.sqrt(T)


def sigmoid_f32(x) -> np.ndarray:
    """float32 sigmoid (computed in float64, rounded once)."""
    x = np.asarray(x, np.float64)
    return (1.0 / (1.0 + np.exp(-x))).astype(F32)


def sample_training_t(batch: int, latent_shape, noise) -> np.ndarray:
    """t = time_shift(alpha, sigmoid(N(0, 1))) per sample (logit-normal, then the SD3 resolution shift)."""
    t = sigmoid_f32(noise.randn((batch,)))
    return time_shift(training_shift_alpha(latent_shape), t)


def _bt(t, x):
    return np.asarray(t, F32).reshape(-1, *([1] * (x.ndim - 1)))


def noised_latent(x0, x1, t, sigma_min: float = SIGMA_MIN) -> np.ndarray:
    """x_t = t_rev x0 + (1 - (1 - sigma_min) t_rev) x1 with t_rev = 1 - t (float32, upstream's order)."""
    x0, x1 = np.asarray(x0, F32), np.asarray(x1, F32)
    t_rev = F32(1) - _bt(t, x0)
    return (t_rev * x0 + (F32(1) - F32(1 - sigma_min) * t_rev) * x1).astype(F32)


def velocity_target(x0, x1, sigma_min: float = SIGMA_MIN) -> np.ndarray:
    """v = (1 - sigma_min) x1 - x0."""
    return (F32(1 - sigma_min) * np.asarray(x1, F32) - np.asarray(x0, F32)).astype(F32)


def flow_matching_loss(pred, target) -> float:
    """Plain MSE over every element (``F.mse_loss(..., reduction="mean")`` on float32)."""
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return float(np.mean(d * d))


def dropout_condition(prob: float, txt, null_txt, uniforms) -> np.ndarray:
    """``dropout_condition``: sample i gets ``null_txt`` when uniforms[i] < prob (upstream draws
    ``torch.rand(B)``; here the uniforms are given). T5 and CLIP use separate draws, p = 0.31622777 each."""
    txt = np.asarray(txt)
    drop = (np.asarray(uniforms) < prob).reshape(-1, *([1] * (txt.ndim - 1)))
    return np.where(drop, np.asarray(null_txt, txt.dtype), txt)


def pad_null_txt(null_txt, length: int) -> np.ndarray:
    """The T5 null encoding padded to ``length`` tokens by repeating its last token (``prepare_inputs``)."""
    null_txt = np.asarray(null_txt)
    n = length - null_txt.shape[1]
    if n > 0:
        null_txt = np.concatenate([null_txt] + [null_txt[:, -1:]] * n, 1)
    return null_txt


def training_sample(x0_packed, latent_shape, noise, sigma_min: float = SIGMA_MIN) -> Dict[str, np.ndarray]:
    """One batch's flow-matching inputs in upstream's draw order: t ([B] normals) first, then x1 (normals shaped
    like the PACKED x0, ``randn_like``). (Caption dropout, when on, draws uniforms between the two; they come
    from their own source here, ``dropout_condition``.) -> t, x1, x_t, target."""
    x0 = np.asarray(x0_packed, F32)
    t = sample_training_t(x0.shape[0], latent_shape, noise)
    x1 = np.asarray(noise.randn(x0.shape), F32)
    return {"t": t, "x1": x1, "x_t": noised_latent(x0, x1, t, sigma_min), "target": velocity_target(x0, x1, sigma_min)}


def training_condition_options(condition_config: Dict[str, float], num_frames_latent: int,
                               time_compression: int = 4, causal: bool = True) -> Dict[str, float]:
    """``prepare_visual_condition_{causal,uncausal}``: the config minus the v2v types the clip is too short for
    (causal: T_lat <= 32/4 + 1 drops every v2v type, T_lat <= 64/4 + 1 the easy ones; non-causal without the
    +1). Insertion order is kept (it decides ``random.choices``)."""
    opts = dict(condition_config)
    extra = 1 if causal else 0
    if num_frames_latent <= 32 // time_compression + extra:
        for k in ("v2v_head", "v2v_tail", "v2v_head_easy", "v2v_tail_easy"):
            opts.pop(k, None)
    if num_frames_latent <= 64 // time_compression + extra:
        for k in ("v2v_head_easy", "v2v_tail_easy"):
            opts.pop(k, None)
    return opts


def choose_weighted(options: Sequence[str], weights: Sequence[float], u: float) -> str:
    """``random.choices(options, weights, k=1)[0]`` given its one uniform u = ``random()`` (CPython's algorithm)."""
    cum = list(accumulate(weights))
    total = cum[-1] + 0.0
    return options[bisect(cum, u * total, 0, len(options) - 1)]


def sample_condition_types(condition_config: Dict[str, float], num_frames_latent: int, batch: int, rng,
                           time_compression: int = 4, causal: bool = True) -> List[str]:
    """One condition type per sample (``rng.random()`` per sample; ``random.Random(seed)`` gives upstream's
    stream). Images (T_lat = 1) draw nothing and are unconditioned ("t2v")."""
    if num_frames_latent <= 1:
        return ["t2v"] * batch
    opts = training_condition_options(condition_config, num_frames_latent, time_compression, causal)
    names, weights = list(opts), list(opts.values())
    return [choose_weighted(names, weights, float(rng.random())) for _ in range(batch)]


def training_condition_frames(cond_type: str, num_frames_latent: int, time_compression: int = 4,
                              causal: bool = True) -> np.ndarray:
    """Which latent frames carry the condition in training (bool [T_lat]): i2v one frame (head / tail / both);
    v2v the latents of the first / last 33 (easy 65) pixel frames = (ref_t - 1)//4 + 1 = 9 (17) latent frames
    causal, 32//4 = 8 (16) non-causal. The condition latent there is the separately encoded reference."""
    T = num_frames_latent
    m = np.zeros(T, bool)
    if T <= 1 or cond_type == "t2v":
        return m
    if cond_type == "i2v_head":
        m[0] = True
    elif cond_type == "i2v_tail":
        m[-1] = True
    elif cond_type == "i2v_loop":
        m[0] = m[-1] = True
    elif cond_type.startswith("v2v_"):
        ref_t = 65 if "easy" in cond_type else 33
        k = (ref_t - 1) // time_compression + 1 if causal else (ref_t - 1) // time_compression
        if "head" in cond_type:
            m[:k] = True
        else:
            m[-k:] = True
    else:
        raise ValueError(f"Unknown mask condition {cond_type}")
    return m


def training_condition(cond_types: Sequence[str], ref_latents, shape, time_compression: int = 4,
                       causal: bool = True) -> np.ndarray:
    """cond = cat(masks, masks * latent) [B, 1 + C, T, H, W]; ``ref_latents`` [B, C, T, H, W] holds, on the
    conditioned frames, the separately encoded references (upstream encodes them with the VAE per sample)."""
    B, C, T, H, W = shape
    masks = np.zeros((B, 1, T, H, W), F32)
    for i, ct in enumerate(cond_types):
        masks[i, :, training_condition_frames(ct, T, time_compression, causal)] = 1
    latent = masks * np.asarray(ref_latents, F32)
    return np.concatenate([masks, latent], 1)
