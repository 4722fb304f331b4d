"""Injectable random draws for samplers.

Every random number a sampler uses (the starting latent, the noise that frames get when they first become
active) comes from a *noise source*: an object with ``randn(shape) -> np.float32 array``. Both twins call it
in the same order with the same shapes, so one source replays the same numbers in PyTorch and MindSpore.
``pt_reference.schedulers.noise.TorchNoise`` draws with torch's generator, which reproduces upstream's
numbers for the same seed.
"""
from typing import List, Sequence

import numpy as np


class NumpyNoise:
    """Standard normal float32 draws from ``np.random.default_rng(seed)``."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        return self.rng.standard_normal(tuple(shape), dtype=np.float32)


class RecordingNoise:
    """Wraps a source and keeps every draw (``draws``), so a second run can replay them."""

    def __init__(self, source):
        self.source = source
        self.draws: List[np.ndarray] = []

    def randn(self, shape):
        a = np.asarray(self.source.randn(shape), np.float32)
        self.draws.append(a.copy())
        return a

    def replay(self) -> "ReplayNoise":
        return ReplayNoise(self.draws)


class ReplayNoise:
    """Hands out recorded draws in order; a shape mismatch or running out is an error (not a silent redraw)."""

    def __init__(self, draws):
        self.draws = list(draws)
        self.i = 0

    def randn(self, shape):
        if self.i >= len(self.draws):
            raise RuntimeError(f"replayed noise exhausted after {self.i} draws")
        a = self.draws[self.i]
        if tuple(a.shape) != tuple(shape):
            raise RuntimeError(f"replayed draw {self.i} has shape {a.shape}, the sampler asked for {tuple(shape)}")
        self.i += 1
        return a.copy()
