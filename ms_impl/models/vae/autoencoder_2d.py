"""MindSpore twin of ``pt_reference/models/vae/autoencoder_2d.py``: the Flux image autoencoder of Open-Sora 2.0
(``main:opensora/models/vae/autoencoder_2d.py``, upstream registry name ``autoencoder_2d``).

Same classes, constructor arguments and attribute paths, hence the BFL key names of ``flux1-dev-ae.safetensors``
(``encoder.down.0.block.0.norm1.weight``, ``encoder.mid.attn_1.q.weight`` [C, C, 1, 1], ...).

Switches (set after construction; none renames a weight), each parity-tested against the reference:
- ``micro_batch_size`` (attribute, default None = all frames in one call): frames per encoder/decoder call,
  a memory switch (same numbers);
- ``ms_impl.layers.set_compute_dtype(net, ms.float16)``: fp16 convs; GroupNorm, swish, the attention softmax
  and the posterior stay fp32;
- ``set_conv_impl("native" | "im2col" | ...)`` (layer kit): the device conv kernel (the default on CPU and
  Ascend) or a matmul form over gathered patches (docs/performance.md).
Graph mode: ``Encoder`` / ``Decoder`` compile with ``ms.jit`` (the frame reshapes and the posterior run around
them in PyNative).
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

from ms_impl.layers import Conv2d, GroupNorm, scaled_dot_product_attention, set_conv_impl
from ms_impl.models.vae.autoencoder_kl import DiagonalGaussianDistribution

__all__ = ["AttnBlock", "ResnetBlock", "Downsample", "Upsample", "Encoder", "Decoder", "AutoEncoderFlux",
           "DiagonalGaussianDistribution"]

GROUPS = 32   # upstream hard-codes GroupNorm(num_groups=32, eps=1e-6)


def swish(x):
    """SiLU in fp32, cast back (as the layer kit's SiLU)."""
    if x.dtype == ms.float32:
        return mint.nn.functional.silu(x)
    return mint.nn.functional.silu(x.astype(ms.float32)).astype(x.dtype)


class _Container(nn.Cell):
    """Upstream's bare ``nn.Module()`` holders (``down.N``, ``up.N``, ``mid``): attributes only, never called."""

    def construct(self, x):
        raise NotImplementedError("a container of sub-cells")


class AttnBlock(nn.Cell):
    def __init__(self, in_channels):
        super().__init__()
        self.attn_backend = "math"
        self.norm = GroupNorm(GROUPS, in_channels, eps=1e-6, affine=True)
        self.q = Conv2d(in_channels, in_channels, 1)
        self.k = Conv2d(in_channels, in_channels, 1)
        self.v = Conv2d(in_channels, in_channels, 1)
        self.proj_out = Conv2d(in_channels, in_channels, 1)

    def attention(self, h_):
        h_ = self.norm(h_)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        q = mint.transpose(q.reshape(b, c, h * w), 1, 2).reshape(b, 1, h * w, c)
        k = mint.transpose(k.reshape(b, c, h * w), 1, 2).reshape(b, 1, h * w, c)
        v = mint.transpose(v.reshape(b, c, h * w), 1, 2).reshape(b, 1, h * w, c)
        o = scaled_dot_product_attention(q, k, v, backend=self.attn_backend)
        return mint.transpose(o.reshape(b, h * w, c), 1, 2).reshape(b, c, h, w)

    def construct(self, x):
        o = self.proj_out(self.attention(x))
        return x.astype(o.dtype) + o


class ResnetBlock(nn.Cell):
    def __init__(self, in_channels, out_channels=None):
        super().__init__()
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.norm1 = GroupNorm(GROUPS, in_channels, eps=1e-6, affine=True)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.norm2 = GroupNorm(GROUPS, out_channels, eps=1e-6, affine=True)
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.has_shortcut = in_channels != out_channels
        if self.has_shortcut:
            self.nin_shortcut = Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def construct(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.has_shortcut:
            x = self.nin_shortcut(x)
        return x.astype(h.dtype) + h


class Downsample(nn.Cell):
    def __init__(self, in_channels):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, stride=2, padding=0)

    def construct(self, x):
        return self.conv(ops.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Cell):
    def __init__(self, in_channels):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, stride=1, padding=1)

    def construct(self, x):
        return self.conv(mint.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Cell):
    def __init__(self, resolution=256, in_channels=3, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16):
        super().__init__()
        self.ch = ch
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels
        self.conv_in = Conv2d(in_channels, ch, 3, stride=1, padding=1)
        in_ch_mult = (1,) + tuple(ch_mult)
        self.in_ch_mult = in_ch_mult
        levels = []
        block_in = ch
        for i_level in range(self.num_resolutions):
            blocks = []
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            down = _Container()
            down.block = nn.CellList(blocks)
            down.attn = nn.CellList()   # empty upstream (no keys)
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
            levels.append(down)
        self.down = nn.CellList(levels)
        self.mid = _Container()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = GroupNorm(GROUPS, block_in, eps=1e-6, affine=True)
        self.conv_out = Conv2d(block_in, 2 * z_channels, 3, stride=1, padding=1)

    def construct(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = self.down[i_level].downsample(h)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Cell):
    def __init__(self, resolution=256, ch=128, out_ch=3, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16):
        super().__init__()
        self.ch = ch
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.ffactor = 2 ** (self.num_resolutions - 1)
        block_in = ch * ch_mult[self.num_resolutions - 1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.z_shape = (1, z_channels, curr_res, curr_res)
        self.conv_in = Conv2d(z_channels, block_in, 3, stride=1, padding=1)
        self.mid = _Container()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        levels = []
        for i_level in reversed(range(self.num_resolutions)):
            blocks = []
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            up = _Container()
            up.block = nn.CellList(blocks)
            up.attn = nn.CellList()
            if i_level != 0:
                up.upsample = Upsample(block_in)
            levels.insert(0, up)   # up[0] is applied LAST (highest resolution)
        self.up = nn.CellList(levels)
        self.norm_out = GroupNorm(GROUPS, block_in, eps=1e-6, affine=True)
        self.conv_out = Conv2d(block_in, out_ch, 3, stride=1, padding=1)

    def construct(self, z):
        h = self.conv_in(z)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h)
        for j in range(self.num_resolutions):
            i_level = self.num_resolutions - 1 - j
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


