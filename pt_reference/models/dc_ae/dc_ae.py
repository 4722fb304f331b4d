"""The video DC-AE of Open-Sora 2.0 (``dc-ae-f32t4c128``), ``main:opensora/models/dc_ae/models/dc_ae.py``.

``DCAE(cfg)`` as upstream, or ``DCAE(**kwargs)`` with the ``DCAEConfig`` fields (``encoder``/``decoder`` as dicts:
the registry presets, ``configs/vae/dc_ae.yaml``). Encoder: ConvLayer in; per stage ``depth`` blocks (ResBlock or
EfficientViT with 5x5x5 aggregation) then, except for the last stage, a stride-(t,2,2) Conv downsample + pixel
unshuffle/channel-averaging shortcut (t = 2 at the temporal stages); out: a 3x3x3 conv to the latent
plus a channel-averaging shortcut. Decoder mirrors it: 3x3x3 conv + channel-duplicating shortcut in; per stage
(bottom up) nearest-x2 + conv upsample with a channel-duplicating pixel-shuffle shortcut, then the blocks; out:
RMSNorm, ReLU, 3x3x3 conv. No KL: ``encode`` is deterministic; ``z / scaling_factor`` when it is set.

Inference (``is_training=False``) encodes and decodes one batch item at a time (upstream's ``encode_single``);
tiling (spatial 256 px / temporal 32 frames, overlap 0.25, linear blends) as upstream's switches.
"""
import torch
from torch import nn

from opensora_dual.families.dc_ae import DCAEConfig, make_config
from pt_reference.models.dc_ae.ops import (ChannelDuplicatingPixelShuffleUpSampleLayer, ConvLayer, EfficientViTBlock,
                                           IdentityLayer, InterpolateConvUpSampleLayer, OpSequential,
                                           PixelUnshuffleChannelAveragingDownSampleLayer, ResBlock, ResidualBlock,
                                           build_act, build_norm)


def build_block(block_type, in_channels, out_channels, norm, act, is_video):
    assert in_channels == out_channels
    if block_type == "ResBlock":
        main = ResBlock(in_channels, out_channels, kernel_size=3, stride=1, use_bias=(True, False), norm=(None, norm),
                        act_func=(act, None), is_video=is_video)
        return ResidualBlock(main, IdentityLayer())
    scales = {"EViT_GLU": (), "EViTS5_GLU": (5,)}.get(block_type)
    if scales is None:
        raise ValueError(f"block_type {block_type} is not supported")
    return EfficientViTBlock(in_channels, norm=norm, act_func=act, local_module="GLUMBConv", scales=scales,
                             is_video=is_video)


def build_stage_main(width, depth, block_type, norm, act, input_width, is_video):
    return [build_block(block_type[d] if isinstance(block_type, list) else block_type,
                        width if d > 0 else input_width, width, norm, act, is_video) for d in range(depth)]


def build_downsample_block(block_type, in_channels, out_channels, shortcut, is_video, temporal_downsample=False):
    if block_type != "Conv" or not is_video:
        raise NotImplementedError(f"downsample {block_type!r} (2D DC-AE) is not ported")
    stride = (2, 2, 2) if temporal_downsample else (1, 2, 2)
    block = ConvLayer(in_channels, out_channels, kernel_size=3, stride=stride, use_bias=True, norm=None,
                      act_func=None, is_video=is_video)
    if shortcut is None:
        return block
    if shortcut != "averaging":
        raise ValueError(f"shortcut {shortcut} is not supported for downsample")
    return ResidualBlock(block, PixelUnshuffleChannelAveragingDownSampleLayer(
        in_channels, out_channels, factor=2, temporal_downsample=temporal_downsample))


