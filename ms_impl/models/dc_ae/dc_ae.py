"""MindSpore twin of ``pt_reference/models/dc_ae/dc_ae.py`` (the Open-Sora 2.0 video DC-AE, upstream
``main:opensora/models/dc_ae/models/dc_ae.py``). Same constructor (``DCAE(cfg)`` or ``DCAE(**DCAEConfig fields)``),
attribute paths and parameter names: the release ``F32T4C128_AE.safetensors`` loads strict into both twins.

Switches (set after construction; none renames a weight), each parity-tested on/off against the reference:
- upstream's: ``use_spatial_tiling`` / ``use_temporal_tiling`` (``spatial_tile_size`` px / ``temporal_tile_size``
  frames, ``tile_overlap_factor``), linear blends exactly as upstream (blended tiles feed the next blend);
- ``micro_batch_size``: batch items per encoder/decoder call; 1 (default) is upstream's ``encode_single`` loop,
  None runs the whole batch in one call (same numbers: nothing mixes batch items);
- ``ms_impl.layers.set_compute_dtype(net, ms.float16)``: fp16 conv operands; RMSNorm, SiLU, the channel means and
  the linear attention stay fp32;
- ``set_conv_impl("native" | "im2col" | ...)`` from the layer kit (dense convs; native is the default).
Graph mode: ``Encoder`` / ``Decoder`` compile with ``ms.jit``; ``set_graph_mode(True)`` makes ``encode`` /
``decode`` call the compiled ones (the tiling and micro-batch loops stay in Python around them).
"""
import mindspore as ms
from mindspore import mint, nn

from opensora_dual.families.dc_ae import DCAEConfig, make_config
from ms_impl.layers import set_conv_impl
from ms_impl.models.dc_ae.ops import (ChannelDuplicatingPixelShuffleUpSampleLayer, ConvLayer, EfficientViTBlock,
                                      IdentityLayer, InterpolateConvUpSampleLayer, OpSequential,
                                      PixelUnshuffleChannelAveragingDownSampleLayer, ResBlock, ResidualBlock,
                                      build_act, build_norm)
from ms_impl.models.hunyuan_vae.autoencoder_kl_causal_3d import _blend   # upstream's blend_v/h/t, functional


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


class Encoder(nn.Cell):
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
        self.stages = nn.CellList(stages)
        self._live = tuple(len(s.op_list) > 0 for s in stages)
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

    def construct(self, x):
        x = self.project_in(x)
        for i in range(self.num_stages):
            if self._live[i]:
                x = self.stages[i](x)
        return self.project_out(x)


class Decoder(nn.Cell):
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
        self.stages = nn.CellList(stages)
        self._live = tuple(len(s.op_list) > 0 for s in stages)
        self.project_out = OpSequential([
            build_norm(cfg.out_norm, cfg.width_list[0]), build_act(cfg.out_act),
            ConvLayer(cfg.width_list[0], cfg.in_channels, 3, 1, use_bias=True, norm=None, act_func=None,
                      is_video=cfg.is_video)])

    def construct(self, x):
        x = self.project_in(x)
        for i in range(self.num_stages - 1, -1, -1):
            if self._live[i]:
                x = self.stages[i](x)
        return self.project_out(x)



