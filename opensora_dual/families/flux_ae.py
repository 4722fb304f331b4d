"""The Flux image autoencoder of Open-Sora 2.0, ``main:opensora/models/vae/autoencoder_2d.py`` (upstream registry
name ``autoencoder_2d``, function ``AutoEncoderFlux``; used by the t2i2v image step).

Release: ``hpcai-tech/Open-Sora-v2`` ships a bare ``flux1-dev-ae.safetensors`` (no config.json), the BFL
``FLUX.1-dev`` ``ae.safetensors``; its keys are ours (``encoder.down.0.block.0.norm1.weight``,
``encoder.mid.attn_1.q.weight`` as a 1x1 conv, ``decoder.up.3.upsample.conv.weight``). A preset builds the model
and the converter loads the file strict: ``converters.from_pretrained(None, "flux1-dev-ae.safetensors", "pt",
model="FluxAE")``. The diffusers copy of the same weights (``FLUX.1-dev/vae/diffusion_pytorch_model.safetensors``,
AutoencoderKL names, attention as Linears) is read too (a decode-only source dialect, ``_make_diffusers_rule``).
Presets: ``configs/vae/flux_ae.yaml`` (data, shared by both backends).
"""
import os
import re

from opensora_dual.registry import Family, json_from_kwargs, load_presets, register

# upstream AutoEncoderFlux keywords and defaults (+ AutoEncoderConfig.sample)
CONFIG_DEFAULTS = dict(resolution=256, in_channels=3, ch=128, out_ch=3, ch_mult=(1, 2, 4, 4), num_res_blocks=2,
                       z_channels=16, scale_factor=0.3611, shift_factor=0.1159, sample=True)

# configs/vae/flux_ae.yaml (load_presets reads configs/models/; the VAE presets live beside the other VAEs')
PRESETS = load_presets(os.path.join(os.pardir, "vae", "flux_ae.yaml"))


def latent_size(kwargs, t, h, w):
    """Latent [T, H, W] of a [t, h, w] video: frames kept, each pad-(0,1)-stride-2 level floors H and W by 2."""
    cfg = {**CONFIG_DEFAULTS, **kwargs}
    for _ in range(len(cfg["ch_mult"]) - 1):
        h, w = h // 2, w // 2
    return t, h, w


def config_from_json(cfg: dict) -> dict:
    """Our config.json, upstream's ``img_flux_ae = dict(type="autoencoder_2d", from_pretrained=..., ...)`` (the
    loader-only keys from_pretrained / cache_dir / device_map / torch_dtype are dropped), or a diffusers-style
    Flux ``vae/config.json`` (AutoencoderKL: block_out_channels, layers_per_block, latent_channels,
    scaling_factor, shift_factor, sample_size)."""
    if cfg.get("type") not in (None, "autoencoder_2d") and cfg.get("model_type") is None:
        raise ValueError(f"not an autoencoder_2d config: type {cfg.get('type')!r}")
    kwargs = {k: cfg[k] for k in CONFIG_DEFAULTS if k in cfg}
    if "block_out_channels" in cfg and "ch" not in cfg:       # diffusers AutoencoderKL layout
        boc = list(cfg["block_out_channels"])
        kwargs["ch"] = boc[0]
        if any(c % boc[0] for c in boc):
            raise ValueError(f"block_out_channels {boc} are not multiples of the first")
        kwargs["ch_mult"] = tuple(c // boc[0] for c in boc)
        for ours, theirs in (("num_res_blocks", "layers_per_block"), ("z_channels", "latent_channels"),
                             ("scale_factor", "scaling_factor"), ("out_ch", "out_channels"),
                             ("resolution", "sample_size")):
            if theirs in cfg and cfg[theirs] is not None:
                kwargs[ours] = cfg[theirs]
        if cfg.get("use_quant_conv") or cfg.get("use_post_quant_conv"):
            raise ValueError("the Flux AE has no quant_conv / post_quant_conv (use_quant_conv must be false)")
    if isinstance(kwargs.get("ch_mult"), list):
        kwargs["ch_mult"] = tuple(kwargs["ch_mult"])
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    return json_from_kwargs(CONFIG_DEFAULTS, kwargs, model_type="AutoEncoderFlux", type="autoencoder_2d",
                            architectures=["AutoEncoderFlux"])


def example_inputs(kwargs: dict, rng, batch=1, frames=2, height=16, width=16):
    """``forward(x, noise=...)`` inputs: a video in [-1, 1] and the posterior noise (latent-shaped)."""
    import numpy as np

    cfg = {**CONFIG_DEFAULTS, **kwargs}
    lt, lh, lw = latent_size(cfg, frames, height, width)
    return {"x": rng.uniform(-1.0, 1.0, (batch, cfg["in_channels"], frames, height, width)).astype(np.float32),
            "noise": rng.standard_normal((batch, cfg["z_channels"], lt, lh, lw)).astype(np.float32)}


# --- converter rules --------------------------------------------------------------------------------------
# The diffusers AutoencoderKL names of the same weights (black-forest-labs/FLUX.1-dev vae/), decoded to the BFL
# names (= ours). Decode-only: encode is the identity (writing keeps the BFL layout), and decode never fires on
# our own names, so the engine treats it as invertible (like vae2d's LDM rule, which maps the other direction).
_DIFFUSERS = [
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.down.\1.downsample.conv."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.", r"\1.mid.attn_1.norm."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_q|query)\.", r"\1.mid.attn_1.q."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_k|key)\.", r"\1.mid.attn_1.k."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_v|value)\.", r"\1.mid.attn_1.v."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_out\.0|proj_attn)\.", r"\1.mid.attn_1.proj_out."),
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"\.conv_shortcut\.", r".nin_shortcut."),
]
_DIFFUSERS_UP = re.compile(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)\.|upsamplers\.0\.conv\.)")


