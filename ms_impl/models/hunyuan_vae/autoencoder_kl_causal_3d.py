"""MindSpore twin of ``pt_reference/models/hunyuan_vae/autoencoder_kl_causal_3d.py`` (Open-Sora 2.0
``AutoencoderKLCausal3D``, the HunyuanVideo causal 3D VAE).

Same constructor arguments, attribute paths and parameter names; the release ``hunyuan_vae.safetensors`` loads
strict into both twins (``converters.from_pretrained(..., model="HunyuanVAE")``).

Switches (set after construction; none renames a weight), each parity-tested on/off against the reference:
- upstream's own: ``use_spatial_tiling`` / ``use_temporal_tiling`` (tile sizes ``sample_size`` /
  ``sample_tsize``, overlap ``tile_overlap_factor``) and ``use_slicing`` (one batch sample at a time);
- ``ms_impl.layers.set_compute_dtype(net, ms.float16)``: fp16 convs/Linears; GroupNorm, SiLU, the softmax and
  the posterior stay fp32;
- ``set_conv_impl("native" | "im2col" | ...)``: the device conv kernel (the default on CPU and Ascend) or a
  matmul form over gathered patches (``ms_impl.layers.CONV_IMPLS``, docs/performance.md); ``set_conv3d_dtype(dtype)``: compute dtype of the Conv3d cells only (fp16 by
  default on Ascend, which has no fp32 Conv3D);
- ``set_attention_query_chunk(n)``: mid-block attention over ``n`` query tokens at a time (memory only).
Graph mode: the encoder and decoder compile with ``ms.jit`` (the tiling loops run in Python around them).
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn

from ms_impl.device import on_ascend
from ms_impl.layers import Conv3d, set_conv_impl
from ms_impl.models.hunyuan_vae.unet_causal_3d_blocks import Attention
from ms_impl.models.hunyuan_vae.vae import DecoderCausal3D, DiagonalGaussianDistribution, EncoderCausal3D


def _blend(a, b, blend_extent, axis):
    """Upstream's blend_v/h/t: the first ``e`` slices of ``b`` along ``axis`` become
    ``a[-e + y] * (1 - y/e) + b[y] * (y/e)``. Weights computed in float64 like upstream's Python floats."""
    e = min(a.shape[axis], b.shape[axis], blend_extent)
    if e <= 0:
        return b
    shape = [1] * b.ndim
    shape[axis] = e
    y = np.arange(e, dtype=np.float64) / e
    w_b = Tensor((y).reshape(shape).astype(np.float32)).astype(b.dtype)
    w_a = Tensor((1 - y).reshape(shape).astype(np.float32)).astype(a.dtype)
    n_a = a.shape[axis]
    head = mint.narrow(a, axis, n_a - e, e) * w_a + mint.narrow(b, axis, 0, e) * w_b
    if e == b.shape[axis]:
        return head
    return mint.cat((head, mint.narrow(b, axis, e, b.shape[axis] - e)), dim=axis)


