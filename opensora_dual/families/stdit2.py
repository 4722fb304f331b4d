"""STDiT2 (Open-Sora 1.1), ``v1.1.0:opensora/models/stdit/stdit2.py``; releases
``hpcai-tech/OpenSora-STDiT-v2-stage2`` and ``-stage3`` (config.json + model.safetensors, ``model_type`` "STDiT2")."""
from opensora_dual.registry import Family, json_from_kwargs, load_presets, register
from opensora_dual.families.stdit3 import caption_mask, first_frame_conditioned

# upstream STDiT2Config's fields and ITS defaults: what Hugging Face's from_pretrained uses for a key the
# config.json lacks (note input_sq_size 32, model_max_length 120, qk_norm/qk_norm_legacy off).
CONFIG_DEFAULTS = dict(
    input_size=(None, None, None), input_sq_size=32, in_channels=4, patch_size=(1, 2, 2), hidden_size=1152,
    depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True, drop_path=0.0,
    no_temporal_pos_emb=False, caption_channels=4096, model_max_length=120, freeze=None, qk_norm=False,
    qk_norm_legacy=False, enable_flash_attn=False, enable_layernorm_kernel=False,
)

# the twins' constructor defaults: the v1.1 release values (configs/opensora-v1-1/*: input_sq_size 512,
# qk_norm and qk_norm_legacy on; T5 at 200 tokens)
CONSTRUCTOR_DEFAULTS = {**CONFIG_DEFAULTS, "input_sq_size": 512, "model_max_length": 200, "qk_norm": True,
                        "qk_norm_legacy": True}

# the keys a save_pretrained'ed STDiT2Config adds besides its fields
RELEASE_META = dict(model_type="STDiT2", architectures=["STDiT2"], torch_dtype="float32",
                    transformers_version="4.36.2")

# Registered names and their constructor kwargs: configs/models/stdit2.yaml (data, shared by both backends).
PRESETS = load_presets("stdit2.yaml")


def config_from_json(cfg: dict) -> dict:
    """A release config.json -> constructor kwargs: every STDiT2Config field, missing ones at STDiT2Config's
    defaults (as Hugging Face would load it), so the model built is the one upstream builds from that file."""
    if cfg.get("model_type") not in (None, "STDiT2"):
        raise ValueError(f"model_type {cfg.get('model_type')!r} is not STDiT2")
    kwargs = {k: cfg.get(k, v) for k, v in CONFIG_DEFAULTS.items()}
    for k in ("input_size", "patch_size"):
        if kwargs[k] is not None:
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    """Constructor kwargs -> the release config.json (every STDiT2Config field + the Hugging Face keys)."""
    unknown = set(kwargs) - set(CONSTRUCTOR_DEFAULTS)
    if unknown:
        raise ValueError(f"not STDiT2Config fields: {sorted(unknown)}")
    return json_from_kwargs(CONSTRUCTOR_DEFAULTS, kwargs,
                            **{k: (list(v) if isinstance(v, list) else v) for k, v in RELEASE_META.items()})


def example_inputs(kwargs: dict, rng, batch=2, frames=3, height=5, width=7, text_mask=True, x_mask=True,
                   text_len=None, mask_batch=None, vary_sizes=False):
    """Forward inputs for either twin, as numpy: a latent video of ``frames x height x width`` (odd sizes
    exercise pad-then-crop; v1.1's VAE is per frame, so pixel frames = latent frames), timesteps in [0, 1000],
    caption features, a text mask with a different valid length per sample, an x_mask whose first frame is a
    conditioning frame, and per-sample num_frames, height, width (pixels), ar (= H/W, the inference
    convention) and fps (120 for images, as upstream's IMG_FPS). ``vary_sizes``: every sample gets its own
    height, width, ar, num_frames and fps (only sample 0's size drives the position embedding)."""
    import numpy as np

    cfg = {**CONSTRUCTOR_DEFAULTS, **kwargs}
    L = text_len or cfg["model_max_length"]
    idx = np.arange(batch, dtype=np.float32)
    h_px = np.full((batch,), height * 8.0, np.float32)
    w_px = np.full((batch,), width * 8.0, np.float32)
    n_frames = np.full((batch,), float(frames), np.float32)
    fps = np.full((batch,), 120.0 if frames == 1 else 24.0, np.float32)
    if vary_sizes:
        h_px = h_px + 48.0 * idx
        w_px = w_px + 16.0 * idx * (idx % 2 * 2 - 1)
        n_frames = n_frames + 8.0 * idx
        fps = fps / (1.0 + idx)
    inputs = dict(
        x=rng.standard_normal((batch, cfg["in_channels"], frames, height, width)).astype(np.float32),
        timestep=rng.uniform(0, 1000, size=(batch,)).astype(np.float32),
        y=rng.standard_normal((batch, 1, L, cfg["caption_channels"])).astype(np.float32),
        num_frames=n_frames, height=h_px, width=w_px, ar=(h_px / w_px).astype(np.float32), fps=fps,
    )
    if text_mask:
        inputs["mask"] = caption_mask(L, mask_batch or batch)
    if x_mask:
        inputs["x_mask"] = first_frame_conditioned(batch, frames)
    return inputs


FAMILY = register(Family(
    name="stdit2",
    class_path="models.stdit.stdit2:STDiT2",
    model_types=("STDiT2",),
    presets={name: {**kw} for name, kw in PRESETS.items()},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={
        "example_inputs": example_inputs,
        "full_size_presets": ("STDiT2-XL/2",),
        # as STDiT3's: the cross-attention's kv_linear projects packed text in the reference and padded text
        # in the port (not comparable row by row; its consumer is); the output is fp32; timesteps stay fp32
        "parity_case": {"skip_rows": ("kv_linear",), "out_dtype": "fp32", "fp32_inputs": ("timestep",)},
    },
))
