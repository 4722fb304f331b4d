"""CLIP text tower (Open-Sora v2.0 pooled text vector). Reference: ``transformers.CLIPTextModel`` (5.23).

Release folder ``openai/clip-vit-large-patch14`` is a whole CLIP (``config.json`` ``model_type`` "clip" with a
nested ``text_config``; keys ``text_model.*``, ``vision_model.*``, ``visual_projection.weight``,
``text_projection.weight``, ``logit_scale``, and in older files ``text_model.embeddings.position_ids``).
transformers 5 names the text tower without the ``text_model.`` level; the converter strips it (as
transformers' ``PrefixChange(prefix_to_remove="text_model")``) and drops the rest.
"""
from converters.rules import StripPrefix
from opensora_dual.registry import Family, register
from opensora_dual.text import config as text_config

CONFIG_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512, num_hidden_layers=12,
    num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0, pad_token_id=1, bos_token_id=49406,
    eos_token_id=49407,
)

# Registered names -> constructor kwargs: configs/text_encoder/clip.yaml. CLIP-L/14-text is
# openai/clip-vit-large-patch14's text_config, whose eos_token_id is the stale 2: transformers then pools at
# argmax(input_ids) (EOT 49407 is the largest id), and the twins keep that rule.
PRESETS = text_config.presets("clip")


def example_inputs(kwargs: dict, rng, batch=2, length=77) -> dict:
    """Parity-report inputs shaped like CLIP's tokenizer output: BOS, words, EOT, EOT padding (EOT = the
    largest id); no attention mask (v2.0 calls the tower with causal attention only)."""
    import numpy as np

    vocab = kwargs.get("vocab_size", CONFIG_DEFAULTS["vocab_size"])
    lens = np.array([length, 9])[:batch]
    ids = rng.integers(1, vocab - 2, (batch, length))
    ids[:, 0] = vocab - 2
    ids[np.arange(length)[None] >= lens[:, None] - 1] = vocab - 1
    return {"input_ids": ids.astype(np.int64)}


def row_level(name: str, module) -> str:
    kind = type(module).__name__
    if kind == "CLIPEncoderLayer":
        return "block"
    if kind == "CLIPEncoder":
        return None
    return "layer"


def config_from_json(cfg: dict) -> dict:
    if isinstance(cfg.get("text_config"), dict):  # a whole-CLIP config.json
        cfg = cfg["text_config"]
    return {k: cfg[k] for k in CONFIG_DEFAULTS if k in cfg and cfg[k] is not None}


def config_to_json(kwargs: dict) -> dict:
    cfg = dict(CONFIG_DEFAULTS)
    cfg.update({k: v for k, v in kwargs.items() if k in CONFIG_DEFAULTS})
    cfg.update(model_type="clip_text_model", architectures=["CLIPTextModel"], torch_dtype="float32",
               transformers_version="5.23.0")
    return cfg


FAMILY = register(Family(
    name="clip_text",
    class_path="models.text_encoder.clip:CLIPTextModel",
    model_types=("clip_text_model", "clip", "CLIPTextModel", "CLIPModel"),
    presets={name: {**kw} for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "converter": {
            "source_rules": [StripPrefix(("text_model.",))],
            "ignore": ["vision_model.*", "visual_projection.*", "text_projection.*", "logit_scale",
                       "embeddings.position_ids"],
        },
        "model_max_length": 77,
        # parity report hooks (parity_tests/report.py)
        "example_inputs": example_inputs,
        "full_size_presets": ("CLIP-L/14-text", "openai/clip-vit-large-patch14"),
        "parity_case": {"row_level": row_level},
    },
))
