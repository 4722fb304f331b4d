"""The layer kit, MindSpore side: thin cells that pick the kernel per device.

Decision (issue 2): parameters keep PyTorch names (``weight``, ``bias``) on every device, so upstream and
reference checkpoints map one to one. MindSpore-native names (``gamma``/``beta``, ``embedding_table``) are a
dialect only the converter speaks.

Mixed precision: parameters are stored in fp32 (master weights). Each matmul/conv cell has a
``compute_dtype`` (fp32 by default; ``set_compute_dtype(net, ms.float16)`` switches a whole network) and
casts input and weights to it. Norms always compute in fp32 and return the input's dtype.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

from ms_impl.device import on_ascend


def _uniform_bias(fan_in, shape):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return Parameter(initializer(Uniform(bound), shape, ms.float32), name="bias")


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _offsets(ks):
    """Every kernel offset, e.g. (3, 3) -> ((0, 0), (0, 1), ..., (2, 2))."""
    if len(ks) == 1:
        return tuple((i,) for i in range(ks[0]))
    return tuple((i,) + rest for i in range(ks[0]) for rest in _offsets(ks[1:]))


def _pad_arg(padding):
    """Symmetric conv padding (p_d1, p_d2, ...) -> ops.pad's last-dim-first pairs, or None."""
    if not any(padding):
        return None
    pads = ()
    for p in reversed(padding):
        pads += (p, p)
    return pads


class _Compute(nn.Cell):
    """Base of cells with a switchable compute dtype.

    Low precision on CPU emulates what Ascend's cube unit does: operands rounded to the compute dtype,
    accumulation (and the bias add) in fp32, one rounding of the result. The CPU fp16 kernels round the
    matmul/conv output before the bias is added, which measured 1.22-1.36x torch-fp16's error against fp64
    (parity_tests/test_layers.py); this path measures 1.00x.
    """

    compute_dtype = ms.float32
    _emulate_low_precision = not on_ascend()

    def _cast(self, x):
        # Skip same-dtype casts: in PyNative each one is a kernel launch (graph mode folds them anyway).
        if x.dtype == self.compute_dtype:
            return x
        return x.astype(self.compute_dtype)

    def _operands(self, x, w, b):
        """(x, w, b, out_dtype): fp32 operands holding compute-dtype values on CPU low precision."""
        dt = self.compute_dtype
        x, w = self._cast(x), self._cast(w)
        b = None if b is None else self._cast(b)
        if self._emulate_low_precision and dt != ms.float32:
            x, w = x.astype(ms.float32), w.astype(ms.float32)
            b = None if b is None else b.astype(ms.float32)
        return x, w, b, dt

    def _finish(self, y, dt):
        return y if y.dtype == dt else y.astype(dt)


class Linear(_Compute):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(initializer(HeUniform(math.sqrt(5)), (out_features, in_features), ms.float32),
                                name="weight")
        self.bias = _uniform_bias(in_features, (out_features,)) if bias else None

    def construct(self, x):
        x, w, b, dt = self._operands(x, self.weight, self.bias)
        return self._finish(mint.nn.functional.linear(x, w, b), dt)