class DCAE(nn.Cell):
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
        self.micro_batch_size = 1
        self.graph_mode = False
        self._jit_fns = None

    def set_conv_impl(self, impl):
        set_conv_impl(self, impl)

    def set_graph_mode(self, on=True):
        """``encode``/``decode`` call the encoder/decoder compiled with ``ms.jit`` (on) or eagerly (off)."""
        self.graph_mode = bool(on)
        if on and self._jit_fns is None:
            self._jit_fns = (ms.jit(self.encoder.construct), ms.jit(self.decoder.construct))

    def _encoder_fn(self, x):
        return self._jit_fns[0](x) if self.graph_mode else self.encoder(x)

    def _decoder_fn(self, z):
        return self._jit_fns[1](z) if self.graph_mode else self.decoder(z)

    def _batched(self, fn, x):
        n = x.shape[0] if not self.micro_batch_size else self.micro_batch_size
        outs = [fn(x[i:i + n]) for i in range(0, x.shape[0], n)]
        return outs[0] if len(outs) == 1 else mint.cat(outs, dim=0)

    def _encode_items(self, x):
        z = self._encoder_fn(x)
        return z / self.scaling_factor if self.scaling_factor is not None else z

    def _decode_items(self, z):
        if self.scaling_factor is not None:
            z = z * self.scaling_factor
        return self._decoder_fn(z)

    def _encode(self, x):
        if self.cfg.is_training:
            return self._encoder_fn(x)
        return self._batched(self._encode_items, x)

    def _decode(self, z):
        if self.cfg.is_training:
            return self._decoder_fn(z)
        return self._batched(self._decode_items, z)

    def _spatial_tiled(self, x, fn, tile, step, blend_extent, limit):
        rows = [[fn(x[:, :, :, i:i + tile, j:j + tile]) for j in range(0, x.shape[-1], step)]
                for i in range(0, x.shape[-2], step)]
        out_rows = []
        for i, row in enumerate(rows):
            out = []
            for j in range(len(row)):
                t = row[j]
                if i > 0:
                    t = _blend(rows[i - 1][j], t, blend_extent, 3)
                if j > 0:
                    t = _blend(row[j - 1], t, blend_extent, 4)
                row[j] = t          # upstream blends in place: later neighbours see the blended tile
                out.append(t[:, :, :, :limit, :limit])
            out_rows.append(mint.cat(out, dim=-1))
        return mint.cat(out_rows, dim=-2)

    def _temporal_tiled(self, x, fn, tile, step, blend_extent, limit):
        row = [fn(x[:, :, i:i + tile]) for i in range(0, x.shape[2], step)]
        out = []
        for i in range(len(row)):
            t = row[i]
            if i > 0:
                t = _blend(row[i - 1], t, blend_extent, 2)
            row[i] = t
            out.append(t[:, :, :limit])
        return mint.cat(out, dim=2)

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

    def _encode_tile(self, tile):
        if self.use_spatial_tiling and (tile.shape[-1] > self.spatial_tile_size
                                        or tile.shape[-2] > self.spatial_tile_size):
            return self.spatial_tiled_encode(tile)
        return self._encode(tile)

    def _decode_tile(self, tile):
        if self.use_spatial_tiling and (tile.shape[-1] > self.spatial_tile_latent_size
                                        or tile.shape[-2] > self.spatial_tile_latent_size):
            return self.spatial_tiled_decode(tile)
        return self._decode(tile)

    def temporal_tiled_encode(self, x):
        blend = int(self.temporal_tile_latent_size * self.tile_overlap_factor)
        return self._temporal_tiled(x, self._encode_tile, self.temporal_tile_size,
                                    int(self.temporal_tile_size * (1 - self.tile_overlap_factor)), blend,
                                    self.temporal_tile_latent_size - blend)

    def temporal_tiled_decode(self, z):
        blend = int(self.temporal_tile_size * self.tile_overlap_factor)
        return self._temporal_tiled(z, self._decode_tile, self.temporal_tile_latent_size,
                                    int(self.temporal_tile_latent_size * (1 - self.tile_overlap_factor)), blend,
                                    self.temporal_tile_size - blend)

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

    def construct(self, x):
        """(reconstruction, None, z) as upstream."""
        x_dtype = x.dtype
        z = self.encode(x)
        return self.decode(z).astype(x_dtype), None, z

    def get_latent_size(self, input_size):
        t, h, w = input_size
        return [(t - 1) // self.time_compression_ratio + 1, (h - 1) // self.spatial_compression_ratio + 1,
                (w - 1) // self.spatial_compression_ratio + 1]
