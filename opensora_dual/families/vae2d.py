"""The 2D image VAE: diffusers ``AutoencoderKL`` (SD ``sd-vae-ft-ema`` for 1.0/1.1, the SDXL VAE for 1.2).

A diffusers folder (``config.json`` with ``_class_name: AutoencoderKL`` + ``diffusion_pytorch_model.*``) maps
to the twin's constructor through ``config_from_json``. Older diffusers files name the mid-block attention
``query/key/value/proj_attn``; ``extra["converter"]["rename"]`` maps them to ``to_q/to_k/to_v/to_out.0``.
"""
import json
import os
import re

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


# --- converter rules (Family.extra["converter"]["source_rules"]) ----------------------------------------------
# Other names the same 2D VAE weights circulate under, decoded to the diffusers names (= ours). Decode-only:
# encode is the identity, so writing any dialect keeps the diffusers layout (invertible in the engine's sense,
# like PrefixAlias: decode never fires on our own names).
#  - LDM / original SD / mindone (``encoder.down.0.block.0.nin_shortcut``, ``mid.attn_1.q`` as a 1x1 conv,
#    ``decoder.up.0`` = the LAST diffusers up block, ``norm_out``), as in mindone's OpenSora-VAE-v1.2 ckpt
#    (mindone ``examples/opensora_hpcai/tools/ms_pnames_vae1.2.txt``) and its sd-vae-ft-ema.ckpt;
#  - diffusers < 0.14 attention names ``query/key/value/proj_attn``.
_LDM_RES = [
    (r"(encoder)\.down\.(\d+)\.block\.(\d+)\.", r"\1.down_blocks.\2.resnets.\3."),
    (r"(encoder)\.down\.(\d+)\.downsample\.conv\.", r"\1.down_blocks.\2.downsamplers.0.conv."),
    (r"(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.mid_block.attentions.0.group_norm."),
    (r"(encoder|decoder)\.mid\.attn_1\.q\.", r"\1.mid_block.attentions.0.to_q."),
    (r"(encoder|decoder)\.mid\.attn_1\.k\.", r"\1.mid_block.attentions.0.to_k."),
    (r"(encoder|decoder)\.mid\.attn_1\.v\.", r"\1.mid_block.attentions.0.to_v."),
    (r"(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.mid_block.attentions.0.to_out.0."),
    (r"(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
    (r"\.nin_shortcut\.", r".conv_shortcut."),
    (r"(\.mid_block\.attentions\.\d+)\.query\.", r"\1.to_q."),
    (r"(\.mid_block\.attentions\.\d+)\.key\.", r"\1.to_k."),
    (r"(\.mid_block\.attentions\.\d+)\.value\.", r"\1.to_v."),
    (r"(\.mid_block\.attentions\.\d+)\.proj_attn\.", r"\1.to_out.0."),
]
_LDM_UP = re.compile(r"^(.*)decoder\.up\.(\d+)\.(block\.(\d+)\.|upsample\.conv\.)")


def _make_vae_name_rule():
    from converters.rules import Rule

    class VAE2DNames(Rule):
        """LDM/mindone and legacy-diffusers names of an AutoencoderKL (anywhere in the model, e.g. under
        ``spatial_vae.module.``) -> diffusers names; a 1x1-conv attention projection [C, C, 1, 1] -> Linear
        [C, C]. A rename fires only when the target module exists in the model."""

        invertible = True

        def __init__(self):
            self._cache = None

        def _index(self, spec):
            if self._cache is None or self._cache[0] is not spec:
                modules = {k.rsplit(".", 1)[0] for k in spec.params}
                ups = {}
                for k in spec.params:
                    m = re.match(r"^(.*)decoder\.up_blocks\.(\d+)\.", k)
                    if m:
                        ups[m.group(1)] = max(ups.get(m.group(1), 0), int(m.group(2)) + 1)
                self._cache = (spec, modules, ups)
            return self._cache[1], self._cache[2]

        def decode(self, item, spec):
            if item.name in spec.params:
                return item
            modules, ups = self._index(spec)
            name = re.sub(r"^first_stage_model\.", "", item.name)
            m = _LDM_UP.match(name)
            if m and m.group(1) in ups:
                i = ups[m.group(1)] - 1 - int(m.group(2))       # LDM counts decoder levels bottom-up
                tail = f"resnets.{m.group(4)}." if m.group(4) is not None else "upsamplers.0.conv."
                name = f"{m.group(1)}decoder.up_blocks.{i}.{tail}" + name[m.end():]
            for pat, rep in _LDM_RES:
                name = re.sub(pat, rep, name)
            if name == item.name or name.rsplit(".", 1)[0] not in modules:
                return item
            out = item.renamed(name)
            p = spec.params.get(name)
            if p is not None and len(p.shape) == 2 and tuple(item.shape) == tuple(p.shape) + (1, 1):
                shape = tuple(p.shape)
                out = out.with_op(name, shape, f"1x1 conv {list(item.shape)} -> linear {list(shape)}",
                                  lambda a, shape=shape: a.reshape(shape))
            return out

        def describe(self):
            return "2D VAE: LDM/mindone and legacy diffusers names -> diffusers names (1x1-conv attention -> Linear)"

    return VAE2DNames()


def converter_hooks() -> dict:
    return {"source_rules": [_make_vae_name_rule()],
            "ignore": ["loss.*", "first_stage_model.loss.*"],   # LDM training checkpoints carry LPIPS/discriminator
            "weights_names": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]}


FAMILY = register(Family(
    name="vae2d",
    class_path="models.vae.autoencoder_kl:AutoencoderKL",
    model_types=("AutoencoderKL",),
    presets={"sd-vae-ft-ema": dict(SD_VAE_FT_EMA), "sdxl-vae": dict(SDXL_VAE), "AutoencoderKL-S": dict(SMALL_VAE)},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={"converter": converter_hooks(), "full_size_presets": ["sd-vae-ft-ema", "sdxl-vae"]},
))
