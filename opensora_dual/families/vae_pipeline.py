"""The Open-Sora 1.2 video VAE (``VideoAutoencoderPipeline``, built by ``OpenSoraVAE_V1_2``),
``v1.2.0:opensora/models/vae/vae.py``; release ``hpcai-tech/OpenSora-VAE-v1.2`` (config.json +
model.safetensors, keys ``spatial_vae.module.*``, ``temporal_vae.*``, ``scale``, ``shift``).

The release config.json carries the ``VideoAutoencoderPipelineConfig`` fields, which are the twins'
constructor arguments one to one. mindone's converted checkpoint names the spatial half in the LDM layout
with gamma/beta: the 2D VAE name rule (``vae2d``) plus the converter's mindone dialect read it.
"""
from opensora_dual.families.vae2d import SMALL_VAE, converter_hooks as _vae2d_hooks
from opensora_dual.families.vae_temporal import VAE_TEMPORAL_S
from opensora_dual.registry import Family, register

CONFIG_KEYS = ("vae_2d", "vae_temporal", "from_pretrained", "freeze_vae_2d", "cal_loss", "micro_frame_size",
               "shift", "scale")

SHIFT = (-0.10, 0.34, 0.27, 0.98)
SCALE = (3.85, 2.32, 2.33, 3.06)


def opensora_v1_2_config(micro_batch_size=4, micro_frame_size=17, freeze_vae_2d=False, cal_loss=False):
    """What upstream's ``OpenSoraVAE_V1_2(...)`` passes to ``VideoAutoencoderPipelineConfig``."""
    return dict(
        vae_2d=dict(type="VideoAutoencoderKL", from_pretrained="PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers",
                    subfolder="vae", micro_batch_size=micro_batch_size, local_files_only=False),
        vae_temporal=dict(type="VAE_Temporal_SD", from_pretrained=None),
        freeze_vae_2d=freeze_vae_2d, cal_loss=cal_loss, micro_frame_size=micro_frame_size,
        shift=SHIFT, scale=SCALE)


# Small config for tests: the small 2D VAE (2 levels, x2 spatial) and the small temporal VAE (x4 in time).
SMALL = dict(vae_2d=dict(type="VideoAutoencoderKL", vae_config=dict(SMALL_VAE), micro_batch_size=4),
             vae_temporal=dict(type="VAE_Temporal", **VAE_TEMPORAL_S),
             freeze_vae_2d=False, cal_loss=False, micro_frame_size=17, shift=SHIFT, scale=SCALE)


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _tuples(v):
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def config_from_json(cfg: dict) -> dict:
    kwargs = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    kwargs.pop("from_pretrained", None)   # a hub name upstream; weights come through the converter
    for k in ("vae_2d", "vae_temporal"):
        if k in kwargs and kwargs[k] is not None:
            kwargs[k] = _tuples(dict(kwargs[k]))
    for k in ("shift", "scale"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    cfg = dict(opensora_v1_2_config())
    cfg.update(kwargs)
    cfg = _jsonable(cfg)
    cfg.update(model_type="VideoAutoencoderPipeline", architectures=["VideoAutoencoderPipeline"],
               torch_dtype="float32", transformers_version="4.36.2")
    return cfg


def spatial_factor(kwargs: dict) -> int:
    """Pixels per latent pixel of the 2D VAE: 2 ** (levels - 1) (8 for the SDXL VAE)."""
    levels = len((kwargs["vae_2d"].get("vae_config") or {}).get("block_out_channels", (128, 256, 512, 512)))
    return 2 ** (levels - 1)


def latent_frames(frames: int, micro_frame_size: int = 17, tdown: int = 4) -> int:
    """Upstream's latent length rule: 5 latents per full 17-frame chunk, ceil(r/4) for a remainder r."""
    full, rem = divmod(frames, micro_frame_size)
    return full * ((micro_frame_size + tdown - 1) // tdown) + (rem + tdown - 1) // tdown


def example_inputs(kwargs: dict, rng, batch=1, frames=20, height=None, width=None):
    """A video in [-1, 1] and pre-drawn noise for both posteriors (so both twins sample the same latent)."""
    import numpy as np

    f = spatial_factor(kwargs)
    height, width = height or 2 * f, width or 2 * f
    lat_t = latent_frames(frames, kwargs.get("micro_frame_size", 17))
    return {"x": rng.uniform(-1.0, 1.0, (batch, 3, frames, height, width)).astype(np.float32),
            "spatial_noise": rng.standard_normal((batch, 4, frames, height // f, width // f)).astype(np.float32),
            "temporal_noise": rng.standard_normal((batch, 4, lat_t, height // f, width // f)).astype(np.float32)}


def pipeline_roundtrip(model, x, spatial_noise, temporal_noise):
    """encode (posterior sampled with the given noise) -> decode: the latent and the reconstruction."""
    z = model.encode(x, spatial_noise=spatial_noise, temporal_noise=temporal_noise)
    return z, model.decode(z, num_frames=x.shape[2])


FAMILY = register(Family(
    name="vae_pipeline",
    class_path="models.vae.vae:VideoAutoencoderPipeline",
    model_types=("VideoAutoencoderPipeline",),
    presets={"OpenSoraVAE_V1_2": opensora_v1_2_config(), "OpenSoraVAE_V1_2-S": SMALL},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={"converter": _vae2d_hooks(), "full_size_presets": ["OpenSoraVAE_V1_2"],
           # parity_tests.report: whole-pipeline encode -> decode with shared posterior noise
           "example_inputs": example_inputs, "parity_case": {"call": pipeline_roundtrip}},
))
