"""MindSpore twin of ``pt_reference/models/vae/autoencoder_kl.py`` (diffusers ``AutoencoderKL``).

Same classes, constructor arguments and attribute paths, hence the same parameter names. Mixed precision:
``set_compute_dtype(net, ms.float16)`` runs convs and Linears in fp16; GroupNorm and the attention softmax stay
fp32 (layer kit), and the posterior (exp of logvar) is computed in fp32.
"""
import mindspore as ms
from mindspore import mint, nn, ops

from ms_impl.layers import Conv2d, GroupNorm, Identity, Linear, SiLU, scaled_dot_product_attention
from ms_impl.perf import JitCalls


class DiagonalGaussianDistribution:
    """Posterior over latents: cat(mean, logvar) on axis 1, logvar clamped to [-30, 20], statistics in fp32.

    ``sample(noise)`` takes pre-drawn standard-normal noise (a Tensor or numpy array shaped like ``mean``);
    ``mode()`` is the mean. Outputs keep the dtype of ``parameters``.
    """

    def __init__(self, parameters, deterministic=False):
        self.parameters = parameters
        self.dtype = parameters.dtype
        mean, logvar = mint.chunk(parameters.astype(ms.float32), 2, dim=1)
        self.logvar = mint.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self._std32 = self.var = mint.zeros_like(mean)
        else:
            self._std32 = mint.exp(0.5 * self.logvar)
            self.var = mint.exp(self.logvar)
        self._mean32 = mean
        self.mean = mean.astype(self.dtype)
        self.std = self._std32.astype(self.dtype)

    def sample(self, noise=None):
        if noise is None:
            noise = ops.standard_normal(self._mean32.shape)
        noise = ms.Tensor(noise) if not isinstance(noise, ms.Tensor) else noise
        return (self._mean32 + self._std32 * noise.astype(ms.float32)).astype(self.dtype)

    def mode(self):
        return self.mean

    def kl(self):
        if self.deterministic:
            return mint.zeros((self._mean32.shape[0],), dtype=ms.float32)
        dims = tuple(range(1, self._mean32.ndim))
        return 0.5 * mint.sum(mint.pow(self._mean32, 2) + self.var - 1.0 - self.logvar, dim=dims)


class ResnetBlock2D(nn.Cell):
    def __init__(self, in_channels, out_channels=None, groups=32, eps=1e-6):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.norm2 = GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.nonlinearity = SiLU()
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, x):
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Cell):
    def __init__(self, channels, groups=32, eps=1e-6, heads=1, attn_backend="math"):
        super().__init__()
        self.heads = heads
        self.attn_backend = attn_backend
        self.group_norm = GroupNorm(groups, channels, eps=eps, affine=True)
        self.to_q = Linear(channels, channels)
        self.to_k = Linear(channels, channels)
        self.to_v = Linear(channels, channels)
        self.to_out = nn.CellList([Linear(channels, channels), Identity()])

    def construct(self, x):
        residual = x
        b, c, h, w = x.shape
        hs = mint.transpose(self.group_norm(x).reshape(b, c, h * w), 1, 2)
        d = c // self.heads
        q = mint.transpose(self.to_q(hs).reshape(b, h * w, self.heads, d), 1, 2)
        k = mint.transpose(self.to_k(hs).reshape(b, h * w, self.heads, d), 1, 2)
        v = mint.transpose(self.to_v(hs).reshape(b, h * w, self.heads, d), 1, 2)
        o = scaled_dot_product_attention(q, k, v, backend=self.attn_backend)
        o = mint.transpose(o, 1, 2).reshape(b, h * w, c)
        o = self.to_out[0](o)
        o = mint.transpose(o, 1, 2).reshape(b, c, h, w)
        return o + residual.astype(o.dtype)


