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


def unbind(x, dim=0):
    """The slices of ``x`` along ``dim`` (``torch.unbind``), for PyNative and graph mode alike.

    Not ``x[0], x[1], ...``: in graph mode an integer index compiles to a gather, ~17 ms each on the STDiT3 mid
    q/k/v against ~1 ms for a chunk (docs/performance.md). Not ``mint.unbind``: its PyNative backward fails on CPU
    ("The pointer[input_tensor] is null"); not ``ops.unstack``: its backward fails in compiled training steps
    ("Stack ... All input must have the same data type", a Ref among the stacked gradients). ``mint.chunk`` +
    ``squeeze`` differentiates in both modes."""
    out = ()
    for part in mint.chunk(x, x.shape[dim], dim):
        out = out + (part.squeeze(dim),)
    return out


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
    cpu_conv_impl = "native"

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
        # Switch (``set_conv_impl``). "native" is the device kernel: the default on Ascend AND on CPU (issue 11,
        # docs/performance.md: measured at the VAEs' conv shapes, MindSpore 2.10's CPU ops.conv2d/conv3d run at
        # 0.3-1.6x PyTorch's conv and 1.5-10x faster than the matmul forms below, e.g. 3x3 128->128 on 4x64x64:
        # native 150 ms, unfold 610 ms, im2col 974 ms, torch 128 ms; they also compile in seconds in graph mode,
        # where the unrolled im2col took minutes). The matmul forms stay as switches:
        # "im2col": one matmul over the k^d gathered views (pad, k^d strided slices, cat; k^d x the input);
        # "unfold": ``ops.unfold`` (one Im2Col kernel: pad + windows + layout) then one matmul (Conv3d: frames
        #   unfolded, one matmul per temporal offset summed);
        # "im2col_cl": channels-last, one [B*N, K*Cin] @ [K*Cin, Cout] matmul;
        # "offsets": sum over offsets of W_k @ view_k (no k^d copy).
        self.conv_impl = "native" if on_ascend() else self.cpu_conv_impl
        self._offs = _offsets(self.kernel_size)
        self._pads = _pad_arg(self.padding)

    def construct(self, x):
        x, w, b, dt = self._operands(x, self.weight, self.bias)
        if self.groups == 1:
            if self.conv_impl == "im2col":
                return self._finish(self._im2col(x, w, b), dt)
            if self.conv_impl == "im2col_cl":
                return self._finish(self._im2col_cl(x, w, b), dt)
            if self.conv_impl == "offsets":
                return self._finish(self._offsets_sum(x, w, b), dt)
            if self.conv_impl == "unfold":
                return self._finish(self._unfold_conv(x, w, b), dt)
        return self._finish(self._conv(x, w, b), dt)

    def _im2col_cl(self, x, w, b):
        """Channels-last im2col: one 2D matmul ``[B*N, K*Cin] @ [K*Cin, Cout]`` (batch folded into the rows)."""
        if self._pads is not None:
            x = ops.pad(x, self._pads, mode="constant", value=0.0)
        nd = self.nd
        bsz, cin, cout, k = x.shape[0], x.shape[1], w.shape[0], len(self._offs)
        x = mint.permute(x, (0,) + tuple(range(2, nd + 2)) + (1,))                 # [B, *sp, Cin]
        views = ()
        for off in self._offs:
            views += (self._view_cl(x, off),)
        out = views[0].shape[1:-1]
        if k == 1:
            cols = views[0].reshape(-1, cin)
            w2 = mint.transpose(w.reshape(cout, cin), 0, 1)
        else:
            cols = mint.cat(views, dim=-1).reshape(-1, k * cin)                       # [B*N, K*Cin]
            w2 = mint.permute(w.reshape(cout, cin, k), (2, 1, 0)).reshape(k * cin, cout)  # [K*Cin, Cout]
        y = mint.matmul(cols, w2)                                                      # [B*N, Cout]
        if b is not None:
            y = y + b.reshape(1, cout)
        y = y.reshape((bsz,) + out + (cout,))
        return mint.permute(y, (0, nd + 1) + tuple(range(1, nd + 1)))

    def _view_cl(self, x, off):
        """The strided window of kernel offset ``off`` of a channels-last [B, *sp, C] tensor."""
        idx = (slice(None),)
        for i in range(self.nd):
            k, s, d = self.kernel_size[i], self.stride[i], self.dilation[i]
            o = (x.shape[1 + i] - d * (k - 1) - 1) // s + 1
            start = off[i] * d
            idx += (slice(start, start + s * (o - 1) + 1, s),)
        return x[idx]

    def _offsets_sum(self, x, w, b):
        """Sum over kernel offsets of ``W_k [Cout, Cin] @ view_k [B, Cin, N]``: no K x copy of the input."""
        if self._pads is not None:
            x = ops.pad(x, self._pads, mode="constant", value=0.0)
        bsz, cin, cout, k = x.shape[0], x.shape[1], w.shape[0], len(self._offs)
        wk = mint.permute(w.reshape(cout, cin, k), (2, 0, 1))                         # [K, Cout, Cin]
        y = None
        out = None
        for i in range(k):
            v = self._view(x, self._offs[i])
            out = v.shape[2:]
            t = mint.matmul(wk[i], v.reshape(bsz, cin, -1))
            y = t if y is None else y + t
        if b is not None:
            y = y + b.reshape(1, cout, 1)
        return y.reshape((bsz, cout) + out)

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

    def _unfold_conv(self, x, w, b):
        """``ops.unfold`` (one Im2Col kernel: padding, windows and the [B, Cin*kh*kw, L] layout in one pass, whose
        row order is the weight's own) then one matmul."""
        bsz, cout = x.shape[0], w.shape[0]
        kh, kw = self.kernel_size
        if (kh, kw) == (1, 1) and not any(self.padding) and self.stride == (1, 1):
            cols = x.reshape(bsz, x.shape[1], -1)
            oh, ow = x.shape[2], x.shape[3]
        else:
            cols = ops.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
            oh = (x.shape[2] + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
            ow = (x.shape[3] + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        y = mint.matmul(w.reshape(cout, -1), cols)                                  # [B, Cout, L]
        if b is not None:
            y = y + b.reshape(1, cout, 1)
        return y.reshape(bsz, cout, oh, ow)

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

    def _unfold_conv(self, x, w, b):
        """Frames through ``ops.unfold`` (2D windows, one Im2Col kernel, [B*T, Cin*kh*kw, L]), then one matmul per
        temporal offset ``W_t [Cout, Cin*kh*kw] @ frames[t::st]`` summed: no kt x copy of the columns."""
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        dt_, dh, dw = self.dilation
        pt, ph, pw = self.padding
        if pt:
            x = ops.pad(x, (0, 0, 0, 0, pt, pt), mode="constant", value=0.0)
        bsz, cin, tp, h, wd = x.shape
        cout = w.shape[0]
        ot = (tp - dt_ * (kt - 1) - 1) // st + 1
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        frames = mint.permute(x, (0, 2, 1, 3, 4)).reshape(bsz * tp, cin, h, wd)
        if (kh, kw) == (1, 1) and not (ph or pw) and (sh, sw) == (1, 1):
            cols = frames.reshape(bsz, tp, cin, h * wd)
        else:
            cols = ops.unfold(frames, (kh, kw), (dh, dw), (ph, pw), (sh, sw)).reshape(bsz, tp, cin * kh * kw, oh * ow)
        wk = mint.permute(w.reshape(cout, cin, kt, kh * kw), (2, 0, 1, 3)).reshape(kt, cout, cin * kh * kw)
        y = None
        for i in range(kt):
            t0 = i * dt_
            part = cols[:, t0:t0 + st * (ot - 1) + 1:st].reshape(bsz * ot, cin * kh * kw, oh * ow)
            yi = mint.matmul(wk[i], part)                                               # [B*To, Cout, L]
            y = yi if y is None else y + yi
        if b is not None:
            y = y + b.reshape(1, cout, 1)
        y = mint.permute(y.reshape(bsz, ot, cout, oh * ow), (0, 2, 1, 3))
        return y.reshape(bsz, cout, ot, oh, ow)

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


CONV_IMPLS = ("native", "im2col", "im2col_cl", "offsets", "unfold")


def set_conv_impl(net: nn.Cell, impl: str) -> nn.Cell:
    """Switch every Conv2d/Conv3d of ``net`` to ``"native"`` (device kernel), ``"im2col"`` / ``"unfold"`` /
    ``"im2col_cl"`` / ``"offsets"`` (matmul forms, see ``_ConvNd``) or ``"default"`` (the device default: native)."""
    if impl not in CONV_IMPLS + ("default",):
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS + ('default',)}, got {impl!r}")
    for _, cell in net.cells_and_names():
        if isinstance(cell, _ConvNd):
            cell.conv_impl = ("native" if on_ascend() else cell.cpu_conv_impl) if impl == "default" else impl
    return net


def set_compute_dtype(net: nn.Cell, dtype) -> nn.Cell:
    """Switch every matmul/conv cell (and cells that declare ``compute_dtype``) to ``dtype``.

    Norms and softmax stay fp32 regardless. Returns ``net``.
    """
    for _, cell in net.cells_and_names():
        if isinstance(cell, _Compute) or "compute_dtype" in vars(cell):
            cell.compute_dtype = dtype
    return net
