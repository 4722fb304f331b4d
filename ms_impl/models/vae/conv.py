"""Convolutions for the VAE port: the layer kit's ``Conv2d`` / ``Conv3d`` plus a switchable im2col path.

Why: on the CPU build of MindSpore 2.10 ``ops.conv2d``/``ops.conv3d`` are a naive kernel -- a 3x3 conv 128->128
on 4x64x64 takes ~16 s against ~0.2 s in PyTorch (measured 2026-11-25, 2 busy cores), which makes the full-size
VAEs unusable. ``conv_impl="im2col"`` gathers the k^d shifted views into one [B, K*Cin, N] tensor and does a
single matmul with the weight reshaped to [Cout, K*Cin] (~28x faster there, same numbers to fp32 rounding).
Cost: k^d times the input activation in memory for that conv (27x for 3x3x3); the micro-batch switches bound it.

``conv_impl="native"`` is the kit's kernel (the choice on Ascend, where Conv2D/Conv3D are fast; note Conv3D has
no fp32 kernel there, see ``VAE_Temporal.set_conv3d_dtype``). Parameters, names and init are the kit's.
"""
from mindspore import mint, ops

from ms_impl.device import on_ascend
from ms_impl.layers import Conv2d as _KitConv2d
from ms_impl.layers import Conv3d as _KitConv3d

CONV_IMPLS = ("native", "im2col")


def default_conv_impl():
    return "native" if on_ascend() else "im2col"


def _im2col_conv(x, w, b, stride, padding, dilation):
    """N-d convolution (groups = 1) as one matmul. x [B, Cin, *S], w [Cout, Cin, *K]."""
    nd = len(stride)
    cout, cin = w.shape[0], w.shape[1]
    ks = tuple(w.shape[2:])
    if any(padding):
        pads = []
        for p in reversed(padding):
            pads += [p, p]
        x = ops.pad(x, tuple(pads), mode="constant", value=0.0)
    size = x.shape[2:]
    out = tuple((size[i] - dilation[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(nd))
    bsz = x.shape[0]
    if all(k == 1 for k in ks):
        cols = x
        if any(s != 1 for s in stride):
            cols = x[(slice(None), slice(None)) + tuple(slice(0, stride[i] * (out[i] - 1) + 1, stride[i])
                                                        for i in range(nd))]
        cols = cols.reshape(bsz, cin, -1)
        w2 = w.reshape(cout, cin)
    else:
        views = []
        for offs in _offsets(ks):
            idx = tuple(slice(offs[i] * dilation[i], offs[i] * dilation[i] + stride[i] * (out[i] - 1) + 1, stride[i])
                        for i in range(nd))
            views.append(x[(slice(None), slice(None)) + idx])
        cols = mint.cat(views, dim=1).reshape(bsz, len(views) * cin, -1)     # [B, K*Cin, N], (k, cin) order
        w2 = mint.transpose(w.reshape(cout, cin, -1), 1, 2).reshape(cout, -1)  # [Cout, K*Cin], same order
    y = mint.matmul(w2, cols)                                                # [B, Cout, N]
    if b is not None:
        y = y + b.reshape(1, cout, 1)
    return y.reshape((bsz, cout) + out)


def _offsets(ks):
    if len(ks) == 1:
        return [(i,) for i in range(ks[0])]
    return [(i,) + rest for i in range(ks[0]) for rest in _offsets(ks[1:])]


class Conv2d(_KitConv2d):
    conv_impl = "native"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_impl = default_conv_impl()

    def _conv(self, x, w, b):
        if self.conv_impl == "im2col" and self.groups == 1:
            return _im2col_conv(x, w, b, self.stride, self.padding, self.dilation)
        return super()._conv(x, w, b)


class Conv3d(_KitConv3d):
    conv_impl = "native"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_impl = default_conv_impl()

    def _conv(self, x, w, b):
        if self.conv_impl == "im2col" and self.groups == 1:
            return _im2col_conv(x, w, b, self.stride, self.padding, self.dilation)
        return super()._conv(x, w, b)


def set_conv_impl(net, impl):
    """Switch every VAE conv of ``net`` to ``"native"`` or ``"im2col"``. Returns ``net``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    for _, cell in net.cells_and_names():
        if isinstance(cell, (Conv2d, Conv3d)):
            cell.conv_impl = impl
    return net
