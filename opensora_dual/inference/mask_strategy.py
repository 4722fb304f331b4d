"""Mask strategies of Open-Sora v1.2 (``opensora/utils/inference_utils.py``): which latent frames are copied
from reference latents, and the per-frame mask the rectified-flow sampler receives.

A strategy string is ``";"``-separated groups of up to six comma-separated numbers

    loop_id, ref_id, ref_start, target_start, length, edit_ratio

with missing trailing fields taken from ``MASK_DEFAULT`` = 0,0,0,0,1,0. In v1.2 all indices count **latent**
frames (17 pixel frames = 5 latent frames). Negative starts count from the end. ``edit_ratio`` is the mask value
of the pasted frames: 0 = keep the reference, 1 = regenerate, in between = edit. Examples: ``"0"`` (first frame
= the image: image-to-video), ``"0,0,-8,0,8"`` (continue a video), ``"0,0,0,0,15,0.8"`` (edit),
``"0;0,1,0,-1,1"`` (connect two images).

Framework-free: latents are numpy arrays ``[B, C, T, H, W]`` / ``[C, T, H, W]``.
"""
import math
from numbers import Integral

import numpy as np

from opensora_dual.inference.errors import InferenceInputError

MASK_DEFAULT = ["0", "0", "0", "0", "1", "0"]

_FIELDS = ("loop_id", "ref_id", "ref_start", "target_start", "length", "edit_ratio")


def parse_mask_strategy(mask_strategy):
    """``"0;0,1,0,-1,1"`` -> ``[[0, 0, 0, 0, 1, 0.0], [0, 1, 0, -1, 1, 0.0]]``; ``""`` / None -> ``[]``.

    Each group is padded from ``MASK_DEFAULT``; the first five fields go through ``int()``, the sixth through
    ``float()`` (so surrounding spaces are allowed, as upstream). Differences from upstream: an empty group
    (``"0;"``), more than six fields, a field that is not a number, and an edit ratio that is not a finite value
    in [0, 1] raise ``InferenceInputError`` (upstream: assert / ValueError / accepted).
    """
    if mask_strategy is None or mask_strategy == "":
        return []
    if not isinstance(mask_strategy, str):
        raise InferenceInputError(f"mask strategy must be a string, got {mask_strategy!r}")
    groups = []
    for group in mask_strategy.split(";"):
        fields = group.split(",")
        if len(fields) > 6:
            raise InferenceInputError(
                f"mask strategy group {group!r} has {len(fields)} fields, at most 6 ({', '.join(_FIELDS)})")
        fields = fields + MASK_DEFAULT[len(fields):]
        values = []
        for name, text in zip(_FIELDS, fields):
            try:
                values.append(float(text) if name == "edit_ratio" else int(text))
            except ValueError:
                kind = "a number" if name == "edit_ratio" else "an integer"
                raise InferenceInputError(
                    f"mask strategy group {group!r}: {name} {text!r} is not {kind} (in {mask_strategy!r})") from None
        edit = values[5]
        if not (math.isfinite(edit) and 0.0 <= edit <= 1.0):
            raise InferenceInputError(f"mask strategy group {group!r}: edit_ratio must be in [0, 1], got {edit}")
        groups.append(values)
    return groups


def find_nearest_point(value, point, max_value):
    """``value`` snapped to a multiple of ``point`` (upstream): round down, or up when the remainder is more than
    half of ``point`` and the next multiple still leaves a whole ``point`` before ``max_value``."""
    t = value // point
    if value % point > point / 2 and t < max_value // point - 1:
        t += 1
    return t * point


def _check_latents(z):
    if not isinstance(z, np.ndarray) or z.ndim != 5:
        raise InferenceInputError(
            f"z must be a numpy array [B, C, T, H, W], got {type(z).__name__} {getattr(z, 'shape', '')}")
    if not np.issubdtype(z.dtype, np.floating):
        raise InferenceInputError(f"z must be a float array, got dtype {z.dtype}")