class AutoencoderKLCausal3D(nn.Cell):
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
        if on_ascend():
            self.set_conv3d_dtype(ms.float16)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release file (``hunyuan_vae.safetensors``: pass ``model="HunyuanVAE"``), a folder, or any file the
        converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

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

    def set_conv3d_dtype(self, dtype):
        """Compute dtype of every Conv3d (Ascend has no fp32 Conv3D); activations keep their dtype."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, Conv3d):
                cell.compute_dtype = dtype
        return self

    def set_conv_impl(self, impl):
        set_conv_impl(self, impl)
        return self

    def set_attention_query_chunk(self, n):
        """Mid-block attention over ``n`` query tokens at a time (None: all at once)."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, Attention):
                cell.query_chunk = n
        return self

    def get_latent_size(self, input_size):
        t, h, w = input_size
        return [(t - 1) // self.time_compression_ratio + 1, (h - 1) // self.spatial_compression_ratio + 1,
                (w - 1) // self.spatial_compression_ratio + 1]

    # ------------------------------------------------------------------------------------------- encode
    def _quant(self, h):
        return self.quant_conv(h).astype(h.dtype)

    def _post_quant(self, z):
        return self.post_quant_conv(z).astype(z.dtype)

    def encode_moments(self, x):
        if self.use_temporal_tiling and x.shape[2] > self.tile_sample_min_tsize:
            return self.temporal_tiled_encode(x)
        if self.use_spatial_tiling and (x.shape[-1] > self.tile_sample_min_size
                                        or x.shape[-2] > self.tile_sample_min_size):
            return self.spatial_tiled_encode(x)
        if self.use_slicing and x.shape[0] > 1:
            h = mint.cat([self.encoder(x[i:i + 1]) for i in range(x.shape[0])])
        else:
            h = self.encoder(x)
        return self._quant(h)

    def encode(self, x, sample_posterior=True, return_posterior=False, noise=None):
        if isinstance(x, np.ndarray):
            x = Tensor(x)
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
        return self.decoder(self._post_quant(z))

    def decode(self, z):
        if isinstance(z, np.ndarray):
            z = Tensor(z)
        z = z / self.scale_factor + self.shift_factor
        if self.use_slicing and z.shape[0] > 1:
            return mint.cat([self._decode(z[i:i + 1]) for i in range(z.shape[0])])
        return self._decode(z)

    def construct(self, sample, sample_posterior=True, noise=None):
        z, posterior = self.encode(sample, sample_posterior=sample_posterior, return_posterior=True, noise=noise)
        return self.decode(z), posterior, z

    # ------------------------------------------------------------------------------------------- tiling
    @staticmethod
    def _blend_grid(rows, blend_extent, row_limit):
        """Upstream blends each tile in place, so later tiles see their neighbours already blended: the blended
        tile is written back into ``rows`` to keep that data flow."""
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j in range(len(row)):
                tile = row[j]
                if i > 0:
                    tile = _blend(rows[i - 1][j], tile, blend_extent, 3)
                if j > 0:
                    tile = _blend(row[j - 1], tile, blend_extent, 4)
                row[j] = tile
                result_row.append(tile[:, :, :, :row_limit, :row_limit])
            result_rows.append(mint.cat(result_row, dim=-1))
        return mint.cat(result_rows, dim=-2)

    def spatial_tiled_encode(self, x):
        overlap_size = int(self.tile_sample_min_size * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_latent_min_size * self.tile_overlap_factor)
        row_limit = self.tile_latent_min_size - blend_extent
        size = self.tile_sample_min_size
        rows = [[self._quant(self.encoder(x[:, :, :, i:i + size, j:j + size]))
                 for j in range(0, x.shape[-1], overlap_size)] for i in range(0, x.shape[-2], overlap_size)]
        return self._blend_grid(rows, blend_extent, row_limit)

    def spatial_tiled_decode(self, z):
        overlap_size = int(self.tile_latent_min_size * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_sample_min_size * self.tile_overlap_factor)
        row_limit = self.tile_sample_min_size - blend_extent
        size = self.tile_latent_min_size
        rows = [[self.decoder(self._post_quant(z[:, :, :, i:i + size, j:j + size]))
                 for j in range(0, z.shape[-1], overlap_size)] for i in range(0, z.shape[-2], overlap_size)]
        return self._blend_grid(rows, blend_extent, row_limit)

    @staticmethod
    def _blend_time(row, blend_extent, t_limit):
        result_row = []
        for i in range(len(row)):
            tile = row[i]
            if i > 0:
                tile = _blend(row[i - 1], tile, blend_extent, 2)
                row[i] = tile
                result_row.append(tile[:, :, :t_limit])
            else:
                result_row.append(tile[:, :, :t_limit + 1])
        return mint.cat(result_row, dim=2)

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
                tile = self._quant(self.encoder(tile))
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
                decoded = self.decoder(self._post_quant(tile))
            if i > 0:
                decoded = decoded[:, :, 1:]
            row.append(decoded)
        return self._blend_time(row, blend_extent, t_limit)
