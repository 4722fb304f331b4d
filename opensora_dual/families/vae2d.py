"""The 2D image VAE: diffusers ``AutoencoderKL`` (SD ``sd-vae-ft-ema`` for 1.0/1.1, the SDXL VAE for 1.2).

A diffusers folder (``config.json`` with ``_class_name: AutoencoderKL`` + ``diffusion_pytorch_model.*``) maps
to the twin's constructor through ``config_from_json``. Older diffusers files name the mid-block attention
``query/key/value/proj_attn``; ``extra["converter"]["rename"]`` maps them to ``to_q/to_k/to_v/to_out.0``.
"""
import json
import os

from opensora_dual.registry import Family, register

CONFIG_KEYS = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
               "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor",
               "shift_factor", "latents_mean", "latents_std", "force_upcast", "use_quant_conv",
               "use_post_quant_conv", "mid_block_add_attention")

_BASE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
             act_fn="silu", latent_channels=4, norm_num_groups=32)

# stabilityai/sd-vae-ft-ema config.json (diffusers 0.4.2 era): scaling_factor is the diffusers default 0.18215.
SD_VAE_FT_EMA = dict(_BASE, sample_size=256, scaling_factor=0.18215)
# PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers/vae (= madebyollin/sdxl-vae-fp16-fix layout, SDXL VAE):
# own scaling_factor 0.13025, which Open-Sora 1.2 does NOT use (it hard-codes 0.18215, facts section 3).
SDXL_VAE = dict(_BASE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
# This project's small config for tests: same layout, 2 levels of 32/64 channels, GroupNorm 8.
SMALL_VAE = dict(_BASE, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, sample_size=32)

# from_pretrained names upstream configs use -> architecture (so no download is needed to build the model).
KNOWN_DIFFUSERS_VAES = {
    "stabilityai/sd-vae-ft-ema": SD_VAE_FT_EMA,
    "stabilityai/sd-vae-ft-mse": SD_VAE_FT_EMA,
    "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers": SDXL_VAE,
    "madebyollin/sdxl-vae-fp16-fix": SDXL_VAE,
    "stabilityai/sdxl-vae": SDXL_VAE,
}


def config_from_json(cfg: dict) -> dict:
    kwargs = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    for k in ("down_block_types", "up_block_types", "block_out_channels"):
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    cfg = dict(SD_VAE_FT_EMA)
    cfg.update(kwargs)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    cfg.update(_class_name="AutoencoderKL", _diffusers_version="0.27.2")
    return cfg


def autoencoder_kl_config(from_pretrained=None, subfolder=None, vae_config=None) -> dict:
    """AutoencoderKL kwargs for ``VideoAutoencoderKL``: explicit ``vae_config``, else a local diffusers folder's
    config.json, else a known hub name. Never downloads."""
    if vae_config is not None:
        return config_from_json(dict(vae_config))
    if from_pretrained is None:
        return dict(SDXL_VAE)
    folder = os.path.join(from_pretrained, subfolder) if subfolder else from_pretrained
    if os.path.isfile(os.path.join(folder, "config.json")):
        with open(os.path.join(folder, "config.json")) as f:
            return config_from_json(json.load(f))
    if from_pretrained in KNOWN_DIFFUSERS_VAES:
        return dict(KNOWN_DIFFUSERS_VAES[from_pretrained])
    raise ValueError(f"unknown 2D VAE {from_pretrained!r}: give a diffusers folder with config.json, one of "
                     f"{sorted(KNOWN_DIFFUSERS_VAES)}, or vae_config=")


def _legacy_attention_renames():
    """diffusers < 0.14 names of the VAE mid-block attention -> current names (both encoder and decoder)."""
    old_new = (("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0"))
    return [(rf"^(.*\.mid_block\.attentions\.\d+)\.{old}\.(weight|bias)$", rf"\1.{new}.\2") for old, new in old_new]


CONVERTER = {
    # regex renames applied to source keys before strict loading (source naming -> our naming)
    "rename": _legacy_attention_renames(),
}

FAMILY = register(Family(
    name="vae2d",
    class_path="models.vae.autoencoder_kl:AutoencoderKL",
    model_types=("AutoencoderKL",),
    presets={"sd-vae-ft-ema": dict(SD_VAE_FT_EMA), "sdxl-vae": dict(SDXL_VAE), "AutoencoderKL-S": dict(SMALL_VAE)},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={"converter": CONVERTER},
))
