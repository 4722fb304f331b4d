"""Layers and blocks of the video DC-AE, ``main:opensora/models/dc_ae/models/nn/{ops,norm,act,vo_ops}.py``
(MIT Han Lab's EfficientViT/DC-AE code, extended to video by Open-Sora 2.0). Only the video (``is_video=True``)
paths the ``dc-ae-f32t4c128`` release uses are reproduced; 2D-only options raise.

- ``ConvLayer`` (video): zero pad ``k//2`` on T, H and W (non-causal), Conv3d (upstream's ``ChannelChunkConv3d`` is
  an ``nn.Conv3d`` that only splits channels for huge inputs: same keys, same numbers), optional norm and act.
- ``RMSNorm3d``: over channels (dim 1), fp32 statistics, eps 1e-5, then weight AND bias.
- Shortcuts: ``PixelUnshuffleChannelAveragingDownSampleLayer`` (pixel-unshuffle in H, W [and T], then the mean
  over groups of adjacent channels) and ``ChannelDuplicatingPixelShuffleUpSampleLayer`` (repeat_interleave the
  channels, then pixel-shuffle). The 3D variants apply only when the layer is temporal and T != 1.
- ``LiteMLA``: q/k/v by a 1x1x1 conv, one extra scale by a 5x5x5 depthwise + grouped 1x1x1 conv ("aggreg"),
  ReLU kernel, linear attention with a ones row appended to v (the denominator), eps 1e-15, in fp32.
- ``EfficientViTBlock``: ``LiteMLA`` + residual, then ``GLUMBConv`` (1x1x1 -> 3x3x3 depthwise -> SiLU gate ->
  1x1x1 + RMSNorm) + residual.
"""
import torch
import torch.nn.functional as F
from torch import nn

from pt_reference.layers import Conv3d

_NOT_PORTED_NORMS = ("bn2d", "ln", "ln2d", "rms2d")


class RMSNorm3d(nn.Module):
    def __init__(self, num_features, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.num_features, self.eps, self.elementwise_affine = num_features, eps, elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features)) if bias else None
        else:
            self.weight, self.bias = None, None

    def forward(self, x):
        x = (x / torch.sqrt(x.float().square().mean(dim=1, keepdim=True) + self.eps)).to(x.dtype)
        if self.elementwise_affine:
            shape = (1, -1, 1, 1, 1)
            x = x * self.weight.view(shape)
            if self.bias is not None:
                x = x + self.bias.view(shape)
        return x


def build_norm(name="bn2d", num_features=None):
    """Upstream's registry returns None for unknown names; the 2D norms are not ported (video release only)."""
    if name == "rms3d":
        return RMSNorm3d(num_features)
    if name in _NOT_PORTED_NORMS:
        raise NotImplementedError(f"norm {name!r} (2D DC-AE) is not ported")
    return None


def build_act(name):
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.SiLU()
    if name in ("relu6", "hswish", "gelu"):
        raise NotImplementedError(f"act {name!r} is not used by the video DC-AE")
    return None


def val2tuple(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(v) + (v[-1],) * (n - len(v))
    return (v,) * n


class ConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1, use_bias=False,
                 dropout=0, norm="bn2d", act_func="relu", is_video=False, pad_mode_3d="constant"):
        super().__init__()
        if not is_video:
            raise NotImplementedError("2D ConvLayer is not ported (video DC-AE only)")
        if dilation != 1 or kernel_size % 2 != 1 or dropout > 0 or pad_mode_3d != "constant":
            raise NotImplementedError("video ConvLayer: odd kernel, dilation 1, no dropout, zero padding only")
        self.is_video = is_video
        self.pad_mode_3d = pad_mode_3d
        self.padding = (kernel_size // 2,) * 6       # W, H, T: non-causal
        self.dropout = None
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.conv = Conv3d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=use_bias)
        self.norm = build_norm(norm, num_features=out_channels)
        self.act = build_act(act_func)

    def forward(self, x):
        x = self.conv(F.pad(x, self.padding, mode=self.pad_mode_3d))
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


def pixel_unshuffle_3d(x, r):
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // r, r, h // r, r, w // r, r).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * r ** 3, t // r, h // r, w // r)


