"""The HunyuanVideo causal 3D VAE of Open-Sora 2.0, ``main:opensora/models/hunyuan_vae/autoencoder_kl_causal_3d.py``
(``AutoencoderKLCausal3D``, registered upstream as ``hunyuan_vae``).

Constructor arguments are the fields of upstream's ``AutoEncoder3DConfig`` (passed as keywords instead of one
dataclass); attribute paths reproduce the keys of the release ``hunyuan_vae.safetensors``, so it loads strict.

- ``encode(x)``: [B, 3, T, H, W] in [-1, 1] -> z [B, 16, (T-1)/4+1, H/8, W/8] = ``scale_factor * (z - shift)``
  with z the posterior sample (``sample_posterior=True``, upstream's default; pass ``noise`` to make it
  deterministic) or its mean.
- ``decode(z)``: the inverse scaling, then the decoder.
- Tiling (upstream's, kept with its quirks): spatial tiles of ``sample_size`` pixels (latent tiles of
  ``sample_size / 2**(levels-1)``) overlapping by ``tile_overlap_factor``, linearly blended top and left, and
  temporal tiles of ``sample_tsize + 1`` frames. The blends write into the current tile in place, and the later
  tiles blend against those already-blended tiles (upstream's aliasing); the port reproduces that data flow.
- ``use_slicing``: one sample of the batch at a time.
"""
import torch
from torch import nn

from pt_reference.layers import Conv3d
from pt_reference.models.hunyuan_vae.vae import DecoderCausal3D, DiagonalGaussianDistribution, EncoderCausal3D


