"""MindSpore twin of ``pt_reference/models/vae/vae_temporal.py`` (Open-Sora 1.2 ``VAE_Temporal_SD``).

Ascend note: Conv3D has no fp32 kernel on Ascend. ``VAE_Temporal.set_conv3d_dtype(dtype)`` sets the compute
dtype of every Conv3d cell (inputs and weights are cast to it, outputs cast back to the activation dtype), so
the rest of the network (GroupNorm, SiLU, residual sums, the posterior) can stay fp32. It defaults to fp16 on
Ascend and to fp32 elsewhere; on CPU the fp16 setting is what the suite tests against the fp32 reference.
"""
import mindspore as ms
from mindspore import nn, ops

from ms_impl.device import on_ascend
from ms_impl.layers import Conv3d, GroupNorm, Identity, SiLU
from ms_impl.models.vae.autoencoder_kl import DiagonalGaussianDistribution
from ms_impl.perf import JitCalls


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3


class CausalConv3d(nn.Cell):
    def __init__(self, chan_in, chan_out, kernel_size, pad_mode="constant", strides=None, stride=1, dilation=1,
                 bias=True, padding=0):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError("CausalConv3d needs odd spatial kernel sizes")
        if pad_mode != "constant":
            raise ValueError("only pad_mode='constant' (zeros) is used by the released VAE")
        stride_t = strides[0] if strides is not None else stride
        self.pad_mode = pad_mode
        self.time_pad = dilation * (kt - 1) + (1 - stride_t)
        self.time_causal_padding = (kw // 2, kw // 2, kh // 2, kh // 2, self.time_pad, 0)
        self.needs_pad = any(p != 0 for p in self.time_causal_padding)
        if padding not in (0, "same") or (padding == "same" and (kt, kh, kw) != (1, 1, 1)):
            raise ValueError(f"unsupported CausalConv3d padding {padding!r}")
        stride3 = tuple(strides) if strides is not None else (stride, 1, 1)
        self.conv = Conv3d(chan_in, chan_out, (kt, kh, kw), stride=stride3, dilation=(dilation, 1, 1), bias=bias)

    def construct(self, x):
        dtype = x.dtype
        if self.needs_pad:
            x = ops.pad(x, self.time_causal_padding, mode="constant", value=0.0)
        return self.conv(x).astype(dtype)


class ResBlock(nn.Cell):
    def __init__(self, in_channels, filters, num_groups=32):
        super().__init__()
        self.in_channels, self.filters = in_channels, filters
        self.activate = SiLU()
        self.norm1 = GroupNorm(num_groups, in_channels)
        self.conv1 = CausalConv3d(in_channels, filters, (3, 3, 3), bias=False)
        self.norm2 = GroupNorm(num_groups, filters)
        self.conv2 = CausalConv3d(filters, filters, (3, 3, 3), bias=False)
        self.has_shortcut = in_channels != filters
        if self.has_shortcut:
            self.conv3 = CausalConv3d(in_channels, filters, (1, 1, 1), bias=False)

    def construct(self, x):
        residual = x
        x = self.conv1(self.activate(self.norm1(x)))
        x = self.conv2(self.activate(self.norm2(x)))
        if self.has_shortcut:
            residual = self.conv3(residual)
        return x + residual


def depth_to_space_time(x, ts):
    """``B (C ts) T H W -> B C (T ts) H W``."""
    if ts == 1:
        return x
    b, cts, t, h, w = x.shape
    x = x.reshape(b, cts // ts, ts, t, h, w).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, cts // ts, t * ts, h, w)


class Encoder(nn.Cell):
    def __init__(self, in_out_channels=4, latent_embed_dim=512, filters=128, num_res_blocks=4,
                 channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True), num_groups=32):
        super().__init__()
        self.num_blocks, self.num_res_blocks = len(channel_multipliers), num_res_blocks
        self.activate = SiLU()
        self.conv_in = CausalConv3d(in_out_channels, filters, (3, 3, 3), bias=False)
        blocks, convs = [], []
        prev = filters
        for i, mult in enumerate(channel_multipliers):
            out = filters * mult
            items = []
            for _ in range(num_res_blocks):
                items.append(ResBlock(prev, out, num_groups))
                prev = out
            blocks.append(nn.CellList(items))
            if i < self.num_blocks - 1:
                convs.append(CausalConv3d(prev, out, (3, 3, 3), strides=(2, 1, 1)) if temporal_downsample[i]
                             else Identity())
                prev = out
        self.block_res_blocks = nn.CellList(blocks)
        self.conv_blocks = nn.CellList(convs)
        self.res_blocks = nn.CellList([ResBlock(prev, out, num_groups) for _ in range(num_res_blocks)])
        self.norm1 = GroupNorm(num_groups, prev)
        self.conv2 = CausalConv3d(prev, latent_embed_dim, (1, 1, 1), padding="same")

    def construct(self, x):
        x = self.conv_in(x)
        for i in range(self.num_blocks):
            for block in self.block_res_blocks[i]:
                x = block(x)
            if i < self.num_blocks - 1:
                x = self.conv_blocks[i](x)
        for block in self.res_blocks:
            x = block(x)
        return self.conv2(self.activate(self.norm1(x)))


class Decoder(nn.Cell):
    def __init__(self, in_out_channels=4, latent_embed_dim=512, filters=128, num_res_blocks=4,
                 channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True), num_groups=32):
        super().__init__()
        self.num_blocks, self.num_res_blocks = len(channel_multipliers), num_res_blocks
        self.temporal_downsample = tuple(temporal_downsample)
        self.activate = SiLU()
        top = filters * channel_multipliers[-1]
        self.conv1 = CausalConv3d(latent_embed_dim, top, (3, 3, 3), bias=True)
        self.res_blocks = nn.CellList([ResBlock(top, top, num_groups) for _ in range(num_res_blocks)])
        blocks, convs = [], []
        prev = top
        for i in reversed(range(self.num_blocks)):
            out = filters * channel_multipliers[i]
            items = []
            for _ in range(num_res_blocks):
                items.append(ResBlock(prev, out, num_groups))
                prev = out
            blocks.insert(0, nn.CellList(items))
            if i > 0:
                ts = 2 if temporal_downsample[i - 1] else 1
                convs.insert(0, CausalConv3d(prev, prev * ts, (3, 3, 3)) if ts > 1 else Identity())
        self.block_res_blocks = nn.CellList(blocks)
        self.conv_blocks = nn.CellList(convs)
        self.norm1 = GroupNorm(num_groups, prev)
        self.conv_out = CausalConv3d(out, in_out_channels, 3)

    def construct(self, x):
        x = self.conv1(x)
        for block in self.res_blocks:
            x = block(x)
        for i in reversed(range(self.num_blocks)):
            for block in self.block_res_blocks[i]:
                x = block(x)
            if i > 0:
                x = self.conv_blocks[i - 1](x)
                x = depth_to_space_time(x, 2 if self.temporal_downsample[i - 1] else 1)
        return self.conv_out(self.activate(self.norm1(x)))


