"""The Open-Sora 1.2 temporal VAE, ``v1.2.0:opensora/models/vae/vae_temporal.py`` (``VAE_Temporal_SD``).

No release folder of its own: its weights are the ``temporal_vae.*`` keys of ``hpcai-tech/OpenSora-VAE-v1.2``
(the pipeline family); a standalone file holds the same keys without the prefix.
"""
from opensora_dual.registry import Family, register

CONFIG_KEYS = ("in_out_channels", "latent_embed_dim", "embed_dim", "filters", "num_res_blocks",
               "channel_multipliers", "temporal_downsample", "num_groups", "activation_fn")

# VAE_Temporal_SD = VAE_Temporal with these arguments (upstream factory).
VAE_TEMPORAL_SD = dict(in_out_channels=4, latent_embed_dim=4, embed_dim=4, filters=128, num_res_blocks=4,
                       channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True), num_groups=32)
# This project's small config: same layout and the same 4x temporal compression, 16 filters, 1 ResBlock/stage.
VAE_TEMPORAL_S = dict(VAE_TEMPORAL_SD, filters=16, num_res_blocks=1, num_groups=8)


def config_from_json(cfg: dict) -> dict:
    if cfg.get("type") == "VAE_Temporal_SD" or cfg.get("model_type") == "VAE_Temporal_SD":
        return dict(VAE_TEMPORAL_SD)
    kwargs = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    for k in ("channel_multipliers", "temporal_downsample"):
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def config_to_json(kwargs: dict) -> dict:
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    cfg.update(model_type="VAE_Temporal", architectures=["VAE_Temporal"])
    return cfg


FAMILY = register(Family(
    name="vae_temporal",
    class_path="models.vae.vae_temporal:VAE_Temporal",
    model_types=("VAE_Temporal", "VAE_Temporal_SD"),
    presets={"VAE_Temporal_SD": dict(VAE_TEMPORAL_SD), "VAE_Temporal-S": dict(VAE_TEMPORAL_S)},
    config_from_json=config_from_json,
    config_to_json=config_to_json,
    extra={"converter": {}, "full_size_presets": ["VAE_Temporal_SD"]},
))
