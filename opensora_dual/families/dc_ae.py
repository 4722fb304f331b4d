"""The video DC-AE of Open-Sora 2.0 (``dc-ae-f32t4c128``, upstream ``main:opensora/models/dc_ae/*``: ``DCAE`` built
from a ``DCAEConfig``; registry name ``dc_ae``). Framework-free: the config dataclasses both twins build from, the
latent-size rule, config.json mapping and the family registration.

Release: ``hpcai-tech/Open-Sora-v2-Video-DC-AE`` ships ``F32T4C128_AE.safetensors``; upstream's inference config
builds ``DCAE_HF("dc-ae-f32t4c128")`` from scratch and loads that file with ``load_checkpoint`` (keys = the
``DCAE`` state dict, e.g. ``encoder.stages.3.op_list.0.context_module.main.qkv.conv.weight``). Here:
``converters.from_pretrained(None, "F32T4C128_AE.safetensors", "pt", model="DC-AE-f32t4c128")``.
Presets: ``configs/vae/dc_ae.yaml``.
"""
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Tuple

from opensora_dual.registry import Family, load_presets, register


@dataclass
class EncoderConfig:     # upstream EncoderConfig (defaults = upstream's)
    in_channels: int = 3
    latent_channels: int = 32
    width_list: Tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    depth_list: Tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    block_type: Any = "ResBlock"
    norm: str = "rms2d"
    act: str = "silu"
    downsample_block_type: str = "ConvPixelUnshuffle"
    downsample_match_channel: bool = True
    downsample_shortcut: Optional[str] = "averaging"
    out_norm: Optional[str] = None
    out_act: Optional[str] = None
    out_shortcut: Optional[str] = "averaging"
    double_latent: bool = False
    is_video: bool = False
    temporal_downsample: Tuple[bool, ...] = ()
    tune_channel_proj: bool = False


@dataclass
class DecoderConfig:     # upstream DecoderConfig
    in_channels: int = 3
    latent_channels: int = 32
    in_shortcut: Optional[str] = "duplicating"
    width_list: Tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    depth_list: Tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    block_type: Any = "ResBlock"
    norm: Any = "rms2d"
    act: Any = "silu"
    upsample_block_type: str = "ConvPixelShuffle"
    upsample_match_channel: bool = True
    upsample_shortcut: str = "duplicating"
    out_norm: str = "rms2d"
    out_act: str = "relu"
    is_video: bool = False
    temporal_upsample: Tuple[bool, ...] = ()
    tune_channel_proj: bool = False


@dataclass
class DCAEConfig:        # upstream DCAEConfig (pretrained_path/pretrained_source dropped: weights come via converters)
    in_channels: int = 3
    latent_channels: int = 32
    time_compression_ratio: int = 1
    spatial_compression_ratio: int = 32
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    use_quant_conv: bool = False
    scaling_factor: Optional[float] = None
    is_image_model: bool = False
    tune_channel_proj: bool = False
    train_decoder_only: bool = False
    is_training: bool = False
    use_spatial_tiling: bool = False
    use_temporal_tiling: bool = False
    spatial_tile_size: int = 256
    temporal_tile_size: int = 32
    tile_overlap_factor: float = 0.25


TOP_KEYS = tuple(f.name for f in fields(DCAEConfig) if f.name not in ("encoder", "decoder"))


def _tuplify(d):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def make_config(**kwargs) -> DCAEConfig:
    """Constructor kwargs (``encoder``/``decoder`` as dicts or config objects) -> ``DCAEConfig``. The sub-configs
    inherit ``in_channels``/``latent_channels`` from the top level (upstream's ``${..in_channels}``)."""
    unknown = set(kwargs) - set(TOP_KEYS) - {"encoder", "decoder"}
    if unknown:
        raise TypeError(f"unknown DCAE arguments: {sorted(unknown)}")
    top = {k: kwargs[k] for k in TOP_KEYS if k in kwargs}
    subs = {}
    for name, cls in (("encoder", EncoderConfig), ("decoder", DecoderConfig)):
        sub = kwargs.get(name) or {}
        sub = asdict(sub) if not isinstance(sub, dict) else dict(sub)
        sub = _tuplify(sub)
        for k in ("block_type", "norm", "act"):   # upstream allows per-stage lists for these
            if isinstance(sub.get(k), tuple):
                sub[k] = list(sub[k])
        sub.update(in_channels=top.get("in_channels", 3), latent_channels=top.get("latent_channels", 32))
        subs[name] = cls(**sub)
    return DCAEConfig(**top, **subs)