def apply_mask_strategy(z, refs_x, mask_strategys, loop_i, align=None):
    """Paste reference latents into ``z`` (in place) for the groups of loop ``loop_i`` and return the mask.

    z: float array [B, C, T, H, W]; refs_x: per sample, a list of reference latents [C, T_ref, H, W] (or None /
    [] when the sample has none); mask_strategys: per sample, a strategy string (or "" / None).
    Returns float32 [B, T]: 1 everywhere except the pasted frames, which get the group's edit ratio; or None when
    ``mask_strategys`` is an empty list. Any non-empty list gives a mask, all ones for "" strategies (upstream
    quirk: plain text-to-video thus samples with an all-ones mask).

    Per group: negative starts count from the end (T_ref for ref_start, T for target_start); with ``align``
    both starts are snapped with ``find_nearest_point``; length = min(length, T - target_start,
    T_ref - ref_start). A negative ref_id counts from the end of the sample's reference list (Python indexing,
    as upstream).

    Differences from upstream (which crashes or silently pastes the wrong frames): a ref_id with no such
    reference, a start outside the video or the reference, a resulting length <= 0, a reference whose C/H/W differ
    from z's, or a strategy list whose length differs from the batch raise ``InferenceInputError``.
    """
    _check_latents(z)
    if len(mask_strategys) == 0:
        return None
    B, C, T, H, W = z.shape
    if len(mask_strategys) != B:
        raise InferenceInputError(f"got {len(mask_strategys)} mask strategies for a batch of {B}")
    if align is not None and (not isinstance(align, Integral) or align < 1):
        raise InferenceInputError(f"align must be a positive integer or None, got {align!r}")
    masks = []
    for i, strategy in enumerate(mask_strategys):
        mask = np.ones(T, dtype=np.float32)
        refs = refs_x[i] if i < len(refs_x) and refs_x[i] is not None else []
        for group in parse_mask_strategy(strategy):
            loop_id, ref_id, ref_start, target_start, length, edit_ratio = group
            if loop_id != loop_i:
                continue
            where = f"sample {i}, mask strategy group {','.join(str(v) for v in group)} (in {strategy!r})"
            if not -len(refs) <= ref_id < len(refs):
                raise InferenceInputError(f"{where}: reference {ref_id} does not exist, the sample has {len(refs)}")
            ref = np.asarray(refs[ref_id])
            if ref.ndim != 4 or (ref.shape[0], ref.shape[2], ref.shape[3]) != (C, H, W):
                raise InferenceInputError(
                    f"{where}: reference latent shape {ref.shape} does not match z's [C={C}, T, H={H}, W={W}]")
            t_ref = ref.shape[1]
            if ref_start < 0:
                ref_start += t_ref
            if target_start < 0:
                target_start += T
            if not 0 <= ref_start < t_ref:
                raise InferenceInputError(f"{where}: ref_start is outside the reference's {t_ref} latent frames")
            if not 0 <= target_start < T:
                raise InferenceInputError(f"{where}: target_start is outside the video's {T} latent frames")
            if align is not None:
                ref_start = find_nearest_point(ref_start, align, t_ref)
                target_start = find_nearest_point(target_start, align, T)
            length = min(length, T - target_start, t_ref - ref_start)
            if length <= 0:
                raise InferenceInputError(f"{where}: no frame to copy (length {length})")
            z[i, :, target_start:target_start + length] = ref[:, ref_start:ref_start + length]
            mask[target_start:target_start + length] = edit_ratio
        masks.append(mask)
    return np.stack(masks)


def append_generated(generated_latents, refs_x, mask_strategys, loop_i, condition_frame_length,
                     condition_frame_edit):
    """Loop extension (upstream ``append_generated`` without the VAE): make the previous clip a reference.

    generated_latents: [B, C, T, H, W], the VAE encoding of the previous loop's decoded video. Sample j's latent
    is appended to ``refs_x[j]`` (a None entry becomes a new list) and
    ``"{loop_i},{len(refs_x[j]) - 1},-{L},0,{L},{condition_frame_edit}"`` (L = condition_frame_length) to
    ``mask_strategys[j]``, after a ``";"`` when that is non-empty: the last L latent frames of the previous clip
    become the first L frames of this loop. Both lists are updated in place and returned.

    Difference from upstream: a None entry in ``refs_x`` works (upstream replaces it but then takes ``len(None)``,
    a TypeError); mismatched batch sizes and a non-positive ``condition_frame_length`` raise
    ``InferenceInputError``.
    """
    _check_latents(generated_latents)
    B = generated_latents.shape[0]
    if len(refs_x) != B or len(mask_strategys) != B:
        raise InferenceInputError(
            f"append_generated: {B} generated latents but {len(refs_x)} reference lists and "
            f"{len(mask_strategys)} mask strategies")
    if not isinstance(condition_frame_length, Integral) or condition_frame_length < 1:
        raise InferenceInputError(
            f"condition_frame_length must be a positive integer, got {condition_frame_length!r}")
    for j in range(B):
        latent = np.array(generated_latents[j], copy=True)
        if refs_x[j] is None:
            refs_x[j] = []
        refs_x[j].append(latent)
        strategy = mask_strategys[j]
        strategy = "" if strategy is None or strategy == "" else strategy + ";"
        length = condition_frame_length
        mask_strategys[j] = (
            f"{strategy}{loop_i},{len(refs_x[j]) - 1},-{length},0,{length},{condition_frame_edit}")
    return refs_x, mask_strategys


def dframe_to_frame(num):
    """Latent frames -> pixel frames of the v1.2 VAE: ``num // 5 * 17``; ``num`` must be a multiple of 5."""
    if not isinstance(num, Integral) or isinstance(num, bool) or num % 5 != 0:
        raise InferenceInputError(f"latent frame count must be a multiple of 5, got {num!r}")
    return num // 5 * 17
