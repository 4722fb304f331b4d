"""T5 v1.1 encoder (Open-Sora v1.x and v2.0 text encoder). Reference: ``transformers.T5EncoderModel``.

Release folders (facts section 11): ``DeepFloyd/t5-v1_1-xxl`` (v1.x) and ``google/t5-v1_1-xxl`` (v2.0) are HF T5
folders (``config.json`` with ``model_type`` "t5", ``spiece.model``, sharded ``pytorch_model-*.bin`` +
``pytorch_model.bin.index.json`` or ``model-*.safetensors`` + ``model.safetensors.index.json``) holding the whole
encoder-decoder; the encoder twins ignore ``decoder.*`` and ``lm_head.*``.
"""
from opensora_dual.registry import Family, register
from opensora_dual.text import config as text_config

# T5Config fields the encoder twins take (transformers 5.23 defaults).
CONFIG_DEFAULTS = dict(
    vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
    layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="relu", pad_token_id=0, eos_token_id=1,
)

# Registered names -> constructor kwargs: configs/text_encoder/t5.yaml (T5-v1.1-XXL as released in
# google/t5-v1_1-xxl = DeepFloyd/t5-v1_1-xxl, under both upstream ids; T5-S, this project's small config).
PRESETS = text_config.presets("t5")

# Open-Sora's text lengths (facts section 4): tokenizer max_length per release (configs/text_encoder/t5.yaml).
MODEL_MAX_LENGTH = {r: v["max_length"] for r, v in text_config.releases().items() if not r.endswith("-clip")}


def example_inputs(kwargs: dict, rng, batch=2, length=64) -> dict:
    """Parity-report inputs: token ids ending in </s> (id 1), padded with 0, the second row shorter."""
    import numpy as np

    lens = np.array([length, length // 2])[:batch]
    mask = (np.arange(length)[None] < lens[:, None]).astype(np.int64)
    ids = rng.integers(2, kwargs.get("vocab_size", CONFIG_DEFAULTS["vocab_size"]), (batch, length))
    ids[np.arange(batch), lens - 1] = 1
    return {"input_ids": (ids * mask).astype(np.int64), "attention_mask": mask}


def row_level(name: str, module) -> str:
    """Per-layer ceilings: T5 sub-layers and blocks are "T5 layers" (block level); the stack's output is the
    model's; the rest are layers."""
    kind = type(module).__name__
    if kind in ("T5LayerSelfAttention", "T5LayerFF", "T5Block"):
        return "block"
    if kind == "T5Stack":
        return None
    return "layer"


def config_from_json(cfg: dict) -> dict:
    return {k: cfg[k] for k in CONFIG_DEFAULTS if k in cfg}


def config_to_json(kwargs: dict) -> dict:
    cfg = dict(CONFIG_DEFAULTS)
    cfg.update({k: v for k, v in kwargs.items() if k in CONFIG_DEFAULTS})
    cfg.update(model_type="t5", architectures=["T5EncoderModel"], is_encoder_decoder=False, use_cache=False,
               torch_dtype="float32", transformers_version="5.23.0")
    return cfg


FAMILY = register(Family(
    name="t5",
    class_path="models.text_encoder.t5:T5EncoderModel",
    model_types=("t5", "T5EncoderModel", "T5ForConditionalGeneration"),
    presets={name: {**kw} for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "converter": {
            # The released file is the whole encoder-decoder; transformers' tied alias of ``shared`` is dropped
            # too (our twins hold ``shared.weight`` once, see pt_reference/models/text_encoder/t5.py).
            "ignore": ["decoder.*", "lm_head.*", "encoder.embed_tokens.weight"],
        },
        "model_max_length": MODEL_MAX_LENGTH,
        # parity report hooks (parity_tests/report.py)
        "example_inputs": example_inputs,
        "full_size_presets": ("T5-v1.1-XXL", "DeepFloyd/t5-v1_1-xxl", "google/t5-v1_1-xxl"),
        "parity_case": {"row_level": row_level},
    },
))
