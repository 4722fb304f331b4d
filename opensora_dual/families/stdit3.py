"""STDiT3 (Open-Sora 1.2), ``v1.2.0:opensora/models/stdit/stdit3.py``; release ``hpcai-tech/OpenSora-STDiT-v3``."""
from opensora_dual.registry import Family, json_from_kwargs, kwargs_from_json, load_presets, register

# STDiT3Config fields, with upstream defaults (facts section 11: the release config.json carries these).
CONFIG_DEFAULTS = dict(
    input_size=(None, None, None), input_sq_size=512, in_channels=4, patch_size=(1, 2, 2), hidden_size=1152,
    depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True, drop_path=0.0,
    caption_channels=4096, model_max_length=300, qk_norm=True, enable_flash_attn=False,
    enable_layernorm_kernel=False, enable_sequence_parallelism=False, only_train_temporal=False,
    freeze_y_embedder=False, skip_y_embedder=False,
)

# Registered names and their constructor kwargs: configs/models/stdit3.yaml (data, shared by both backends).
PRESETS = load_presets("stdit3.yaml")


def config_from_json(cfg: dict) -> dict:
    return kwargs_from_json(cfg, CONFIG_DEFAULTS, ("input_size", "patch_size"))


def config_to_json(kwargs: dict) -> dict:
    return json_from_kwargs(CONFIG_DEFAULTS, kwargs, model_type="STDiT3", architectures=["STDiT3"],
                            torch_dtype="float32", transformers_version="4.36.2")


def caption_mask(length: int, batch: int):
    """A text mask [batch, length] with a different number of valid tokens per sample (the DiT families'
    example inputs)."""
    import numpy as np

    lens = [max(1, length - 3 * i - 1) for i in range(batch)]
    return (np.arange(length)[None, :] < np.array(lens)[:, None]).astype(np.int64)


def first_frame_conditioned(batch: int, frames: int):
    """An x_mask [batch, frames] whose first sample's first frame is a conditioning frame (False)."""
    import numpy as np

    xm = np.ones((batch, frames), bool)
    xm[0, 0] = False
    return xm


def example_inputs(kwargs: dict, rng, batch=2, frames=3, height=5, width=7, text_mask=True, x_mask=True,
                   text_len=None, mask_batch=None):
    """Forward inputs for either twin, as numpy: a latent video of ``frames x height x width`` (odd sizes
    exercise pad-then-crop), timesteps in [0, 1000], caption features, a text mask with a different valid
    length per sample, an x_mask whose first frame is a conditioning frame, fps and pixel sizes."""
    import numpy as np

    cfg = {**CONFIG_DEFAULTS, **kwargs}
    L = text_len or cfg["model_max_length"]
    inputs = dict(
        x=rng.standard_normal((batch, cfg["in_channels"], frames, height, width)).astype(np.float32),
        timestep=rng.uniform(0, 1000, size=(batch,)).astype(np.float32),
        y=rng.standard_normal((batch, 1, L, cfg["caption_channels"])).astype(np.float32),
        fps=np.array([24.0], np.float32),
        height=np.full((batch,), height * 8.0, np.float32),
        width=np.full((batch,), width * 8.0, np.float32),
    )
    if text_mask:
        inputs["mask"] = caption_mask(L, mask_batch or batch)
    if x_mask:
        inputs["x_mask"] = first_frame_conditioned(batch, frames)
    return inputs


FAMILY = register(Family(
    name="stdit3",
    class_path="models.stdit.stdit3:STDiT3",
    model_types=("STDiT3",),
    presets={name: {**kw} for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "example_inputs": example_inputs,
        "full_size_presets": ("STDiT3-XL/2", "STDiT3-3B/2"),
        # extra parity Case fields for whole-model comparisons (tests and parity_tests.report). skip_rows: the
        # cross-attention's kv_linear is not comparable row by row -- the reference projects upstream's packed
        # text [1, sum(y_lens), C], the port the padded text [B, L, C] (static shapes for graph mode); its
        # consumer, the cross-attention output, is compared. (Only the cross-attention has a kv_linear.)
        "parity_case": {"skip_rows": ("kv_linear",), "out_dtype": "fp32", "fp32_inputs": ("timestep",)},
    },
))
