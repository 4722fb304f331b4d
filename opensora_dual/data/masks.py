"""Training-time frame masks of Open-Sora v1.1/v1.2 (upstream ``opensora/utils/train_utils.py::MaskGenerator``).

A mask is bool [T] over the (latent) frames of a sample: True = the frame is noised and trained on, False = a
conditioning frame (kept at its clean value, no loss) -- upstream's convention (``torch.ones`` with zeros written
at the conditioning frames).

Mask names and what they condition on (``q = max(1, T // 4)``, sizes drawn uniformly, bounds inclusive):

=====================  ====================================================================================
identity               nothing (all True); takes the probability the other names leave
quarter_random         a run of 1..q frames at a random position
quarter_head / _tail   the first / last 1..q frames
quarter_head_tail      the first k and the last k frames, k in 1..q (one draw for both ends)
image_random           one frame at a random position
image_head / _tail     the first / last frame
image_head_tail        the first and the last frame
random                 r ~ U(0.1, 0.9), then each frame is True when a U(0, 1) draw is > r; if no frame is True
                       the last one is set True
intepolate             (upstream's spelling) every other frame, starting at frame 0 or 1 (one draw)
=====================  ====================================================================================

The name is chosen with one draw u ~ U(0, 1) against the cumulative ratios in the dict's order (``u < acc``);
``identity`` is appended with ``1 - sum`` when missing. A sample with T <= 1 always gets the all-True mask.

Randomness comes from the numpy ``Generator`` argument, so two training twins handed generators in the same state
build the same masks. (Upstream draws from Python's global ``random`` and ``torch.rand``: the distribution is the
same, the streams are not.)
"""
import math
from collections.abc import Mapping
from numbers import Integral, Real
from types import MappingProxyType

import numpy as np

from opensora_dual.data.errors import DataError

MASK_NAMES = (
    "identity",
    "quarter_random", "quarter_head", "quarter_tail", "quarter_head_tail",
    "image_random", "image_head", "image_tail", "image_head_tail",
    "random", "intepolate",
)

# Presets (read-only mappings; ``dict(preset)`` gives an editable copy).
# configs/opensora-v1-1/train/stage1.py (v1.1.0), identity given explicitly
MASK_RATIOS_V1_1 = MappingProxyType({
    "identity": 0.75,
    "quarter_random": 0.025,
    "quarter_head": 0.025,
    "quarter_tail": 0.025,
    "quarter_head_tail": 0.05,
    "image_random": 0.025,
    "image_head": 0.025,
    "image_tail": 0.025,
    "image_head_tail": 0.05,
})

# configs/opensora-v1-2/train/stage1.py and stage2.py (v1.2.0): identity = 0.8
MASK_RATIOS_V1_2_STAGE1 = MappingProxyType({
    "random": 0.05,
    "intepolate": 0.005,
    "quarter_random": 0.005,
    "quarter_head": 0.005,
    "quarter_tail": 0.005,
    "quarter_head_tail": 0.005,
    "image_random": 0.025,
    "image_head": 0.05,
    "image_tail": 0.025,
    "image_head_tail": 0.025,
})
MASK_RATIOS_V1_2_STAGE2 = MASK_RATIOS_V1_2_STAGE1

# configs/opensora-v1-2/train/stage3.py (v1.2.0): 25% masked, identity = 0.75
MASK_RATIOS_V1_2_STAGE3 = MappingProxyType({
    "random": 0.01,
    "intepolate": 0.002,
    "quarter_random": 0.002,
    "quarter_head": 0.002,
    "quarter_tail": 0.002,
    "quarter_head_tail": 0.002,
    "image_random": 0.0,
    "image_head": 0.22,
    "image_tail": 0.005,
    "image_head_tail": 0.005,
})

_SUM_TOL = 1e-6  # upstream's math.isclose(sum, 1.0, abs_tol=1e-6)


def _check_generator(rng):
    if not isinstance(rng, np.random.Generator):
        raise DataError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def _check_frames(num_frames):
    if not isinstance(num_frames, Integral) or isinstance(num_frames, bool) or num_frames < 0:
        raise DataError(f"num_frames must be a non-negative integer, got {num_frames!r}")
    return int(num_frames)


