"""The HunyuanVideo causal 3D VAE of Open-Sora 2.0, ``main:opensora/models/hunyuan_vae/*``
(``AutoencoderKLCausal3D``, upstream registry name ``hunyuan_vae``).

Release: ``hpcai-tech/Open-Sora-v2`` ships a bare ``hunyuan_vae.safetensors`` (no config.json; keys are ours,
e.g. ``encoder.down_blocks.0.downsamplers.0.conv.conv.weight``). A preset builds the model and the converter
loads the file strict: ``converters.from_pretrained(None, "hunyuan_vae.safetensors", "pt", model="HunyuanVAE")``.
Presets: ``configs/vae/hunyuan_vae.yaml`` (data, shared by both backends).
"""
import math
import os

from opensora_dual.registry import Family, json_from_kwargs, load_presets, register

# upstream AutoEncoder3DConfig fields and defaults (main:opensora/models/hunyuan_vae/autoencoder_kl_causal_3d.py)
CONFIG_DEFAULTS = dict(
    act_fn="silu", in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
    scale_factor=0.476986, shift_factor=0.0, time_compression_ratio=4, spatial_compression_ratio=8,
    mid_block_add_attention=True, block_out_channels=(128, 256, 512, 512), sample_size=256, sample_tsize=64,
    use_slicing=False, use_spatial_tiling=False, use_temporal_tiling=False, tile_overlap_factor=0.25, dropout=0.0,
    channel=False,
)

# configs/vae/hunyuan_vae.yaml (load_presets reads configs/models/; the VAE presets live beside the other VAEs')
PRESETS = load_presets(os.path.join(os.pardir, "vae", "hunyuan_vae.yaml"))


def level_factors(i, n_levels, time_compression_ratio, spatial_compression_ratio):
    """(time factor, space factor) of encoder level ``i`` (decoder level ``i`` counts from the bottom), upstream's
    rule in ``EncoderCausal3D``/``DecoderCausal3D``: space while ``i < log2(spatial ratio)``; for a time ratio of 4,
    time at the ``log2(4)`` levels before the last; for 8, time wherever space."""
    n_space = int(math.log2(spatial_compression_ratio))
    n_time = int(math.log2(time_compression_ratio))
    is_final = i == n_levels - 1
    if time_compression_ratio == 4:
        space = i < n_space
        time = i >= n_levels - 1 - n_time and not is_final
    elif time_compression_ratio == 8:
        space = time = i < n_space
    else:
        raise ValueError(f"Unsupported time_compression_ratio: {time_compression_ratio}.")
    return (2 if time else 1), (2 if space else 1)


def latent_size(kwargs, t, h, w):
    """Latent [T, H, W] of a [t, h, w] video (causal: the first frame alone, then 4 frames per latent)."""
    cfg = {**CONFIG_DEFAULTS, **kwargs}
    tf, sf = 1, 1
    for i in range(len(cfg["block_out_channels"])):
        a, b = level_factors(i, len(cfg["block_out_channels"]), cfg["time_compression_ratio"],
                             cfg["spatial_compression_ratio"])
        tf, sf = tf * a, sf * b
    return (t - 1) // tf + 1, -(-h // sf), -(-w // sf)


def config_from_json(cfg: dict) -> dict:
    """Our config.json, upstream's ``ae = dict(type="hunyuan_vae", ...)`` or a diffusers-style HunyuanVideo
    ``vae/config.json`` (``scaling_factor`` -> ``scale_factor``; block type lists are implied)."""
    if cfg.get("type") not in (None, "hunyuan_vae") and cfg.get("model_type") is None:
        raise ValueError(f"not a hunyuan_vae config: type {cfg.get('type')!r}")
    kwargs = {k: cfg[k] for k in CONFIG_DEFAULTS if k in cfg}
    if "scale_factor" not in kwargs and cfg.get("scaling_factor") is not None:
        kwargs["scale_factor"] = cfg["scaling_factor"]
    if "shift_factor" in kwargs and kwargs["shift_factor"] is None:
        kwargs["shift_factor"] = 0.0
    for k in ("block_out_channels", "sample_size"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    return json_from_kwargs(CONFIG_DEFAULTS, kwargs, model_type="AutoencoderKLCausal3D",
                            _class_name="AutoencoderKLCausal3D")


def example_inputs(kwargs: dict, rng, batch=1, frames=5, height=16, width=16):
    """``forward(sample, noise=...)`` inputs: a video in [-1, 1] and the posterior noise (latent-shaped)."""
    import numpy as np

    cfg = {**CONFIG_DEFAULTS, **kwargs}
    lt, lh, lw = latent_size(cfg, frames, height, width)
    return {"sample": rng.uniform(-1.0, 1.0, (batch, cfg["in_channels"], frames, height, width)).astype(np.float32),
            "noise": rng.standard_normal((batch, cfg["latent_channels"], lt, lh, lw)).astype(np.float32)}


def _converter_hooks():
    from converters.rules import RegexRename, StripPrefix

    attn = r"(\.mid_block\.attentions\.\d+)\."
    return {
        # HunyuanVideo's own pytorch_model.pt nests the VAE under "vae."; diffusers < 0.14 attention names.
        "source_rules": [StripPrefix(("vae.",)),
                         RegexRename(attn + r"query\.", r"\1.to_q."), RegexRename(attn + r"key\.", r"\1.to_k."),
                         RegexRename(attn + r"value\.", r"\1.to_v."),
                         RegexRename(attn + r"proj_attn\.", r"\1.to_out.0.")],
        "weights_names": ["hunyuan_vae.safetensors"],
    }


FAMILY = register(Family(
    name="hunyuan_vae",
    class_path="models.hunyuan_vae.autoencoder_kl_causal_3d:AutoencoderKLCausal3D",
    model_types=("AutoencoderKLCausal3D", "hunyuan_vae"),
    presets={name: dict(kw) for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "converter": _converter_hooks(),
        "example_inputs": example_inputs,
        "full_size_presets": ("HunyuanVAE",),
    },
))
