"""The Flux image autoencoder as Open-Sora 2.0 wraps it, ``main:opensora/models/vae/autoencoder_2d.py``
(modified from BFL Flux; registered upstream as ``autoencoder_2d``, built by ``AutoEncoderFlux(...)``; used by
the t2i2v image step, ``img_flux_ae`` in ``configs/diffusion/inference/plugins/t2i2v.py``).

Module tree = upstream's = BFL's ``ae.safetensors`` key names (``encoder.down.0.block.0.norm1.weight``,
``encoder.mid.attn_1.q.weight`` [C, C, 1, 1], ``decoder.up.3.upsample.conv.weight``, ...), so the release file
``flux1-dev-ae.safetensors`` loads strict (``converters.from_pretrained(None, path, "pt", model="FluxAE")``).

- Video in, video out: [B, C, T, H, W] -> frames ``(b t) c h w`` -> 2D encoder -> [B, 2z, T, H/8, W/8] ->
  posterior (logvar clamped to [-30, 20]) -> ``z = scale_factor * (z - shift_factor)``; ``decode`` inverts the
  scaling and runs the 2D decoder frame by frame. No time compression.
- ``encode(x, sample_posterior=None, noise=None)``: None follows ``self.sample`` (upstream's config default
  True: upstream's ``encode`` SAMPLES). ``sample_posterior=False`` is the deterministic encode (posterior mean);
  when sampling, ``noise`` is the pre-drawn standard normal of the latent's shape (None: drawn here).
- ``micro_batch_size`` (attribute, default None = every frame in one call): frames per encoder/decoder call.
  Not upstream's (it calls the 2D nets on all frames); same numbers, less memory.
"""
import torch
import torch.nn.functional as F
from torch import nn

from pt_reference.layers import Conv2d, GroupNorm, scaled_dot_product_attention
from pt_reference.models.vae.autoencoder_kl import DiagonalGaussianDistribution

__all__ = ["AttnBlock", "ResnetBlock", "Downsample", "Upsample", "Encoder", "Decoder", "AutoEncoderFlux",
           "DiagonalGaussianDistribution"]

GROUPS = 32   # upstream hard-codes GroupNorm(num_groups=32, eps=1e-6)


def swish(x):
    return F.silu(x)


class AttnBlock(nn.Module):
    """GroupNorm, q/k/v/proj_out 1x1 convs, one head of width C over the H*W tokens (scale C**-0.5), residual."""

    def __init__(self, in_channels):
        super().__init__()
        self.attn_backend = "math"   # "sdpa": PyTorch's fused kernel, as upstream calls it
        self.norm = GroupNorm(GROUPS, in_channels, eps=1e-6, affine=True)
        self.q = Conv2d(in_channels, in_channels, 1)
        self.k = Conv2d(in_channels, in_channels, 1)
        self.v = Conv2d(in_channels, in_channels, 1)
        self.proj_out = Conv2d(in_channels, in_channels, 1)

    def attention(self, h_):
        h_ = self.norm(h_)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        # "b c h w -> b 1 (h w) c"
        q, k, v = (t.reshape(b, c, h * w).transpose(1, 2).unsqueeze(1) for t in (q, k, v))
        o = scaled_dot_product_attention(q, k, v, backend=self.attn_backend)
        return o.squeeze(1).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x):
        return x + self.proj_out(self.attention(x))


class ResnetBlock(nn.Module):
    """GN-swish-conv3x3-GN-swish-conv3x3 + ``nin_shortcut`` (1x1) when the channel count changes."""

    def __init__(self, in_channels, out_channels=None):
        super().__init__()
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.norm1 = GroupNorm(GROUPS, in_channels, eps=1e-6, affine=True)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.norm2 = GroupNorm(GROUPS, out_channels, eps=1e-6, affine=True)
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Zero pad (0, 1, 0, 1) (right and bottom), then a stride-2 3x3 conv with no padding: H -> H // 2."""

    def __init__(self, in_channels):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv."""

    def __init__(self, in_channels):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
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
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block = nn.ModuleList()
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            down = nn.Module()
            down.block = block
            down.attn = nn.ModuleList()   # empty upstream (no keys)
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = GroupNorm(GROUPS, block_in, eps=1e-6, affine=True)
        self.conv_out = Conv2d(block_in, 2 * z_channels, 3, stride=1, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](h)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = self.down[i_level].downsample(h)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
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
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block = nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            up = nn.Module()
            up.block = block
            up.attn = nn.ModuleList()
            if i_level != 0:
                up.upsample = Upsample(block_in)
            self.up.insert(0, up)   # up[0] is applied LAST (highest resolution)
        self.norm_out = GroupNorm(GROUPS, block_in, eps=1e-6, affine=True)
        self.conv_out = Conv2d(block_in, out_ch, 3, stride=1, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h)
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


def _to_frames(x):
    """[B, C, T, H, W] -> [(B T), C, H, W] ("b c t h w -> (b t) c h w")."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _from_frames(x, t):
    """[(B T), C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


class AutoEncoderFlux(nn.Module):
    """Upstream's ``AutoEncoder(AutoEncoderConfig)``, built from ``AutoEncoderFlux``'s keywords (+ ``sample``).

    ``from_pretrained`` / ``cache_dir`` are accepted (upstream config dicts carry them) and ignored: weights come
    through the converter (``from_pretrained`` classmethod)."""

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

        return from_pretrained(cls, path, "pt", **overrides)

    def get_latent_size(self, input_size):
        t, h, w = input_size
        return [t, h // self.spatial_compression_ratio, w // self.spatial_compression_ratio]

    def _frames(self, net, x):
        n = x.shape[0]
        bs = self.micro_batch_size or n
        if bs >= n:
            return net(x)
        return torch.cat([net(x[i:i + bs]) for i in range(0, n, bs)])

    def encode_moments(self, x):
        """cat(mean, logvar) [B, 2z, T, h, w] (before the clamp)."""
        t = x.shape[2]
        return _from_frames(self._frames(self.encoder, _to_frames(x)), t)

    def encode(self, x, sample_posterior=None, noise=None, return_posterior=False):
        """z = scale * (z - shift); z the posterior sample (``sample_posterior`` True, or None with
        ``self.sample`` True: upstream's default) or its mean (False: deterministic)."""
        posterior = DiagonalGaussianDistribution(self.encode_moments(x))
        if sample_posterior is None:
            sample_posterior = self.sample
        z = posterior.sample(noise) if sample_posterior else posterior.mode()
        z = self.scale_factor * (z - self.shift_factor)
        return (z, posterior) if return_posterior else z

    def encode_(self, x, noise=None):
        """Upstream's ``encode_``: (z, posterior), sampling as ``self.sample`` says."""
        return self.encode(x, noise=noise, return_posterior=True)

    def decode(self, z):
        t = z.shape[2]
        z = _to_frames(z)
        z = z / self.scale_factor + self.shift_factor
        return _from_frames(self._frames(self.decoder, z), t)

    def forward(self, x, sample_posterior=None, noise=None):
        """(x_rec, posterior, z), as upstream's forward."""
        z, posterior = self.encode(x, sample_posterior=sample_posterior, noise=noise, return_posterior=True)
        return self.decode(z), posterior, z

    def get_last_layer(self):
        return self.decoder.conv_out.weight
