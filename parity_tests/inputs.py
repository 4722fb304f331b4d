"""Inputs and randomised references the parity case tables share."""
import functools

import numpy as np

from parity_tests.engine import fill_zero_parameters


def randn(rng, *shape, scale=1.0):
    """float32 standard normals of ``shape`` (times ``scale``) from a numpy Generator."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def randomized(factory):
    """Build the reference with ``factory``, then fill the parameters upstream zero-initialises with small random
    values (final layers, some projections, biases): a zero weight tests nothing."""
    @functools.wraps(factory)
    def build_random():
        module = factory()
        fill_zero_parameters(module)
        return module
    return build_random


def pack_text(y, mask):
    """Upstream's ``encode_text`` packing (STDiT cross-attention): the valid tokens of all samples in one
    sequence [1, N, C], plus ``y_lens``."""
    m = mask.bool()
    return y[m][None], m.sum(1).tolist()