def _to_frames(x):
    b, c, t, h, w = x.shape
    return mint.permute(x, (0, 2, 1, 3, 4)).reshape(b * t, c, h, w)


def _from_frames(x, t):
    bt, c, h, w = x.shape
    return mint.permute(x.reshape(bt // t, t, c, h, w), (0, 2, 1, 3, 4))


class AutoEncoderFlux(nn.Cell):
    def __init__(self, resolution=256, in_channels=3, ch=128, out_ch=3, ch_mult=(1, 2, 4, 4), num_res_blocks=2,
                 z_channels=16, scale_factor=0.3611, shift_factor=0.1159, sample=True, from_pretrained=None,
                 cache_dir=None):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.encoder = Encoder(resolution, in_channels, ch, ch_mult, num_res_blocks, z_channels)
        self.decoder = Decoder(resolution, ch, out_ch, ch_mult, num_res_blocks, z_channels)
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor
        self.sample = sample
        self.latent_channels = self.z_channels = z_channels
        self.out_channels = out_ch
        self.spatial_compression_ratio = 2 ** (len(ch_mult) - 1)
        self.time_compression_ratio = 1
        self.compression = (1, self.spatial_compression_ratio, self.spatial_compression_ratio)
        self.micro_batch_size = None

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """``flux1-dev-ae.safetensors`` / BFL ``ae.safetensors`` (pass ``model="FluxAE"``), a folder, or any file
        the converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    def set_conv_impl(self, impl):
        set_conv_impl(self, impl)
        return self

    def get_latent_size(self, input_size):
        t, h, w = input_size
        return [t, h // self.spatial_compression_ratio, w // self.spatial_compression_ratio]

    def _frames(self, net, x):
        n = x.shape[0]
        bs = self.micro_batch_size or n
        if bs >= n:
            return net(x)
        return mint.cat([net(x[i:i + bs]) for i in range(0, n, bs)])

    def encode_moments(self, x):
        if isinstance(x, np.ndarray):
            x = Tensor(x)
        t = x.shape[2]
        return _from_frames(self._frames(self.encoder, _to_frames(x)), t)

    def encode(self, x, sample_posterior=None, noise=None, return_posterior=False):
        """z = scale * (z - shift); sample (``sample_posterior`` True, or None with ``self.sample`` True:
        upstream's default) with ``noise`` (pre-drawn, latent-shaped; None: drawn here) or the mean (False)."""
        posterior = DiagonalGaussianDistribution(self.encode_moments(x))
        if sample_posterior is None:
            sample_posterior = self.sample
        z = posterior.sample(noise) if sample_posterior else posterior.mode()
        z = self.scale_factor * (z - self.shift_factor)
        return (z, posterior) if return_posterior else z

    def encode_(self, x, noise=None):
        return self.encode(x, noise=noise, return_posterior=True)

    def decode(self, z):
        if isinstance(z, np.ndarray):
            z = Tensor(z)
        t = z.shape[2]
        z = _to_frames(z)
        z = z / self.scale_factor + self.shift_factor
        return _from_frames(self._frames(self.decoder, z), t)

    def construct(self, x, sample_posterior=None, noise=None):
        z, posterior = self.encode(x, sample_posterior=sample_posterior, noise=noise, return_posterior=True)
        return self.decode(z), posterior, z

    def get_last_layer(self):
        return self.decoder.conv_out.weight