class AutoencoderKLCausal3D(nn.Module):
    def __init__(self, act_fn="silu", in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                 norm_num_groups=32, scale_factor=0.476986, shift_factor=0.0, time_compression_ratio=4,
                 spatial_compression_ratio=8, mid_block_add_attention=True, block_out_channels=(128, 256, 512, 512),
                 sample_size=256, sample_tsize=64, use_slicing=False, use_spatial_tiling=False,
                 use_temporal_tiling=False, tile_overlap_factor=0.25, dropout=0.0, channel=False,
                 from_pretrained=None):
        super().__init__()
        if channel:
            raise ValueError("channel=True (upstream's vae_channel variant) is not part of the 2.0 release")
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor
        self.time_compression_ratio = time_compression_ratio
        self.spatial_compression_ratio = spatial_compression_ratio
        self.z_channels = latent_channels
        arch = dict(block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                    act_fn=act_fn, norm_num_groups=norm_num_groups, time_compression_ratio=time_compression_ratio,
                    spatial_compression_ratio=spatial_compression_ratio,
                    mid_block_add_attention=mid_block_add_attention, dropout=dropout)
        self.encoder = EncoderCausal3D(in_channels=in_channels, out_channels=latent_channels, double_z=True, **arch)
        self.decoder = DecoderCausal3D(in_channels=latent_channels, out_channels=out_channels, **arch)
        self.quant_conv = Conv3d(2 * latent_channels, 2 * latent_channels, kernel_size=1)
        self.post_quant_conv = Conv3d(latent_channels, latent_channels, kernel_size=1)
        self.use_slicing = use_slicing
        self.use_spatial_tiling = use_spatial_tiling
        self.use_temporal_tiling = use_temporal_tiling
        self.tile_sample_min_tsize = sample_tsize
        self.tile_latent_min_tsize = sample_tsize // time_compression_ratio
        self.tile_sample_min_size = sample_size
        size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.tile_latent_min_size = int(size / (2 ** (len(block_out_channels) - 1)))
        self.tile_overlap_factor = tile_overlap_factor

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release file (``hunyuan_vae.safetensors``: pass ``model="HunyuanVAE"``), a folder, or any file the
        converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "pt", **overrides)

    # ------------------------------------------------------------------------------------------- switches
    def enable_spatial_tiling(self, use_tiling=True):
        self.use_spatial_tiling = use_tiling

    def enable_temporal_tiling(self, use_tiling=True):
        self.use_temporal_tiling = use_tiling

    def enable_tiling(self, use_tiling=True):
        self.enable_spatial_tiling(use_tiling)
        self.enable_temporal_tiling(use_tiling)

    def disable_tiling(self):
        self.enable_tiling(False)

    def get_latent_size(self, input_size):
        t, h, w = input_size
        return [(t - 1) // self.time_compression_ratio + 1, (h - 1) // self.spatial_compression_ratio + 1,
                (w - 1) // self.spatial_compression_ratio + 1]

    # ------------------------------------------------------------------------------------------- encode
    def encode_moments(self, x):
        """cat(mean, logvar) before the posterior, through the tiling/slicing paths upstream's encode takes."""
        if self.use_temporal_tiling and x.shape[2] > self.tile_sample_min_tsize:
            return self.temporal_tiled_encode(x)
        if self.use_spatial_tiling and (x.shape[-1] > self.tile_sample_min_size
                                        or x.shape[-2] > self.tile_sample_min_size):
            return self.spatial_tiled_encode(x)
        if self.use_slicing and x.shape[0] > 1:
            h = torch.cat([self.encoder(s) for s in x.split(1)])
        else:
            h = self.encoder(x)
        return self.quant_conv(h)

    def encode(self, x, sample_posterior=True, return_posterior=False, noise=None):
        """``noise``: pre-drawn standard normal noise shaped like the latent (None: drawn here)."""
        posterior = DiagonalGaussianDistribution(self.encode_moments(x))
        z = posterior.sample(noise) if sample_posterior else posterior.mode()
        z = self.scale_factor * (z - self.shift_factor)
        return (z, posterior) if return_posterior else z

    # ------------------------------------------------------------------------------------------- decode
    def _decode(self, z):
        if self.use_temporal_tiling and z.shape[2] > self.tile_latent_min_tsize:
            return self.temporal_tiled_decode(z)
        if self.use_spatial_tiling and (z.shape[-1] > self.tile_latent_min_size
                                        or z.shape[-2] > self.tile_latent_min_size):
            return self.spatial_tiled_decode(z)
        return self.decoder(self.post_quant_conv(z))

    def decode(self, z):
        z = z / self.scale_factor + self.shift_factor
        if self.use_slicing and z.shape[0] > 1:
            return torch.cat([self._decode(s) for s in z.split(1)])
        return self._decode(z)

    def forward(self, sample, sample_posterior=True, noise=None):
        z, posterior = self.encode(sample, sample_posterior=sample_posterior, return_posterior=True, noise=noise)
        return self.decode(z), posterior, z

    # ------------------------------------------------------------------------------------------- tiling
    @staticmethod
    def blend_v(a, b, blend_extent):
        blend_extent = min(a.shape[-2], b.shape[-2], blend_extent)
        for y in range(blend_extent):
            b[:, :, :, y, :] = a[:, :, :, -blend_extent + y, :] * (1 - y / blend_extent) + \
                b[:, :, :, y, :] * (y / blend_extent)
        return b

    @staticmethod
    def blend_h(a, b, blend_extent):
        blend_extent = min(a.shape[-1], b.shape[-1], blend_extent)
        for x in range(blend_extent):
            b[:, :, :, :, x] = a[:, :, :, :, -blend_extent + x] * (1 - x / blend_extent) + \
                b[:, :, :, :, x] * (x / blend_extent)
        return b

    @staticmethod
    def blend_t(a, b, blend_extent):
        blend_extent = min(a.shape[-3], b.shape[-3], blend_extent)
        for x in range(blend_extent):
            b[:, :, x, :, :] = a[:, :, -blend_extent + x, :, :] * (1 - x / blend_extent) + \
                b[:, :, x, :, :] * (x / blend_extent)
        return b

    def _blend_grid(self, rows, blend_extent, row_limit):
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = self.blend_v(rows[i - 1][j], tile, blend_extent)
                if j > 0:
                    tile = self.blend_h(row[j - 1], tile, blend_extent)
                result_row.append(tile[:, :, :, :row_limit, :row_limit])
            result_rows.append(torch.cat(result_row, dim=-1))
        return torch.cat(result_rows, dim=-2)

    def spatial_tiled_encode(self, x):
        overlap_size = int(self.tile_sample_min_size * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_latent_min_size * self.tile_overlap_factor)
        row_limit = self.tile_latent_min_size - blend_extent
        size = self.tile_sample_min_size
        rows = [[self.quant_conv(self.encoder(x[:, :, :, i:i + size, j:j + size]))
                 for j in range(0, x.shape[-1], overlap_size)] for i in range(0, x.shape[-2], overlap_size)]
        return self._blend_grid(rows, blend_extent, row_limit)

    def spatial_tiled_decode(self, z):
        overlap_size = int(self.tile_latent_min_size * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_sample_min_size * self.tile_overlap_factor)
        row_limit = self.tile_sample_min_size - blend_extent
        size = self.tile_latent_min_size
        rows = [[self.decoder(self.post_quant_conv(z[:, :, :, i:i + size, j:j + size]))
                 for j in range(0, z.shape[-1], overlap_size)] for i in range(0, z.shape[-2], overlap_size)]
        return self._blend_grid(rows, blend_extent, row_limit)

    def _blend_time(self, row, blend_extent, t_limit):
        result_row = []
        for i, tile in enumerate(row):
            if i > 0:
                tile = self.blend_t(row[i - 1], tile, blend_extent)
                result_row.append(tile[:, :, :t_limit])
            else:
                result_row.append(tile[:, :, :t_limit + 1])
        return torch.cat(result_row, dim=2)

    def temporal_tiled_encode(self, x):
        overlap_size = int(self.tile_sample_min_tsize * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_latent_min_tsize * self.tile_overlap_factor)
        t_limit = self.tile_latent_min_tsize - blend_extent
        row = []
        for i in range(0, x.shape[2], overlap_size):
            tile = x[:, :, i:i + self.tile_sample_min_tsize + 1]
            if self.use_spatial_tiling and (tile.shape[-1] > self.tile_sample_min_size
                                            or tile.shape[-2] > self.tile_sample_min_size):
                tile = self.spatial_tiled_encode(tile)
            else:
                tile = self.quant_conv(self.encoder(tile))
            if i > 0:
                tile = tile[:, :, 1:]
            row.append(tile)
        return self._blend_time(row, blend_extent, t_limit)

    def temporal_tiled_decode(self, z):
        overlap_size = int(self.tile_latent_min_tsize * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_sample_min_tsize * self.tile_overlap_factor)
        t_limit = self.tile_sample_min_tsize - blend_extent
        row = []
        for i in range(0, z.shape[2], overlap_size):
            tile = z[:, :, i:i + self.tile_latent_min_tsize + 1]
            if self.use_spatial_tiling and (tile.shape[-1] > self.tile_latent_min_size
                                            or tile.shape[-2] > self.tile_latent_min_size):
                decoded = self.spatial_tiled_decode(tile)
            else:
                decoded = self.decoder(self.post_quant_conv(tile))
            if i > 0:
                decoded = decoded[:, :, 1:]
            row.append(decoded)
        return self._blend_time(row, blend_extent, t_limit)