class MaskGenerator:
    """``MaskGenerator(mask_ratios)``: name -> probability (see the module docstring). The dict is copied, never
    modified; ``self.mask_ratios`` is the validated copy, identity included."""

    def __init__(self, mask_ratios):
        if not isinstance(mask_ratios, Mapping) or not mask_ratios:
            raise DataError(f"mask_ratios must be a non-empty dict name -> probability, got {mask_ratios!r}")
        ratios = {}
        for name, value in mask_ratios.items():
            if name not in MASK_NAMES:
                raise DataError(f"unknown mask name {name!r}; valid names: {', '.join(MASK_NAMES)}")
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
                raise DataError(f"mask ratio of {name!r} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= float(value) <= 1.0:
                raise DataError(f"mask ratio of {name!r} must be in [0, 1], got {value!r}")
            ratios[name] = float(value)
        total = sum(ratios.values())
        if "identity" not in ratios:
            if total > 1.0 + _SUM_TOL:  # upstream would accept it with a negative identity
                raise DataError(f"mask ratios sum to {total:.6g} > 1 (identity takes the rest, it cannot be "
                                f"negative)")
            ratios["identity"] = max(0.0, 1.0 - total)
        elif abs(total - 1.0) > _SUM_TOL:
            raise DataError(f"mask ratios (identity included) must sum to 1, got {total:.6g}")
        self.mask_ratios = ratios

    def draw_name(self, rng):
        """One mask name, by one draw u ~ U(0, 1) against the cumulative ratios (``u < acc``). A u left over by
        rounding (sum slightly < 1) gives ``identity``, as upstream's fall-through does."""
        _check_generator(rng)
        u = rng.random()
        acc = 0.0
        for name, ratio in self.mask_ratios.items():
            acc += ratio
            if u < acc:
                return name
        return "identity"

    def mask_for(self, name, num_frames, rng):
        """The bool [num_frames] mask of a given name (draws its sizes / positions from ``rng``)."""
        if name not in MASK_NAMES:
            raise DataError(f"unknown mask name {name!r}; valid names: {', '.join(MASK_NAMES)}")
        _check_generator(rng)
        T = _check_frames(num_frames)
        mask = np.ones(T, dtype=bool)
        if T <= 1:
            return mask
        # upstream uses T // 4, and random.randint(1, 0) raises for T = 2, 3: at least one frame here
        q = max(1, T // 4)

        def size():
            return int(rng.integers(1, q, endpoint=True))

        if name == "quarter_random":
            k = size()
            start = int(rng.integers(0, T - k, endpoint=True))
            mask[start:start + k] = False
        elif name == "image_random":
            mask[int(rng.integers(0, T - 1, endpoint=True))] = False
        elif name == "quarter_head":
            mask[:size()] = False
        elif name == "image_head":
            mask[0] = False
        elif name == "quarter_tail":
            mask[T - size():] = False
        elif name == "image_tail":
            mask[-1] = False
        elif name == "quarter_head_tail":
            k = size()
            mask[:k] = False
            mask[T - k:] = False
        elif name == "image_head_tail":
            mask[0] = False
            mask[-1] = False
        elif name == "intepolate":
            mask[int(rng.integers(0, 1, endpoint=True))::2] = False
        elif name == "random":
            ratio = rng.uniform(0.1, 0.9)
            mask = rng.random(T) > ratio
        if not mask.any():
            mask[-1] = True
        return mask

    def get_mask(self, num_frames, rng, return_name=False):
        """bool [num_frames]: a name drawn with ``draw_name``, then its mask. ``return_name=True`` gives
        ``(mask, name)``."""
        name = self.draw_name(rng)
        mask = self.mask_for(name, num_frames, rng)
        return (mask, name) if return_name else mask

    def get_masks(self, batch_size, num_frames, rng):
        """bool [batch_size, num_frames]: one ``get_mask`` per sample, in order."""
        if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 0:
            raise DataError(f"batch_size must be a non-negative integer, got {batch_size!r}")
        T = _check_frames(num_frames)
        masks = np.ones((int(batch_size), T), dtype=bool)
        for i in range(int(batch_size)):
            masks[i] = self.get_mask(T, rng)
        return masks
