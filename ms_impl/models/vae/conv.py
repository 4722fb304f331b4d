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


def _offsets(ks):
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


class _Im2col:
    """Mixin: ``_conv`` as one matmul over the k^d gathered views (groups = 1). Static data (offsets, pads) is
    computed at construction, and the loops run over constant tuples, so ``ms.jit`` unrolls them."""

    def _init_im2col(self):
        self.conv_impl = default_conv_impl()
        self._offs = _offsets(self.kernel_size)
        self._pads = _pad_arg(self.padding)
        self._k = len(self._offs)

    def _conv(self, x, w, b):
        if self.conv_impl != "im2col" or self.groups != 1:
            return super()._conv(x, w, b)
        if self._pads is not None:
            x = ops.pad(x, self._pads, mode="constant", value=0.0)
        bsz, cin = x.shape[0], x.shape[1]
        cout = w.shape[0]
        views = ()
        for off in self._offs:
            views += (self._view(x, off),)
        out = views[0].shape[2:]
        if self._k == 1:
            cols = views[0].reshape(bsz, cin, -1)
            w2 = w.reshape(cout, cin)
        else:
            cols = mint.cat(views, dim=1).reshape(bsz, self._k * cin, -1)              # [B, K*Cin, N]
            w2 = mint.transpose(w.reshape(cout, cin, self._k), 1, 2).reshape(cout, -1)  # [Cout, K*Cin]
        y = mint.matmul(w2, cols)                                                       # [B, Cout, N]
        if b is not None:
            y = y + b.reshape(1, cout, 1)
        return y.reshape((bsz, cout) + out)


class Conv2d(_Im2col, _KitConv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_im2col()

    def _view(self, x, off):
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        h0, w0 = off[0] * dh, off[1] * dw
        return x[:, :, h0:h0 + sh * (oh - 1) + 1:sh, w0:w0 + sw * (ow - 1) + 1:sw]


class Conv3d(_Im2col, _KitConv3d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_im2col()

    def _view(self, x, off):
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        dt, dh, dw = self.dilation
        ot = (x.shape[2] - dt * (kt - 1) - 1) // st + 1
        oh = (x.shape[3] - dh * (kh - 1) - 1) // sh + 1
        ow = (x.shape[4] - dw * (kw - 1) - 1) // sw + 1
        t0, h0, w0 = off[0] * dt, off[1] * dh, off[2] * dw
        return x[:, :, t0:t0 + st * (ot - 1) + 1:st, h0:h0 + sh * (oh - 1) + 1:sh, w0:w0 + sw * (ow - 1) + 1:sw]


def set_conv_impl(net, impl):
    """Switch every VAE conv of ``net`` to ``"native"`` or ``"im2col"``. Returns ``net``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    for _, cell in net.cells_and_names():
        if isinstance(cell, (Conv2d, Conv3d)):
            cell.conv_impl = impl
    return net
