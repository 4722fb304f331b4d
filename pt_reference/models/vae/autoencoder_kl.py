"""The 2D image VAE in the diffusers layout (``diffusers/models/autoencoders/{autoencoder_kl,vae}.py``,
``resnet.py``, ``attention_processor.py``, ``unets/unet_2d_blocks.py``), reduced to what Open-Sora uses:
``DownEncoderBlock2D`` / ``UpDecoderBlock2D``, a mid block with one single-head self-attention, GroupNorm
eps 1e-6, SiLU, no time embedding, no tiling.

Attribute paths reproduce the diffusers state-dict keys (``encoder.down_blocks.0.resnets.0.norm1.weight``,
``encoder.mid_block.attentions.0.to_q.weight``, ...), so a diffusers ``diffusion_pytorch_model.safetensors``
loads with strict=True (older files name the attention ``query/key/value/proj_attn``: the converter renames).
"""
import torch
import torch.nn.functional as F
from torch import nn

from pt_reference.layers import Conv2d, GroupNorm, Identity, Linear, SiLU, scaled_dot_product_attention

# diffusers AutoencoderKL config.json fields and defaults (what the constructor takes).
CONFIG_DEFAULTS = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, act_fn="silu", latent_channels=4,
    norm_num_groups=32, sample_size=256, scaling_factor=0.18215, shift_factor=None,
    latents_mean=None, latents_std=None, force_upcast=True, use_quant_conv=True, use_post_quant_conv=True,
    mid_block_add_attention=True,
)


class DiagonalGaussianDistribution:
    """Posterior over latents: ``parameters`` = cat(mean, logvar) on dim 1; logvar clamped to [-30, 20].

    ``sample(noise)`` takes pre-drawn standard-normal noise (shape of ``mean``) so both twins can be compared;
    upstream draws it inside (``torch.randn``). ``mode()`` is the mean.
    """

    def __init__(self, parameters, deterministic=False):
        self.parameters = parameters
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(self.logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)
        if deterministic:
            self.var = self.std = torch.zeros_like(self.mean)

    def sample(self, noise=None):
        if noise is None:
            noise = torch.randn(self.mean.shape, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * noise.to(self.mean.dtype)

    def mode(self):
        return self.mean

    def kl(self):
        if self.deterministic:
            return torch.zeros(self.mean.shape[0])
        dims = list(range(1, self.mean.ndim))
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)


class ResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` without time embedding: GN-SiLU-conv-GN-SiLU-conv + (1x1) shortcut."""

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

    def forward(self, x):
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.nonlinearity(self.norm2(h)))  # dropout 0: no op
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """diffusers ``Attention`` as the VAE mid block builds it: GroupNorm, single head (head dim = channels),
    q/k/v/out Linears with bias, residual connection, fp32 softmax (``upcast_softmax``)."""

    def __init__(self, channels, groups=32, eps=1e-6, heads=1, attn_backend="math"):
        super().__init__()
        self.heads = heads
        self.attn_backend = attn_backend
        self.group_norm = GroupNorm(groups, channels, eps=eps, affine=True)
        self.to_q = Linear(channels, channels)
        self.to_k = Linear(channels, channels)
        self.to_v = Linear(channels, channels)
        self.to_out = nn.ModuleList([Linear(channels, channels), Identity()])  # [1] is Dropout(0) upstream: no keys

    def forward(self, x):
        residual = x
        b, c, h, w = x.shape
        hs = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)      # [B, HW, C]
        q, k, v = self.to_q(hs), self.to_k(hs), self.to_v(hs)
        d = c // self.heads
        q, k, v = (t.reshape(b, h * w, self.heads, d).transpose(1, 2) for t in (q, k, v))
        o = scaled_dot_product_attention(q, k, v, backend=self.attn_backend)
        o = o.transpose(1, 2).reshape(b, h * w, c)
        o = self.to_out[0](o)
        o = o.transpose(1, 2).reshape(b, c, h, w)
        return o + residual


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv with diffusers' asymmetric zero pad (0, 1, 0, 1) (``padding=0``)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample2D(nn.Module):
    """Nearest x2 then 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        dtype = x.dtype
        if dtype == torch.bfloat16:  # upstream upcasts: nearest interpolate had no bf16 kernel
            x = x.float()
        x = F.interpolate(x, scale_factor=2.0, mode="nearest").to(dtype)
        return self.conv(x)


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if add_downsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nn.Module):
    """resnet, (attention, resnet): ``resnets.{0,1}``, ``attentions.0``."""

    def __init__(self, channels, groups, add_attention=True):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups),
                                      ResnetBlock2D(channels, channels, groups)])
        self.attentions = nn.ModuleList([Attention(channels, groups) if add_attention else Identity()])

    def forward(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    def __init__(self, in_channels=3, out_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 norm_num_groups=32, double_z=True, mid_block_add_attention=True):
        super().__init__()
        self.conv_in = Conv2d(in_channels, block_out_channels[0], 3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList()
        output_channel = block_out_channels[0]
        for i, ch in enumerate(block_out_channels):
            input_channel, output_channel = output_channel, ch
            self.down_blocks.append(DownEncoderBlock2D(input_channel, output_channel, layers_per_block, norm_num_groups,
                                                       add_downsample=i != len(block_out_channels) - 1))
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups, mid_block_add_attention)
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = SiLU()
        self.conv_out = Conv2d(block_out_channels[-1], 2 * out_channels if double_z else out_channels, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, in_channels=4, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 norm_num_groups=32, mid_block_add_attention=True):
        super().__init__()
        self.conv_in = Conv2d(in_channels, block_out_channels[-1], 3, stride=1, padding=1)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups, mid_block_add_attention)
        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        output_channel = reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            prev_output_channel, output_channel = output_channel, ch
            self.up_blocks.append(UpDecoderBlock2D(prev_output_channel, output_channel, layers_per_block + 1,
                                                   norm_num_groups, add_upsample=i != len(block_out_channels) - 1))
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.conv_act = SiLU()
        self.conv_out = Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """diffusers ``AutoencoderKL`` (constructor = its config.json fields). ``encode`` returns the posterior."""

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

        return from_pretrained(cls, path, "pt", **overrides)

    def encode(self, x):
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return DiagonalGaussianDistribution(h)

    def decode(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, sample, noise=None):
        """Reconstruction; ``noise`` None -> posterior mode (diffusers' ``sample_posterior=False``)."""
        posterior = self.encode(sample)
        z = posterior.mode() if noise is None else posterior.sample(noise)
        return self.decode(z)