def build_upsample_block(block_type, in_channels, out_channels, shortcut, is_video, temporal_upsample=False):
    if block_type != "InterpolateConv":
        raise NotImplementedError(f"upsample {block_type!r} (2D DC-AE) is not ported")
    block = InterpolateConvUpSampleLayer(in_channels, out_channels, kernel_size=3, factor=2, is_video=is_video,
                                         temporal_upsample=temporal_upsample)
    if shortcut is None:
        return block
    if shortcut != "duplicating":
        raise ValueError(f"shortcut {shortcut} is not supported for upsample")
    return ResidualBlock(block, ChannelDuplicatingPixelShuffleUpSampleLayer(
        in_channels, out_channels, factor=2, temporal_upsample=temporal_upsample))


def _stage_flag(flags, i):
    return bool(flags[i]) if len(flags) else False


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        n = self.num_stages = len(cfg.width_list)
        assert len(cfg.depth_list) == n
        if cfg.depth_list[0] <= 0:
            raise NotImplementedError("a downsampling project_in (depth_list[0] == 0) is 2D only")
        self.project_in = ConvLayer(cfg.in_channels, cfg.width_list[0], 3, 1, use_bias=True, norm=None,
                                    act_func=None, is_video=cfg.is_video)
        stages = []
        for i, (width, depth) in enumerate(zip(cfg.width_list, cfg.depth_list)):
            bt = cfg.block_type[i] if isinstance(cfg.block_type, list) else cfg.block_type
            stage = build_stage_main(width, depth, bt, cfg.norm, cfg.act, width, cfg.is_video)
            if i < n - 1 and depth > 0:
                stage.append(build_downsample_block(
                    cfg.downsample_block_type, width,
                    cfg.width_list[i + 1] if cfg.downsample_match_channel else width, cfg.downsample_shortcut,
                    cfg.is_video, _stage_flag(cfg.temporal_downsample, i)))
            stages.append(OpSequential(stage))
        self.stages = nn.ModuleList(stages)
        latent = 2 * cfg.latent_channels if cfg.double_latent else cfg.latent_channels
        out = OpSequential([build_norm(cfg.out_norm, cfg.width_list[-1]), build_act(cfg.out_act),
                            ConvLayer(cfg.width_list[-1], latent, 3, 1, use_bias=True, norm=None, act_func=None,
                                      is_video=cfg.is_video)])
        if cfg.out_shortcut is None:
            self.project_out = out
        elif cfg.out_shortcut == "averaging":
            self.project_out = ResidualBlock(out, PixelUnshuffleChannelAveragingDownSampleLayer(
                cfg.width_list[-1], latent, factor=1))
        else:
            raise ValueError(f"shortcut {cfg.out_shortcut} is not supported for encoder project out")

    def forward(self, x):
        x = self.project_in(x)
        for stage in self.stages:
            if len(stage.op_list):
                x = stage(x)
        return self.project_out(x)


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        n = self.num_stages = len(cfg.width_list)
        assert len(cfg.depth_list) == n
        if cfg.depth_list[0] <= 0:
            raise NotImplementedError("an upsampling project_out (depth_list[0] == 0) is 2D only")
        block = ConvLayer(cfg.latent_channels, cfg.width_list[-1], 3, 1, use_bias=True, norm=None, act_func=None,
                          is_video=cfg.is_video)
        if cfg.in_shortcut is None:
            self.project_in = block
        elif cfg.in_shortcut == "duplicating":
            self.project_in = ResidualBlock(block, ChannelDuplicatingPixelShuffleUpSampleLayer(
                cfg.latent_channels, cfg.width_list[-1], factor=1))
        else:
            raise ValueError(f"shortcut {cfg.in_shortcut} is not supported for decoder project in")
        stages = [None] * n
        for i in reversed(range(n)):
            width, depth = cfg.width_list[i], cfg.depth_list[i]
            stage = []
            if i < n - 1 and depth > 0:
                stage.append(build_upsample_block(
                    cfg.upsample_block_type, cfg.width_list[i + 1],
                    width if cfg.upsample_match_channel else cfg.width_list[i + 1], cfg.upsample_shortcut,
                    cfg.is_video, _stage_flag(cfg.temporal_upsample, i)))
            pick = lambda v: v[i] if isinstance(v, list) else v   # noqa: E731
            stage.extend(build_stage_main(
                width, depth, pick(cfg.block_type), pick(cfg.norm), pick(cfg.act),
                width if cfg.upsample_match_channel else cfg.width_list[min(i + 1, n - 1)], cfg.is_video))
            stages[i] = OpSequential(stage)
        self.stages = nn.ModuleList(stages)
        self.project_out = OpSequential([
            build_norm(cfg.out_norm, cfg.width_list[0]), build_act(cfg.out_act),
            ConvLayer(cfg.width_list[0], cfg.in_channels, 3, 1, use_bias=True, norm=None, act_func=None,
                      is_video=cfg.is_video)])

    def forward(self, x):
        x = self.project_in(x)
        for stage in reversed(self.stages):
            if len(stage.op_list):
                x = stage(x)
        return self.project_out(x)