def _make_diffusers_rule():
    from converters.rules import Rule

    def _reshape(shape):
        def fn(a, shape=tuple(shape)):
            return a.reshape(shape)
        fn.same_bytes = True
        return fn

    class FluxAEDiffusersNames(Rule):
        """diffusers AutoencoderKL names of the Flux AE -> BFL names; ``decoder.up_blocks.i`` is
        ``decoder.up.{n-1-i}`` (BFL counts decoder levels from the highest resolution); attention Linears
        [C, C] -> 1x1 convs [C, C, 1, 1]. A rename fires only when the target exists in the model."""

        invertible = True

        def __init__(self):
            self._cache = None

        def _n_up(self, spec):
            if self._cache is None or self._cache[0] is not spec:
                n = 0
                for k in spec.params:
                    m = re.match(r"^decoder\.up\.(\d+)\.", k)
                    if m:
                        n = max(n, int(m.group(1)) + 1)
                self._cache = (spec, n)
            return self._cache[1]

        def decode(self, item, spec):
            if item.name in spec.params:
                return item
            name = item.name
            m = _DIFFUSERS_UP.match(name)
            if m and self._n_up(spec):
                i = self._n_up(spec) - 1 - int(m.group(1))
                tail = f"block.{m.group(3)}." if m.group(3) is not None else "upsample.conv."
                name = f"decoder.up.{i}.{tail}" + name[m.end():]
            for pat, rep in _DIFFUSERS:
                name = re.sub(pat, rep, name)
            p = spec.params.get(name)
            if name == item.name or p is None:
                return item
            out = item.renamed(name)
            if len(p.shape) == 4 and tuple(item.shape) == tuple(p.shape[:2]):
                out = out.with_op(name, tuple(p.shape), f"linear {list(item.shape)} -> 1x1 conv {list(p.shape)}",
                                  _reshape(p.shape))
            return out

        def describe(self):
            return "Flux AE: diffusers AutoencoderKL names -> BFL names (attention Linear -> 1x1 conv)"

    return FluxAEDiffusersNames()


def _converter_hooks():
    from converters.rules import StripPrefix

    return {
        # checkpoints bundling the AE with other models nest it under a prefix (e.g. "vae.", "first_stage_model.")
        "source_rules": [StripPrefix(("vae.", "ae.", "first_stage_model.")), _make_diffusers_rule()],
        "weights_names": ["flux1-dev-ae.safetensors", "ae.safetensors", "diffusion_pytorch_model.safetensors"],
    }


FAMILY = register(Family(
    name="flux_ae",
    class_path="models.vae.autoencoder_2d:AutoEncoderFlux",
    model_types=("AutoEncoderFlux", "autoencoder_2d"),
    presets={name: dict(kw) for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "converter": _converter_hooks(),
        "example_inputs": example_inputs,
        "full_size_presets": ("FluxAE",),
    },
))
