"""Pieces both text encoders need that the layer kit does not have: inference dropout and transformers'
activations under their config names (``ACT2FN``), written with the reference's op order."""
import math

import mindspore as ms
from mindspore import mint, nn, ops

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class Dropout(nn.Cell):
    """``nn.Dropout(p)`` twin: identity unless training (``mint`` dropout is unregistered on CPU)."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = float(p)

    def construct(self, x):
        if self.training and self.p > 0:
            return ops.dropout(x, p=self.p)
        return x


class NewGELU(nn.Cell):
    """transformers ``gelu_new`` (T5 v1.1 ``gated-gelu``): the tanh formula written out, as the reference."""

    def construct(self, x):
        return 0.5 * x * (1.0 + ops.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * mint.pow(x, 3.0))))


class GELUTanh(nn.Cell):
    """transformers ``gelu_pytorch_tanh``: torch's fused tanh GELU."""

    def construct(self, x):
        return ops.gelu(x, approximate="tanh")


class GELU(nn.Cell):
    """transformers ``gelu``: exact erf GELU."""

    def construct(self, x):
        return ops.gelu(x, approximate="none")


class QuickGELU(nn.Cell):
    """transformers ``quick_gelu`` (CLIP): x * sigmoid(1.702 x)."""

    def construct(self, x):
        return x * ops.sigmoid(1.702 * x)


class ReLU(nn.Cell):
    def construct(self, x):
        return ops.relu(x)


class SiLU(nn.Cell):
    def construct(self, x):
        return mint.nn.functional.silu(x)


ACT2CLS = {"gelu_new": NewGELU, "gelu_pytorch_tanh": GELUTanh, "gelu": GELU, "quick_gelu": QuickGELU,
           "relu": ReLU, "silu": SiLU, "swish": SiLU}


def get_activation(name):
    if name not in ACT2CLS:
        raise ValueError(f"activation {name!r} is not ported; known: {sorted(ACT2CLS)}")
    return ACT2CLS[name]()


def to_tensor(x, dtype=ms.int32):
    """numpy / list / Tensor -> Tensor of ``dtype`` (the twins accept the same numpy inputs)."""
    if isinstance(x, ms.Tensor):
        return x.astype(dtype)
    import numpy as np

    return ms.Tensor(np.asarray(x)).astype(dtype)


_MASKED = -1e30  # finite "minus infinity": a fully masked row gives a uniform softmax, not NaN


def attention(q, k, v, mask=None, bias=None, scale=1.0, scores_fp32=True):
    """softmax(q k^T * scale + bias, masked) v with an fp32 softmax.

    ``scores_fp32`` (default): q and k are widened to fp32 before their product, so in fp16 the scores are
    not rounded to fp16 before the softmax -- what torch's CPU SDPA does for half inputs (fp32 accumulators
    for q k^T, probabilities cast back to the input dtype before the product with v). T5's logits are not
    scaled by 1/sqrt(d), so the rounding matters there: noise-floor ratio of the T5 attention fp16 case 1.17
    with fp16-rounded scores (the layer kit's math path), 1.04 with this (gate 1.2); CLIP 1.035 vs 1.029.
    Off: scores in the input dtype. ``mask`` is boolean, True = attend; ``bias`` is additive.
    """
    dtype = v.dtype
    if scores_fp32:
        q, k = q.astype(ms.float32), k.astype(ms.float32)
    if scale != 1.0:
        q = q * scale
    scores = mint.matmul(q, mint.transpose(k, -2, -1)).astype(ms.float32)
    if bias is not None:
        scores = scores + bias.astype(ms.float32)
    if mask is not None:
        scores = scores.masked_fill(mint.logical_not(mask), _MASKED)
    probs = mint.softmax(scores, dim=-1).astype(dtype)
    return mint.matmul(probs, v)