class VAE_Temporal(JitCalls, nn.Cell):
    def __init__(self, in_out_channels=4, latent_embed_dim=4, embed_dim=4, filters=128, num_res_blocks=4,
                 channel_multipliers=(1, 2, 2, 4), temporal_downsample=(True, True, False), num_groups=32,
                 activation_fn="swish", from_pretrained=None):
        super().__init__()
        if activation_fn != "swish":
            raise ValueError("only activation_fn='swish' (SiLU) is used by the released VAE")
        self.time_downsample_factor = 2 ** sum(temporal_downsample)
        self.patch_size = (self.time_downsample_factor, 1, 1)
        self.out_channels = in_out_channels
        arch = dict(filters=filters, num_res_blocks=num_res_blocks, channel_multipliers=tuple(channel_multipliers),
                    temporal_downsample=tuple(temporal_downsample), num_groups=num_groups)
        self.encoder = Encoder(in_out_channels, latent_embed_dim * 2, **arch)
        self.quant_conv = CausalConv3d(2 * latent_embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = CausalConv3d(embed_dim, latent_embed_dim, 1)
        self.decoder = Decoder(in_out_channels, latent_embed_dim, **arch)
        if on_ascend():
            self.set_conv3d_dtype(ms.float16)

    def set_conv3d_dtype(self, dtype):
        """Compute dtype of every Conv3d (Ascend has no fp32 Conv3D); activations keep their dtype."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, Conv3d):
                cell.compute_dtype = dtype
        return self

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release/diffusers folder or any file the converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    def time_padding(self, num_frames):
        return (self.time_downsample_factor - num_frames % self.time_downsample_factor) % self.time_downsample_factor

    def get_latent_size(self, input_size):
        t, h, w = input_size
        t = None if t is None else (t + self.time_padding(t)) // self.patch_size[0]
        return [t, h, w]

    def _encode_moments(self, x):
        return self.quant_conv(self.encoder(x)).astype(x.dtype)

    def _decode_x(self, z):
        return self.decoder(self.post_quant_conv(z))

    def encode(self, x):
        pad = self.time_padding(x.shape[2])
        if pad:
            x = ops.pad(x, (0, 0, 0, 0, pad, 0), mode="constant", value=0.0)
        return DiagonalGaussianDistribution(self._run("encode", self._encode_moments, x))

    def decode(self, z, num_frames=None):
        x = self._run("decode", self._decode_x, z)
        return x[:, :, self.time_padding(num_frames):]

    def construct(self, x, noise=None):
        posterior = self.encode(x)
        z = posterior.mode() if noise is None else posterior.sample(noise)
        return self.decode(z, num_frames=x.shape[2])


def VAE_Temporal_SD(from_pretrained=None, **kwargs):
    return VAE_Temporal(in_out_channels=4, latent_embed_dim=4, embed_dim=4, filters=128, num_res_blocks=4,
                        channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True), **kwargs)