class Downsample2D(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def construct(self, x):
        return self.conv(ops.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample2D(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def construct(self, x):
        x = mint.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x)


class DownEncoderBlock2D(nn.Cell):
    def __init__(self, in_channels, out_channels, num_layers, groups, add_downsample):
        super().__init__()
        self.resnets = nn.CellList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.downsamplers = nn.CellList([Downsample2D(out_channels)]) if add_downsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Cell):
    def __init__(self, in_channels, out_channels, num_layers, groups, add_upsample):
        super().__init__()
        self.resnets = nn.CellList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.upsamplers = nn.CellList([Upsample2D(out_channels)]) if add_upsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nn.Cell):
    def __init__(self, channels, groups, add_attention=True):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock2D(channels, channels, groups),
                                    ResnetBlock2D(channels, channels, groups)])
        self.attentions = nn.CellList([Attention(channels, groups) if add_attention else Identity()])

    def construct(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nn.Cell):
    def __init__(self, in_channels=3, out_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 norm_num_groups=32, double_z=True, mid_block_add_attention=True):
        super().__init__()
        self.conv_in = Conv2d(in_channels, block_out_channels[0], 3, stride=1, padding=1)
        blocks = []
        output_channel = block_out_channels[0]
        for i, ch in enumerate(block_out_channels):
            input_channel, output_channel = output_channel, ch
            blocks.append(DownEncoderBlock2D(input_channel, output_channel, layers_per_block, norm_num_groups,
                                             add_downsample=i != len(block_out_channels) - 1))
        self.down_blocks = nn.CellList(blocks)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups, mid_block_add_attention)
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = SiLU()
        self.conv_out = Conv2d(block_out_channels[-1], 2 * out_channels if double_z else out_channels, 3, padding=1)

    def construct(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Cell):
    def __init__(self, in_channels=4, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 norm_num_groups=32, mid_block_add_attention=True):
        super().__init__()
        self.conv_in = Conv2d(in_channels, block_out_channels[-1], 3, stride=1, padding=1)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups, mid_block_add_attention)
        blocks = []
        reversed_channels = list(reversed(block_out_channels))
        output_channel = reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            prev_output_channel, output_channel = output_channel, ch
            blocks.append(UpDecoderBlock2D(prev_output_channel, output_channel, layers_per_block + 1,
                                           norm_num_groups, add_upsample=i != len(block_out_channels) - 1))
        self.up_blocks = nn.CellList(blocks)
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.conv_act = SiLU()
        self.conv_out = Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def construct(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class AutoencoderKL(JitCalls, nn.Cell):
    def __init__(self, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=256,
                 scaling_factor=0.18215, shift_factor=None, latents_mean=None, latents_std=None, force_upcast=True,
                 use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True):
        super().__init__()
        if act_fn != "silu" or any(t != "DownEncoderBlock2D" for t in down_block_types) or \
                any(t != "UpDecoderBlock2D" for t in up_block_types):
            raise ValueError("only the SD/SDXL AutoencoderKL layout is supported "
                             "(DownEncoderBlock2D / UpDecoderBlock2D, act_fn silu)")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError("down_block_types / up_block_types must have one entry per block_out_channels")
        self.latent_channels = latent_channels
        self.scaling_factor = scaling_factor
        self.encoder = Encoder(in_channels, latent_channels, tuple(block_out_channels), layers_per_block,
                               norm_num_groups, True, mid_block_add_attention)
        self.decoder = Decoder(latent_channels, out_channels, tuple(block_out_channels), layers_per_block,
                               norm_num_groups, mid_block_add_attention)
        self.quant_conv = Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release/diffusers folder or any file the converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    def _encode_h(self, x):
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h

    def _decode_x(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode(self, x):
        return DiagonalGaussianDistribution(self._run("encode", self._encode_h, x))

    def decode(self, z):
        return self._run("decode", self._decode_x, z)

    def construct(self, sample, noise=None):
        posterior = self.encode(sample)
        z = posterior.mode() if noise is None else posterior.sample(noise)
        return self.decode(z)