def config_kwargs(cfg: DCAEConfig) -> dict:
    """``DCAEConfig`` -> constructor kwargs (nested plain dicts, tuples)."""
    d = asdict(cfg)
    for name in ("encoder", "decoder"):
        d[name] = {k: v for k, v in d[name].items() if k not in ("in_channels", "latent_channels")}
    return d


def latent_size(kwargs, t, h, w):
    """Latent [T, H, W] of a [t, h, w] video: upstream's ``get_latent_size`` (valid for t = 1 or a multiple of 4,
    h and w multiples of the spatial ratio: what the network accepts)."""
    cfg = make_config(**kwargs)
    return ((t - 1) // cfg.time_compression_ratio + 1, (h - 1) // cfg.spatial_compression_ratio + 1,
            (w - 1) // cfg.spatial_compression_ratio + 1)


# configs/vae/dc_ae.yaml (load_presets reads configs/models/; the VAE presets live beside the other VAEs')
PRESETS = load_presets(os.path.join(os.pardir, "vae", "dc_ae.yaml"))
RELEASE = "DC-AE-f32t4c128"
UPSTREAM_NAMES = {"dc-ae-f32t4c128": RELEASE}     # upstream REGISTERED_DCAE_MODEL name -> our preset
# upstream's DC_AE(...) factory arguments that set attributes after construction
_FACTORY_ATTRS = ("use_spatial_tiling", "use_temporal_tiling", "spatial_tile_size", "temporal_tile_size",
                  "tile_overlap_factor", "scaling_factor", "is_training")


def config_from_json(cfg: dict) -> dict:
    """Our config.json (full DCAEConfig), upstream's ``ae = dict(type="dc_ae", model_name=..., ...)`` or the
    ``PyTorchModelHubMixin`` config of ``DCAE_HF`` (``{"model_name": ...}``)."""
    if cfg.get("type") not in (None, "dc_ae"):
        raise ValueError(f"not a dc_ae config: type {cfg.get('type')!r}")
    if "model_name" in cfg:
        name = cfg["model_name"]
        if name not in UPSTREAM_NAMES:
            raise ValueError(f"DC-AE {name!r} is not ported; known: {sorted(UPSTREAM_NAMES)}")
        kwargs = config_kwargs(make_config(**PRESETS[UPSTREAM_NAMES[name]]))
        # DC_AE() defaults: no tiling, tile 256/32, overlap 0.25, scaling unchanged unless given
        kwargs.update(use_spatial_tiling=False, use_temporal_tiling=False)
        for k in _FACTORY_ATTRS:
            if cfg.get(k) is not None:
                kwargs[k] = cfg[k]
        return kwargs
    kw = {k: cfg[k] for k in TOP_KEYS if k in cfg}
    for name in ("encoder", "decoder"):
        if name in cfg:
            kw[name] = cfg[name]
    return config_kwargs(make_config(**kw))


def config_to_json(kwargs: dict) -> dict:
    d = config_kwargs(make_config(**kwargs))

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v

    d = plain(d)
    d.update(model_type="DCAE", _class_name="DCAE")
    return d


def example_inputs(kwargs: dict, rng, batch=1, frames=8, height=32, width=32):
    """``forward(x)`` / ``encode(x)`` input: a video in [-1, 1] (frames 1 or a multiple of the time ratio)."""
    import numpy as np

    cfg = make_config(**kwargs)
    return {"x": rng.uniform(-1.0, 1.0, (batch, cfg.in_channels, frames, height, width)).astype(np.float32)}


def _converter_hooks():
    return {"weights_names": ["F32T4C128_AE.safetensors"]}


FAMILY = register(Family(
    name="dc_ae",
    class_path="models.dc_ae.dc_ae:DCAE",
    model_types=("DCAE", "DCAE_HF", "dc_ae"),
    presets={name: dict(kw) for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "converter": _converter_hooks(),
        "example_inputs": example_inputs,
        "full_size_presets": (RELEASE,),
        # parity extras: the whole-model call and level used by generic harnesses
        "parity_case": {"call": "encode", "level": "model_small"},
    },
))