def pixel_shuffle_3d(x, r):
    b, c, t, h, w = x.shape
    x = x.view(b, c // r ** 3, r, r, r, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // r ** 3, t * r, h * r, w * r)


class PixelUnshuffleChannelAveragingDownSampleLayer(nn.Module):
    def __init__(self, in_channels, out_channels, factor, temporal_downsample=False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor, self.temporal_downsample = factor, temporal_downsample

    def forward(self, x):
        if x.dim() != 5:
            raise ValueError("video DC-AE layers take [B, C, T, H, W]")
        r = self.factor
        if self.temporal_downsample and x.shape[2] != 1:
            x = pixel_unshuffle_3d(x, r)
            group = self.in_channels * r ** 3 // self.out_channels
        else:   # per frame, H and W only
            x = F.pixel_unshuffle(x.permute(0, 2, 1, 3, 4), r).permute(0, 2, 1, 3, 4)
            group = self.in_channels * r ** 2 // self.out_channels
        b, _, t, h, w = x.shape
        return x.view(b, self.out_channels, group, t, h, w).mean(dim=2)


class ChannelDuplicatingPixelShuffleUpSampleLayer(nn.Module):
    def __init__(self, in_channels, out_channels, factor, temporal_upsample=False):
        super().__init__()
        assert out_channels * factor ** 2 % in_channels == 0
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor, self.temporal_upsample = factor, temporal_upsample

    def forward(self, x):
        r = self.factor
        temporal = self.temporal_upsample and x.shape[2] != 1
        repeats = self.out_channels * r ** (3 if temporal else 2) // self.in_channels
        x = x.repeat_interleave(repeats, dim=1)
        if temporal:
            return pixel_shuffle_3d(x, r)
        return F.pixel_shuffle(x.permute(0, 2, 1, 3, 4), r).permute(0, 2, 1, 3, 4)


class InterpolateConvUpSampleLayer(nn.Module):
    """Nearest x2 in H, W (and T when temporal and T != 1), then a 3x3x3 ConvLayer (upstream chunks the
    interpolation over channels only to dodge int32 overflow: same numbers)."""

    def __init__(self, in_channels, out_channels, kernel_size, factor, mode="nearest", is_video=False,
                 temporal_upsample=False):
        super().__init__()
        if mode != "nearest":
            raise NotImplementedError("only nearest interpolation (upstream's chunked_interpolate)")
        self.factor, self.mode, self.temporal_upsample = factor, mode, temporal_upsample
        self.conv = ConvLayer(in_channels, out_channels, kernel_size, use_bias=True, norm=None, act_func=None,
                              is_video=is_video)

    def forward(self, x):
        ft = self.factor if self.temporal_upsample and x.shape[2] != 1 else 1
        x = F.interpolate(x, scale_factor=(ft, self.factor, self.factor), mode="nearest")
        return self.conv(x)


class IdentityLayer(nn.Module):
    def forward(self, x):
        return x


class ResBlock(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, mid_channels=None, expand_ratio=1,
                 use_bias=False, norm=("bn2d", "bn2d"), act_func=("relu6", None), is_video=False):
        super().__init__()
        use_bias, norm, act_func = val2tuple(use_bias, 2), val2tuple(norm, 2), val2tuple(act_func, 2)
        mid = round(in_channels * expand_ratio) if mid_channels is None else mid_channels
        self.conv1 = ConvLayer(in_channels, mid, kernel_size, stride, use_bias=use_bias[0], norm=norm[0],
                               act_func=act_func[0], is_video=is_video)
        self.conv2 = ConvLayer(mid, out_channels, kernel_size, 1, use_bias=use_bias[1], norm=norm[1],
                               act_func=act_func[1], is_video=is_video)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class GLUMBConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, mid_channels=None, expand_ratio=6,
                 use_bias=False, norm=(None, None, "ln2d"), act_func=("silu", "silu", None), is_video=False):
        super().__init__()
        use_bias, norm, act_func = val2tuple(use_bias, 3), val2tuple(norm, 3), val2tuple(act_func, 3)
        mid = round(in_channels * expand_ratio) if mid_channels is None else mid_channels
        self.glu_act = build_act(act_func[1])
        self.inverted_conv = ConvLayer(in_channels, mid * 2, 1, use_bias=use_bias[0], norm=norm[0],
                                       act_func=act_func[0], is_video=is_video)
        self.depth_conv = ConvLayer(mid * 2, mid * 2, kernel_size, stride=stride, groups=mid * 2,
                                    use_bias=use_bias[1], norm=norm[1], act_func=None, is_video=is_video)
        self.point_conv = ConvLayer(mid, out_channels, 1, use_bias=use_bias[2], norm=norm[2], act_func=act_func[2],
                                    is_video=is_video)

    def forward(self, x):
        x, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(x * self.glu_act(gate))


class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention (video): heads = in_channels // dim * heads_ratio."""

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
        self.aggreg = nn.ModuleList([
            nn.Sequential(
                Conv3d(3 * total_dim, 3 * total_dim, scale, padding=scale // 2, groups=3 * total_dim,
                       bias=use_bias[0]),
                Conv3d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=use_bias[0]))
            for scale in scales])
        self.kernel_func = build_act(kernel_func)
        self.proj = ConvLayer(total_dim * (1 + len(scales)), out_channels, 1, use_bias=use_bias[1], norm=norm[1],
                              act_func=act_func[1], is_video=is_video)

    def relu_linear_att(self, qkv):
        """[B, (1+S)*heads*3*dim, T, H, W] -> [B, (1+S)*heads*dim, T, H, W], computed in fp32."""
        b, _, t, h, w = qkv.shape
        qkv = qkv.float().reshape(b, -1, 3 * self.dim, t * h * w)
        q, k, v = qkv[:, :, :self.dim], qkv[:, :, self.dim:2 * self.dim], qkv[:, :, 2 * self.dim:]
        q, k = self.kernel_func(q), self.kernel_func(k)
        v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)     # ones row: the normaliser
        out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return out.reshape(b, -1, t, h, w)

    def forward(self, x):
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        return self.proj(self.relu_linear_att(qkv).to(qkv.dtype))


class ResidualBlock(nn.Module):
    def __init__(self, main, shortcut, post_act=None, pre_norm=None):
        super().__init__()
        self.pre_norm = pre_norm
        self.main = main
        self.shortcut = shortcut
        self.post_act = build_act(post_act)

    def forward_main(self, x):
        return self.main(x if self.pre_norm is None else self.pre_norm(x))

    def forward(self, x):
        if self.main is None:
            return x
        if self.shortcut is None:
            return self.forward_main(x)
        res = self.forward_main(x) + self.shortcut(x)
        return self.post_act(res) if self.post_act is not None else res


class EfficientViTBlock(nn.Module):
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

    def forward(self, x):
        return self.local_module(self.context_module(x))


class OpSequential(nn.Module):
    def __init__(self, op_list):
        super().__init__()
        self.op_list = nn.ModuleList([op for op in op_list if op is not None])

    def forward(self, x):
        for op in self.op_list:
            x = op(x)
        return x