def _blend(a, b, extent, dim):
    """Upstream's blend_v/h/t, in place on ``b``: the first ``e`` slices along ``dim`` become
    ``a[-e + y] * (1 - y / e) + b[y] * (y / e)``."""
    e = min(a.shape[dim], b.shape[dim], extent)
    for y in range(e):
        b.select(dim, y).copy_(a.select(dim, a.shape[dim] - e + y) * (1 - y / e) + b.select(dim, y) * (y / e))
    return b


class DCAE(nn.Module):
    def __init__(self, cfg=None, **kwargs):
        super().__init__()
        cfg = cfg if isinstance(cfg, DCAEConfig) else make_config(**kwargs)
        if cfg.is_image_model:
            raise NotImplementedError("is_image_model (per-frame 2D DC-AE) is not ported")
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        self.decoder = Decoder(cfg.decoder)
        self.scaling_factor = cfg.scaling_factor
        self.time_compression_ratio = cfg.time_compression_ratio
        self.spatial_compression_ratio = cfg.spatial_compression_ratio
        self.use_spatial_tiling = cfg.use_spatial_tiling
        self.use_temporal_tiling = cfg.use_temporal_tiling
        self.spatial_tile_size = cfg.spatial_tile_size
        self.temporal_tile_size = cfg.temporal_tile_size
        self.spatial_tile_latent_size = cfg.spatial_tile_size // cfg.spatial_compression_ratio
        self.temporal_tile_latent_size = cfg.temporal_tile_size // cfg.time_compression_ratio
        self.tile_overlap_factor = cfg.tile_overlap_factor

    # ---------------------------------------------------------------- one batch item at a time (inference)
    def encode_single(self, x):
        assert x.shape[0] == 1
        z = self.encoder(x)
        return z / self.scaling_factor if self.scaling_factor is not None else z

    def _encode(self, x):
        if self.cfg.is_training:
            return self.encoder(x)       # upstream: no per-item loop and no scaling in training
        return torch.cat([self.encode_single(x[i:i + 1]) for i in range(x.shape[0])], dim=0)

    def decode_single(self, z):
        assert z.shape[0] == 1
        if self.scaling_factor is not None:
            z = z * self.scaling_factor
        return self.decoder(z)

    def _decode(self, z):
        if self.cfg.is_training:
            return self.decoder(z)
        return torch.cat([self.decode_single(z[i:i + 1]) for i in range(z.shape[0])], dim=0)

    # ---------------------------------------------------------------- tiling (upstream's, blends in place)
    def blend_v(self, a, b, blend_extent):
        return _blend(a, b, blend_extent, 3)

    def blend_h(self, a, b, blend_extent):
        return _blend(a, b, blend_extent, 4)

    def blend_t(self, a, b, blend_extent):
        return _blend(a, b, blend_extent, 2)

    def _spatial_tiled(self, x, fn, tile, step, blend_extent, limit):
        rows = [[fn(x[:, :, :, i:i + tile, j:j + tile]) for j in range(0, x.shape[-1], step)]
                for i in range(0, x.shape[-2], step)]
        out_rows = []
        for i, row in enumerate(rows):
            out = []
            for j, t in enumerate(row):
                if i > 0:
                    t = self.blend_v(rows[i - 1][j], t, blend_extent)
                if j > 0:
                    t = self.blend_h(row[j - 1], t, blend_extent)
                out.append(t[:, :, :, :limit, :limit])
            out_rows.append(torch.cat(out, dim=-1))
        return torch.cat(out_rows, dim=-2)

    def spatial_tiled_encode(self, x):
        blend = int(self.spatial_tile_latent_size * self.tile_overlap_factor)
        return self._spatial_tiled(x, self._encode, self.spatial_tile_size,
                                   int(self.spatial_tile_size * (1 - self.tile_overlap_factor)), blend,
                                   self.spatial_tile_latent_size - blend)

    def spatial_tiled_decode(self, z):
        blend = int(self.spatial_tile_size * self.tile_overlap_factor)
        return self._spatial_tiled(z, self._decode, self.spatial_tile_latent_size,
                                   int(self.spatial_tile_latent_size * (1 - self.tile_overlap_factor)), blend,
                                   self.spatial_tile_size - blend)

    def temporal_tiled_encode(self, x):
        step = int(self.temporal_tile_size * (1 - self.tile_overlap_factor))
        blend = int(self.temporal_tile_latent_size * self.tile_overlap_factor)
        limit = self.temporal_tile_latent_size - blend
        row = []
        for i in range(0, x.shape[2], step):
            tile = x[:, :, i:i + self.temporal_tile_size]
            if self.use_spatial_tiling and (tile.shape[-1] > self.spatial_tile_size
                                            or tile.shape[-2] > self.spatial_tile_size):
                row.append(self.spatial_tiled_encode(tile))
            else:
                row.append(self._encode(tile))
        out = []
        for i, tile in enumerate(row):
            if i > 0:
                tile = self.blend_t(row[i - 1], tile, blend)
            out.append(tile[:, :, :limit])
        return torch.cat(out, dim=2)

    def temporal_tiled_decode(self, z):
        step = int(self.temporal_tile_latent_size * (1 - self.tile_overlap_factor))
        blend = int(self.temporal_tile_size * self.tile_overlap_factor)
        limit = self.temporal_tile_size - blend
        row = []
        for i in range(0, z.shape[2], step):
            tile = z[:, :, i:i + self.temporal_tile_latent_size]
            if self.use_spatial_tiling and (tile.shape[-1] > self.spatial_tile_latent_size
                                            or tile.shape[-2] > self.spatial_tile_latent_size):
                row.append(self.spatial_tiled_decode(tile))
            else:
                row.append(self._decode(tile))
        out = []
        for i, tile in enumerate(row):
            if i > 0:
                tile = self.blend_t(row[i - 1], tile, blend)
            out.append(tile[:, :, :limit])
        return torch.cat(out, dim=2)

    # ---------------------------------------------------------------- public API
    def encode(self, x):
        if self.use_temporal_tiling and x.shape[2] > self.temporal_tile_size:
            return self.temporal_tiled_encode(x)
        if self.use_spatial_tiling and (x.shape[-1] > self.spatial_tile_size or x.shape[-2] > self.spatial_tile_size):
            return self.spatial_tiled_encode(x)
        return self._encode(x)

    def decode(self, z):
        if self.use_temporal_tiling and z.shape[2] > self.temporal_tile_latent_size:
            return self.temporal_tiled_decode(z)
        if self.use_spatial_tiling and (z.shape[-1] > self.spatial_tile_latent_size
                                        or z.shape[-2] > self.spatial_tile_latent_size):
            return self.spatial_tiled_decode(z)
        return self._decode(z)

    def forward(self, x):
        """(reconstruction, None, z) as upstream (no posterior: deterministic AE)."""
        x_dtype = x.dtype
        x = x.to(self.encoder.project_in.conv.weight.dtype)
        z = self.encode(x)
        return self.decode(z).to(x_dtype), None, z

    def get_latent_size(self, input_size):
        t, h, w = input_size
        return [(t - 1) // self.time_compression_ratio + 1, (h - 1) // self.spatial_compression_ratio + 1,
                (w - 1) // self.spatial_compression_ratio + 1]
