"""STDiT (Open-Sora 1.0), ``v1.0.0:opensora/models/stdit/stdit.py``; releases ``OpenSora-v1-*.pth``.

Release files are bare state dicts (no config.json): load them with a preset (``model="STDiT-XL/2"``) and the
release's input size / scales as overrides. The folders and safetensors this project's converter writes
carry a config.json (``model_type`` "STDiT") built from ``CONFIG_DEFAULTS``.

Converter hooks: ``pos_embed`` and ``pos_embed_temporal`` are *derived* keys (fixed sin-cos tables the model
computes from its config): a source that has them loads them (shape-checked), one without them keeps the
model's own tables. PixArt-alpha initialisation (``--init-from pixart``) uses the shared ``pixart`` dialect:
``blocks.`` stays ``blocks.``, the 2D patch weight gains a time axis, PixArt's ``pos_embed`` is dropped,
``y_embedding`` is resized, and the temporal attentions (``attn_temp.*``) are initialised fresh.
"""
from opensora_dual.registry import Family, json_from_kwargs, kwargs_from_json, load_presets, register
from opensora_dual.families.stdit3 import caption_mask

# STDiT constructor arguments (upstream v1.0 defaults) that a config.json carries. ``dtype`` is left out:
# it is a runtime choice (the weights' dtype), not part of the architecture.
CONFIG_DEFAULTS = dict(
    input_size=(1, 32, 32), in_channels=4, patch_size=(1, 2, 2), hidden_size=1152, depth=28, num_heads=16,
    mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True, drop_path=0.0, no_temporal_pos_emb=False,
    caption_channels=4096, model_max_length=120, space_scale=1.0, time_scale=1.0, freeze=None,
    enable_flashattn=False, enable_layernorm_kernel=False, enable_sequence_parallelism=False,
)

PRESETS = load_presets("stdit.yaml")

DERIVED_KEYS = ("pos_embed", "pos_embed_temporal")


def config_from_json(cfg: dict) -> dict:
    kwargs = kwargs_from_json(cfg, CONFIG_DEFAULTS, ("input_size", "patch_size"))
    if "enable_flash_attn" in cfg and "enable_flashattn" not in cfg:  # v1.2 spelling
        kwargs["enable_flashattn"] = cfg["enable_flash_attn"]
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    return json_from_kwargs(CONFIG_DEFAULTS, {k: v for k, v in kwargs.items() if k != "dtype"},
                            model_type="STDiT", architectures=["STDiT"], torch_dtype="float32")


def example_inputs(kwargs: dict, rng, batch=2, text_mask=True, text_len=None, mask_batch=None):
    """Forward inputs for either twin, as numpy: a latent video of the model's fixed ``input_size``, timesteps
    in [0, 1000], caption features and a text mask with a different valid length per sample (``mask_batch``
    smaller than ``batch``: the CFG case, the model repeats the mask)."""
    import numpy as np

    cfg = {**CONFIG_DEFAULTS, **kwargs}
    L = text_len or cfg["model_max_length"]
    inputs = dict(
        x=rng.standard_normal((batch, cfg["in_channels"], *cfg["input_size"])).astype(np.float32),
        timestep=rng.uniform(0, 1000, size=(batch,)).astype(np.float32),
        y=rng.standard_normal((batch, 1, L, cfg["caption_channels"])).astype(np.float32),
    )
    if text_mask:
        inputs["mask"] = caption_mask(L, mask_batch or batch)
    return inputs


FAMILY = register(Family(
    name="stdit",
    class_path="models.stdit.stdit:STDiT",
    model_types=("STDiT",),
    presets={name: {**kw} for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "example_inputs": example_inputs,
        "full_size_presets": ("STDiT-XL/2",),
        # as stdit3: the cross-attention's kv_linear projects packed text (reference) vs padded text (port)
        "parity_case": {"skip_rows": ("kv_linear",), "out_dtype": "fp32", "fp32_inputs": ("timestep",)},
        "converter": {"derived": DERIVED_KEYS},
    },
))
