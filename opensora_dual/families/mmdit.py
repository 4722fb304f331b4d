"""MMDiT (Open-Sora 2.0, Flux-like), ``main:opensora/models/mmdit/model.py``; release ``hpcai-tech/Open-Sora-v2``.

Upstream ships ``Open_Sora_v2.safetensors`` as a bare file (no config.json; upstream builds the model from
``configs/diffusion/inference/256px.py``), so loading it needs a preset: ``model="OpenSora-v2-MMDiT"``.
Files this project writes carry a config.json (``model_type: "MMDiT"``, upstream's ``MMDiTConfig.model_type``).

Converter dialects (``src_dialect=`` / ``load_state_into(..., dialect=)``), for BFL-layout sources:
- ``flux``: fused ``qkv`` / ``linear1`` split into ``q_proj``/``k_proj``/``v_proj`` / ``v_mlp`` when the target
  model has separate projections; RoPE pairing kept (Flux-dev into an adjacent-pair model);
- ``flux-to-liger``: the same plus the q/k head-dim permutation (upstream ``math.rearrange_tensor``) so a
  Flux-pairing checkpoint gives the same outputs in a ``use_liger_rope=True`` model;
- ``liger-to-flux``: the inverse permutation (an Open-Sora 2.0 checkpoint in an adjacent-pair model).
Fusing separate projections (release -> fused model) is ``converters.engine.ConcatRowsView(source,
fuse_groups(keys))`` followed by the same dialects.
"""
import re

from opensora_dual.registry import Family, json_from_kwargs, kwargs_from_json, load_presets, register

# MMDiTConfig fields (minus the loader fields from_pretrained / cache_dir) with the Open-Sora 2.0 values
# (configs/diffusion/inference/256px.py) where upstream has no default.
CONFIG_DEFAULTS = dict(
    in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
    depth_single_blocks=38, axes_dim=(16, 56, 56), theta=10000, qkv_bias=True, guidance_embed=False,
    cond_embed=False, fused_qkv=True, grad_ckpt_settings=None, use_liger_rope=False, patch_size=2,
)

PRESETS = load_presets("mmdit.yaml")


def config_from_json(cfg: dict) -> dict:
    return kwargs_from_json(cfg, CONFIG_DEFAULTS, ("axes_dim", "grad_ckpt_settings"))


def config_to_json(kwargs: dict) -> dict:
    return json_from_kwargs(CONFIG_DEFAULTS, kwargs, model_type="MMDiT", architectures=["MMDiTModel"],
                            torch_dtype="float32")


def example_inputs(kwargs: dict, rng, batch=2, frames=2, height=4, width=6, text_len=8, cond=None,
                   guidance=None):
    """Forward inputs for either twin, as numpy: a latent [B, C, T, H, W] (C = in_channels / patch^2) packed
    into tokens with its (t, h, w) ids, T5-like text [B, L, context_in_dim] with zero ids, timesteps in (0, 1),
    a CLIP-like pooled vector; ``cond`` (default: when cond_embed) = pack(cat(mask, masked reference latent))
    with the first frame as reference; ``guidance`` (default: when guidance_embed) in [1, 5]."""
    import numpy as np

    from opensora_dual.packing import img_ids, pack, txt_ids

    cfg = {**CONFIG_DEFAULTS, **kwargs}
    p = cfg["patch_size"]
    c = cfg["in_channels"] // (p * p)
    latent = rng.standard_normal((batch, c, frames, height * p, width * p)).astype(np.float32)
    inputs = dict(
        img=pack(latent, p),
        img_ids=img_ids(batch, frames, height, width),
        txt=rng.standard_normal((batch, text_len, cfg["context_in_dim"])).astype(np.float32),
        txt_ids=txt_ids(batch, text_len),
        timesteps=rng.uniform(0.02, 0.98, size=(batch,)).astype(np.float32),
        y_vec=rng.standard_normal((batch, cfg["vec_in_dim"])).astype(np.float32),
    )
    if cond if cond is not None else cfg["cond_embed"]:
        mask = np.zeros((batch, 1, frames, height * p, width * p), np.float32)
        mask[:, :, 0] = 1.0                                   # i2v: the first latent frame is given
        ref = rng.standard_normal(latent.shape).astype(np.float32) * mask
        inputs["cond"] = pack(np.concatenate([mask, ref], axis=1), p)   # mask channel first
    if guidance if guidance is not None else cfg["guidance_embed"]:
        inputs["guidance"] = rng.uniform(1.0, 5.0, size=(batch,)).astype(np.float32)
    return inputs


# ---------------------------------------------------------------------------------------------- layouts
_FUSE = ((re.compile(r"(.*_attn)\.(q_proj)\.(weight|bias)"), ("q_proj", "k_proj", "v_proj"), "qkv"),
         (re.compile(r"(single_blocks\.\d+)\.(q_proj)\.(weight|bias)"), ("q_proj", "k_proj", "v_mlp"), "linear1"))


def fuse_groups(keys) -> dict:
    """{fused name: [separate names]} for every separate-projection group in ``keys`` (release -> Flux layout)."""
    keys = set(keys)
    groups = {}
    for k in sorted(keys):
        for pat, parts, fused in _FUSE:
            m = pat.fullmatch(k)
            if m:
                names = [f"{m.group(1)}.{p}.{m.group(3)}" for p in parts]
                if all(n in keys for n in names):
                    groups[f"{m.group(1)}.{fused}.{m.group(3)}"] = names
    return groups


def _dialects():
    from converters.rules import Dialect, RopePairing, SplitRows, StripPrefix, family_rules

    split = [SplitRows(r"(.*_attn)\.qkv\.(weight|bias)", (r"\1.q_proj.\2", r"\1.k_proj.\2", r"\1.v_proj.\2")),
             SplitRows(r"(single_blocks\.\d+)\.linear1\.(weight|bias)",
                       (r"\1.q_proj.\2", r"\1.k_proj.\2", r"\1.v_mlp.\2"))]

    def make(name, extra, description):
        def dialect(hooks):
            return Dialect(name, [StripPrefix(("module.", "model."))] + family_rules(hooks or {}) + split + extra,
                           description)
        return dialect

    return {
        "flux": make("flux", [], "BFL Flux layout (fused qkv/linear1 split when the model has separate "
                                 "projections), RoPE pairing kept"),
        "flux-to-liger": make("flux-to-liger", [RopePairing("liger")],
                              "BFL Flux layout, adjacent-pair RoPE -> a use_liger_rope model (q/k head dims "
                              "permuted, upstream math.rearrange_tensor)"),
        "liger-to-flux": make("liger-to-flux", [RopePairing("adjacent")],
                              "rotate-half (liger) RoPE checkpoint -> an adjacent-pair model "
                              "(math.reverse_rearrange_tensor)"),
    }


FAMILY = register(Family(
    name="mmdit",
    class_path="models.mmdit.model:MMDiTModel",
    model_types=("MMDiT", "MMDiTModel"),
    presets={name: {**kw} for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "example_inputs": example_inputs,
        "full_size_presets": ("OpenSora-v2-MMDiT", "OpenSora-v2-MMDiT-DCAE", "Flux-dev"),
        # ids and timesteps stay fp32 on the port in low-precision cases (the port's choice: upstream rounds
        # the timestep to the model dtype; ids are small integers either way)
        "parity_case": {"fp32_inputs": ("img_ids", "txt_ids", "timesteps", "guidance")},
        "converter": {"dialects": _dialects()},
        "fuse_groups": fuse_groups,
    },
))