class LayerNorm(nn.Cell):
    """torch.nn.LayerNorm semantics. CPU: ``ops.LayerNorm`` primitive (mint's LayerNormExt is Ascend-only)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape = _tuple(normalized_shape, 1)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(initializer("ones", self.normalized_shape, ms.float32), name="weight")
            self.bias = Parameter(initializer("zeros", self.normalized_shape, ms.float32), name="bias") if bias else None
        else:
            self.weight, self.bias = None, None
        # Constant stand-ins when there is no affine (or no bias): the primitive always takes gamma and beta.
        self._ones = Tensor(np.ones(self.normalized_shape, np.float32))
        self._zeros = Tensor(np.zeros(self.normalized_shape, np.float32))
        self.use_fused = on_ascend()
        axis = -len(self.normalized_shape)
        self._ln = ops.LayerNorm(begin_norm_axis=axis, begin_params_axis=axis, epsilon=eps)

    def construct(self, x):
        dtype = x.dtype
        gamma = self._ones if self.weight is None else self.weight
        beta = self._zeros if self.bias is None else self.bias
        x32 = x.astype(ms.float32)
        if self.use_fused:  # Ascend: fused LayerNormExt
            y = mint.nn.functional.layer_norm(x32, self.normalized_shape, gamma, beta, self.eps)
        else:
            y = self._ln(x32, gamma, beta)[0]
        return y.astype(dtype)


class RMSNorm(nn.Cell):
    """LlamaRMSNorm: fp32 statistics, cast back, then weight (same op order as the reference)."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = Parameter(initializer("ones", (hidden_size,), ms.float32), name="weight")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        dtype = hidden_states.dtype
        h = hidden_states.astype(ms.float32)
        variance = mint.mean(mint.pow(h, 2), -1, keepdim=True)
        h = h * mint.rsqrt(variance + self.variance_epsilon)
        return self.weight.astype(dtype) * h.astype(dtype)


class GroupNorm(nn.Cell):
    """torch.nn.GroupNorm semantics; ``mint.nn.functional.group_norm`` runs on CPU and Ascend. fp32 compute."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = Parameter(initializer("ones", (num_channels,), ms.float32), name="weight")
            self.bias = Parameter(initializer("zeros", (num_channels,), ms.float32), name="bias")
        else:
            self.weight, self.bias = None, None

    def construct(self, x):
        dtype = x.dtype
        y = mint.nn.functional.group_norm(x.astype(ms.float32), self.num_groups, self.weight, self.bias, self.eps)
        return y.astype(dtype)


class _ConvNd(_Compute):
    nd = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        super().__init__()
        n = self.nd
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _tuple(kernel_size, n)
        self.stride = _tuple(stride, n)
        self.padding = _tuple(padding, n)
        self.dilation = _tuple(dilation, n)
        self.groups = groups
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(initializer(HeUniform(math.sqrt(5)), shape, ms.float32), name="weight")
        fan_in = (in_channels // groups) * int(np.prod(self.kernel_size))
        self.bias = _uniform_bias(fan_in, (out_channels,)) if bias else None
        self.use_mint = on_ascend()
        # Switch (``set_conv_impl``): "im2col" computes the conv as one matmul over the k^d gathered views; the
        # CPU default, since MindSpore 2.10's CPU ops.conv2d/conv3d are a naive kernel (3x3 conv 128->128 on
        # 4x64x64: ~16 s vs ~0.2 s in PyTorch; im2col 0.58 s). Costs k^d x the input in memory for the conv.
        # "native" is the device kernel (the Ascend default).
        self.conv_impl = "native" if on_ascend() else "im2col"
        self._offs = _offsets(self.kernel_size)
        self._pads = _pad_arg(self.padding)

    def construct(self, x):
        x, w, b, dt = self._operands(x, self.weight, self.bias)
        if self.conv_impl == "im2col" and self.groups == 1:
            return self._finish(self._im2col(x, w, b), dt)
        return self._finish(self._conv(x, w, b), dt)

    def _im2col(self, x, w, b):
        """One matmul over the gathered views; offsets and pads are constants, so ms.jit unrolls the loop."""
        if self._pads is not None:
            x = ops.pad(x, self._pads, mode="constant", value=0.0)
        bsz, cin, cout, k = x.shape[0], x.shape[1], w.shape[0], len(self._offs)
        views = ()
        for off in self._offs:
            views += (self._view(x, off),)
        out = views[0].shape[2:]
        if k == 1:
            cols = views[0].reshape(bsz, cin, -1)
            w2 = w.reshape(cout, cin)
        else:
            cols = mint.cat(views, dim=1).reshape(bsz, k * cin, -1)                 # [B, K*Cin, N]
            w2 = mint.transpose(w.reshape(cout, cin, k), 1, 2).reshape(cout, -1)    # [Cout, K*Cin]
        y = mint.matmul(w2, cols)                                                   # [B, Cout, N]
        if b is not None:
            y = y + b.reshape(1, cout, 1)
        return y.reshape((bsz, cout) + out)


class Conv2d(_ConvNd):
    nd = 2

    def _view(self, x, off):
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        h0, w0 = off[0] * dh, off[1] * dw
        return x[:, :, h0:h0 + sh * (oh - 1) + 1:sh, w0:w0 + sw * (ow - 1) + 1:sw]

    def _conv(self, x, w, b):
        if self.use_mint:  # Ascend: Conv2DExt
            return mint.nn.functional.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return ops.conv2d(x, w, b, self.stride, "pad", self.padding, self.dilation, self.groups)


class Conv3d(_ConvNd):
    """Note for Ascend: Conv3D has no fp32 kernel there; models set ``compute_dtype`` to fp16/bf16 on Ascend."""

    nd = 3

    def _view(self, x, off):
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        dt, dh, dw = self.dilation
        ot = (x.shape[2] - dt * (kt - 1) - 1) // st + 1
        oh = (x.shape[3] - dh * (kh - 1) - 1) // sh + 1
        ow = (x.shape[4] - dw * (kw - 1) - 1) // sw + 1
        t0, h0, w0 = off[0] * dt, off[1] * dh, off[2] * dw
        return x[:, :, t0:t0 + st * (ot - 1) + 1:st, h0:h0 + sh * (oh - 1) + 1:sh, w0:w0 + sw * (ow - 1) + 1:sw]

    def _conv(self, x, w, b):
        if self.use_mint:  # Ascend: Conv3DExt
            return mint.nn.functional.conv3d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return ops.conv3d(x, w, b, self.stride, "pad", self.padding, self.dilation, self.groups)


class Embedding(nn.Cell):
    """torch.nn.Embedding with the torch parameter name ``weight`` (nn.Embedding would call it embedding_table)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(initializer("normal", (num_embeddings, embedding_dim), ms.float32), name="weight")

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


