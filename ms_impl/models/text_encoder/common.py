"""Pieces both text encoders need that the layer kit does not have: inference dropout and transformers'
activations under their config names (``ACT2FN``), written with the reference's op order."""
import math

import mindspore as ms
from mindspore import mint, nn, ops

from ms_impl.layers import SiLU

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


ACT2CLS = {"gelu_new": NewGELU, "gelu_pytorch_tanh": GELUTanh, "gelu": GELU, "quick_gelu": QuickGELU,
           "relu": ReLU, "silu": SiLU, "swish": SiLU}  # SiLU: the layer kit's


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
