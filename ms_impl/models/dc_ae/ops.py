"""MindSpore twin of ``pt_reference/models/dc_ae/ops.py`` (video DC-AE layers and blocks; upstream
``main:opensora/models/dc_ae/models/nn/*``). Same classes, constructor arguments and attribute paths.

CPU kernels: convs from the layer kit (the device kernel by default; the matmul forms of ``set_conv_impl`` for dense convs only),
zero padding folded into the conv, pixel (un)shuffles and nearest upsampling as reshape/transpose/broadcast,
RMSNorm, SiLU, the channel means and the linear attention in fp32 whatever the compute dtype (the fp16 switch,
``ms_impl.layers.set_compute_dtype``, only changes the conv operands).
"""
import mindspore as ms
from mindspore import mint, nn, ops

from ms_impl.layers import Conv3d, SiLU
from ms_impl.models.hunyuan_vae.unet_causal_3d_blocks import nearest_upsample

_NOT_PORTED_NORMS = ("bn2d", "ln", "ln2d", "rms2d")


class RMSNorm3d(nn.Cell):
    def __init__(self, num_features, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.num_features, self.eps, self.elementwise_affine = num_features, eps, elementwise_affine
        if elementwise_affine:
            self.weight = ms.Parameter(ops.ones((num_features,), ms.float32), name="weight")
            self.bias = ms.Parameter(ops.zeros((num_features,), ms.float32), name="bias") if bias else None
        else:
            self.weight, self.bias = None, None

    def construct(self, x):
        dtype = x.dtype
        x = x.astype(ms.float32)
        x = x / mint.sqrt(mint.mean(x * x, 1, keepdim=True) + self.eps)
        if self.elementwise_affine:
            x = x * self.weight.reshape(1, -1, 1, 1, 1)
            if self.bias is not None:
                x = x + self.bias.reshape(1, -1, 1, 1, 1)
        return x.astype(dtype)


class ReLU(nn.Cell):
    def construct(self, x):
        return ops.relu(x)


def build_norm(name="bn2d", num_features=None):
    if name == "rms3d":
        return RMSNorm3d(num_features)
    if name in _NOT_PORTED_NORMS:
        raise NotImplementedError(f"norm {name!r} (2D DC-AE) is not ported")
    return None


def build_act(name):
    if name == "relu":
        return ReLU()
    if name == "silu":
        return SiLU()
    if name in ("relu6", "hswish", "gelu"):
        raise NotImplementedError(f"act {name!r} is not used by the video DC-AE")
    return None


def val2tuple(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(v) + (v[-1],) * (n - len(v))
    return (v,) * n


class ConvLayer(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1, use_bias=False,
                 dropout=0, norm="bn2d", act_func="relu", is_video=False, pad_mode_3d="constant"):
        super().__init__()
        if not is_video:
            raise NotImplementedError("2D ConvLayer is not ported (video DC-AE only)")
        if dilation != 1 or kernel_size % 2 != 1 or dropout > 0 or pad_mode_3d != "constant":
            raise NotImplementedError("video ConvLayer: odd kernel, dilation 1, no dropout, zero padding only")
        self.is_video = is_video
        self.pad_mode_3d = pad_mode_3d
        self.padding = (kernel_size // 2,) * 6
        self.dropout = None
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        # the zero padding is the conv's own (same numbers as upstream's F.pad + unpadded conv)
        self.conv = Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                           groups=groups, bias=use_bias)
        self.norm = build_norm(norm, num_features=out_channels)
        self.act = build_act(act_func)

    def construct(self, x):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


def pixel_unshuffle_3d(x, r):
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // r, r, h // r, r, w // r, r).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * r ** 3, t // r, h // r, w // r)


def pixel_shuffle_3d(x, r):
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // r ** 3, r, r, r, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // r ** 3, t * r, h * r, w * r)


def pixel_unshuffle_hw(x, r):
    """torch's pixel_unshuffle on every frame of [B, C, T, H, W]: channel c -> c*r*r + i*r + j."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // r, r, w // r, r).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, c * r * r, t, h // r, w // r)


def pixel_shuffle_hw(x, r):
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (r * r), r, r, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, c // (r * r), t, h * r, w * r)


class PixelUnshuffleChannelAveragingDownSampleLayer(nn.Cell):
    def __init__(self, in_channels, out_channels, factor, temporal_downsample=False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor, self.temporal_downsample = factor, temporal_downsample

    def construct(self, x):
        r = self.factor
        if self.temporal_downsample and x.shape[2] != 1:
            x = pixel_unshuffle_3d(x, r)
            group = self.in_channels * r ** 3 // self.out_channels
        else:
            if r != 1:
                x = pixel_unshuffle_hw(x, r)
            group = self.in_channels * r ** 2 // self.out_channels
        b, _, t, h, w = x.shape
        dtype = x.dtype
        x = x.reshape(b, self.out_channels, group, t, h, w).astype(ms.float32)
        return mint.mean(x, 2).astype(dtype)


class ChannelDuplicatingPixelShuffleUpSampleLayer(nn.Cell):
    def __init__(self, in_channels, out_channels, factor, temporal_upsample=False):
        super().__init__()
        assert out_channels * factor ** 2 % in_channels == 0
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor, self.temporal_upsample = factor, temporal_upsample

    def construct(self, x):
        r = self.factor
        temporal = self.temporal_upsample and x.shape[2] != 1
        repeats = self.out_channels * r ** (3 if temporal else 2) // self.in_channels
        b, c, t, h, w = x.shape
        # repeat_interleave over channels = broadcast a new axis after C, then merge
        x = x.reshape(b, c, 1, t, h, w).broadcast_to((b, c, repeats, t, h, w)).reshape(b, c * repeats, t, h, w)
        if temporal:
            return pixel_shuffle_3d(x, r)
        if r == 1:
            return x
        return pixel_shuffle_hw(x, r)


class InterpolateConvUpSampleLayer(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size, factor, mode="nearest", is_video=False,
                 temporal_upsample=False):
        super().__init__()
        if mode != "nearest":
            raise NotImplementedError("only nearest interpolation (upstream's chunked_interpolate)")
        self.factor, self.mode, self.temporal_upsample = factor, mode, temporal_upsample
        self.conv = ConvLayer(in_channels, out_channels, kernel_size, use_bias=True, norm=None, act_func=None,
                              is_video=is_video)

    def construct(self, x):
        ft = self.factor if self.temporal_upsample and x.shape[2] != 1 else 1
        x = nearest_upsample(x, (ft, self.factor, self.factor))
        return self.conv(x)


class IdentityLayer(nn.Cell):
    def construct(self, x):
        return x


class ResBlock(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, mid_channels=None, expand_ratio=1,
                 use_bias=False, norm=("bn2d", "bn2d"), act_func=("relu6", None), is_video=False):
        super().__init__()
        use_bias, norm, act_func = val2tuple(use_bias, 2), val2tuple(norm, 2), val2tuple(act_func, 2)
        mid = round(in_channels * expand_ratio) if mid_channels is None else mid_channels
        self.conv1 = ConvLayer(in_channels, mid, kernel_size, stride, use_bias=use_bias[0], norm=norm[0],
                               act_func=act_func[0], is_video=is_video)
        self.conv2 = ConvLayer(mid, out_channels, kernel_size, 1, use_bias=use_bias[1], norm=norm[1],
                               act_func=act_func[1], is_video=is_video)

    def construct(self, x):
        return self.conv2(self.conv1(x))


class GLUMBConv(nn.Cell):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, mid_channels=None, expand_ratio=6,
                 use_bias=False, norm=(None, None, "ln2d"), act_func=("silu", "silu", None), is_video=False):
        super().__init__()
        use_bias, norm, act_func = val2tuple(use_bias, 3), val2tuple(norm, 3), val2tuple(act_func, 3)
        mid = round(in_channels * expand_ratio) if mid_channels is None else mid_channels
        self.mid = mid
        self.glu_act = build_act(act_func[1])
        self.inverted_conv = ConvLayer(in_channels, mid * 2, 1, use_bias=use_bias[0], norm=norm[0],
                                       act_func=act_func[0], is_video=is_video)
        self.depth_conv = ConvLayer(mid * 2, mid * 2, kernel_size, stride=stride, groups=mid * 2,
                                    use_bias=use_bias[1], norm=norm[1], act_func=None, is_video=is_video)
        self.point_conv = ConvLayer(mid, out_channels, 1, use_bias=use_bias[2], norm=norm[2], act_func=act_func[2],
                                    is_video=is_video)

    def construct(self, x):
        x = self.depth_conv(self.inverted_conv(x))
        x, gate = x[:, :self.mid], x[:, self.mid:]
        return self.point_conv(x * self.glu_act(gate))


class LiteMLA(nn.Cell):
    def __init__(self, in_channels, out_channels, heads=None, heads_ratio=1.0, dim=8, use_bias=False,
                 norm=(None, "bn2d"), act_func=(None, None), kernel_func="relu", scales=(5,), eps=1.0e-15,
                 is_video=False):
        super().__init__()
        if not is_video:
            raise NotImplementedError("2D LiteMLA is not ported (video DC-AE only)")
        self.eps = eps
        heads = int(in_channels // dim * heads_ratio) if heads is None else heads
        total_dim = heads * dim
        use_bias, norm, act_func = val2tuple(use_bias, 2), val2tuple(norm, 2), val2tuple(act_func, 2)
        self.dim = dim
        self.qkv = ConvLayer(in_channels, 3 * total_dim, 1, use_bias=use_bias[0], norm=norm[0],
                             act_func=act_func[0], is_video=is_video)
        self.aggreg = nn.CellList([
            nn.SequentialCell([
                Conv3d(3 * total_dim, 3 * total_dim, scale, padding=scale // 2, groups=3 * total_dim,
                       bias=use_bias[0]),
                Conv3d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=use_bias[0])])
            for scale in scales])
        self.kernel_func = build_act(kernel_func)
        self.proj = ConvLayer(total_dim * (1 + len(scales)), out_channels, 1, use_bias=use_bias[1], norm=norm[1],
                              act_func=act_func[1], is_video=is_video)

    def relu_linear_att(self, qkv):
        b, _, t, h, w = qkv.shape
        qkv = qkv.astype(ms.float32).reshape(b, -1, 3 * self.dim, t * h * w)
        q, k, v = qkv[:, :, :self.dim], qkv[:, :, self.dim:2 * self.dim], qkv[:, :, 2 * self.dim:]
        q, k = self.kernel_func(q), self.kernel_func(k)
        v = ops.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)     # ones row: the normaliser
        out = mint.matmul(mint.matmul(v, mint.transpose(k, -2, -1)), q)
        out = out[:, :, :self.dim] / (out[:, :, self.dim:] + self.eps)
        return out.reshape(b, -1, t, h, w)

    def construct(self, x):
        qkv = self.qkv(x)
        parts = (qkv,)
        for op in self.aggreg:
            parts += (op(qkv),)
        qkv = mint.cat(parts, dim=1)
        return self.proj(self.relu_linear_att(qkv).astype(qkv.dtype))


class ResidualBlock(nn.Cell):
    def __init__(self, main, shortcut, post_act=None, pre_norm=None):
        super().__init__()
        self.pre_norm = pre_norm
        self.main = main
        self.shortcut = shortcut
        self.post_act = build_act(post_act)

    def forward_main(self, x):
        if self.pre_norm is None:
            return self.main(x)
        return self.main(self.pre_norm(x))

    def construct(self, x):
        if self.main is None:
            return x
        if self.shortcut is None:
            return self.forward_main(x)
        res = self.forward_main(x) + self.shortcut(x)
        if self.post_act is not None:
            res = self.post_act(res)
        return res


class EfficientViTBlock(nn.Cell):
    def __init__(self, in_channels, heads_ratio=1.0, dim=32, expand_ratio=4, scales=(5,), norm="bn2d",
                 act_func="hswish", context_module="LiteMLA", local_module="MBConv", is_video=False):
        super().__init__()
        if context_module != "LiteMLA" or local_module != "GLUMBConv":
            raise NotImplementedError("the video DC-AE uses LiteMLA + GLUMBConv only")
        self.context_module = ResidualBlock(
            LiteMLA(in_channels, in_channels, heads_ratio=heads_ratio, dim=dim, norm=(None, norm), scales=scales,
                    is_video=is_video), IdentityLayer())
        self.local_module = ResidualBlock(
            GLUMBConv(in_channels, in_channels, expand_ratio=expand_ratio, use_bias=(True, True, False),
                      norm=(None, None, norm), act_func=(act_func, act_func, None), is_video=is_video),
            IdentityLayer())

    def construct(self, x):
        return self.local_module(self.context_module(x))


class OpSequential(nn.Cell):
    def __init__(self, op_list):
        super().__init__()
        self.op_list = nn.CellList([op for op in op_list if op is not None])

    def construct(self, x):
        for op in self.op_list:
            x = op(x)
        return x