_GELU_TANH_2C = 2.0 * math.sqrt(2.0 / math.pi)


class GELU(nn.Cell):
    """GELU; ``approximate="tanh"`` on CPU is computed as x * sigmoid(2c(x + 0.044715 x^3)), which equals
    0.5 x (1 + tanh(c(...))) and runs 4x faster than ``ops.gelu`` there (25 ms vs 106 ms on 4.7M elements;
    1.3e-7 from fp64). In fp32, since x^3 overflows fp16. Ascend keeps the fused kernel."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate
        self.sigmoid_form = approximate == "tanh" and not on_ascend()

    def construct(self, x):
        if self.sigmoid_form:
            x32 = x.astype(ms.float32)
            y = x32 * ops.sigmoid(_GELU_TANH_2C * (x32 + 0.044715 * x32 * x32 * x32))
            return y.astype(x.dtype)
        return ops.gelu(x, approximate=self.approximate)


class SiLU(nn.Cell):
    """Computed in fp32 and cast back (fp16 SiLU measured 2.15x torch-fp16's error against fp64)."""

    def construct(self, x):
        if x.dtype == ms.float32:
            return mint.nn.functional.silu(x)
        return mint.nn.functional.silu(x.astype(ms.float32)).astype(x.dtype)


class Identity(nn.Cell):
    def construct(self, x):
        return x


CONV_IMPLS = ("native", "im2col")


def set_conv_impl(net: nn.Cell, impl: str) -> nn.Cell:
    """Switch every Conv2d/Conv3d of ``net`` to ``"native"`` (device kernel) or ``"im2col"`` (one matmul)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    for _, cell in net.cells_and_names():
        if isinstance(cell, _ConvNd):
            cell.conv_impl = impl
    return net


def set_compute_dtype(net: nn.Cell, dtype) -> nn.Cell:
    """Switch every matmul/conv cell (and cells that declare ``compute_dtype``) to ``dtype``.

    Norms and softmax stay fp32 regardless. Returns ``net``.
    """
    for _, cell in net.cells_and_names():
        if isinstance(cell, _Compute) or "compute_dtype" in vars(cell):
            cell.compute_dtype = dtype
    return net
