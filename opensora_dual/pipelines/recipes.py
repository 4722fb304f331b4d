"""What differs between the Open-Sora versions' sampling scripts, as data: one ``Recipe`` per release.

The pipeline (``opensora_dual.pipelines.opensora``) is written once; a recipe says which diffusion-model family,
VAE kind and sampler a release uses and which of the inference features its script has. A new release adds a
recipe here (and its model family / sampler twins), not a new pipeline.

Upstream scripts: ``v1.0.0:scripts/inference.py`` (text-to-video only, no model kwargs, IDDPM 100 steps),
``v1.1.0:scripts/inference.py`` (``multi_resolution="STDiT2"`` model kwargs, references and mask strategies in
frames, loops, no score suffixes), ``v1.2.0:scripts/inference.py`` (rectified flow, latent-frame mask strategies
with ``align``, score suffixes, 17-frame VAE chunks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

# scheduler type (upstream's config names) -> class, relative to a backend package (opensora_dual.registry.twin_module)
SCHEDULERS = {
    "rflow": "schedulers.rf:RFLOW",
    "iddpm": "schedulers.iddpm:IDDPM",
    "dpm-solver": "schedulers.dpm_solver:DPM_SOLVER",
    "flow-matching": "schedulers.flow_matching:FlowMatching",   # Open-Sora 2.0
}


@dataclass(frozen=True)
class Recipe:
    name: str                       # "v1.2"
    model_family: str               # opensora_dual.families.<name>: the diffusion model
    vae: str                        # "pipeline": the 1.2 video VAE; "video_kl": a 2D AutoencoderKL frame by frame
    scheduler: str                  # default sampler (a SCHEDULERS key)
    scheduler_defaults: Dict[str, Any] = field(default_factory=dict)   # the release config's sampler arguments
    multi_resolution: bool = True   # the model takes height, width, num_frames, ar, fps (upstream "STDiT2")
    conditioning: bool = True       # references, mask strategies and loops (a conditioning mask reaches the sampler)
    score_suffixes: bool = True     # aes / flow / camera_motion appended to prompts
    latent_chunks: bool = False     # latent frames are 17-frame VAE chunks (5 latent frames each): 1.2 only
    small_vae: str = ""             # registered small VAE preset used by ``build_random``
    video_kl_micro_batch: Optional[int] = 4   # frames per 2D VAE call ("video_kl"; memory only, same numbers)
    model_kwargs: Tuple[str, ...] = ()        # config ``model:`` keys that are build arguments of this release's
                                              # model (1.0: its position-table scales), passed when loading

    def condition_pixel_frames(self, condition_frame_length: int) -> int:
        """Pixel frames of ``condition_frame_length`` latent frames (what later loops drop when joining)."""
        if self.latent_chunks:
            from opensora_dual.inference import dframe_to_frame

            return dframe_to_frame(condition_frame_length)
        return int(condition_frame_length)

    def scheduler_kwargs(self, overrides: Optional[Dict[str, Any]] = None):
        """-> (type, kwargs): the release's sampler with ``overrides`` (which may name another ``type``)."""
        overrides = dict(overrides or {})
        kind = str(overrides.pop("type", self.scheduler)).lower().replace("_", "-")
        if kind not in SCHEDULERS:
            raise ValueError(f"unknown scheduler type {kind!r}; known: {sorted(SCHEDULERS)}")
        base = dict(self.scheduler_defaults) if kind == self.scheduler else {}
        return kind, {**base, **overrides}


RECIPES: Dict[str, Recipe] = {
    "v1.0": Recipe("v1.0", "stdit", "video_kl", "iddpm", dict(num_sampling_steps=100, cfg_scale=7.0, version="v1.0"),
                   multi_resolution=False, conditioning=False, score_suffixes=False, small_vae="AutoencoderKL-S",
                   model_kwargs=("space_scale", "time_scale")),
    "v1.1": Recipe("v1.1", "stdit2", "video_kl", "iddpm",
                   dict(num_sampling_steps=100, cfg_scale=7.0, cfg_channel=3, version="v1.1"),
                   score_suffixes=False, small_vae="AutoencoderKL-S"),
    "v1.2": Recipe("v1.2", "stdit3", "pipeline", "rflow",
                   dict(num_sampling_steps=30, num_timesteps=1000, cfg_scale=7.0, use_timestep_transform=True),
                   latent_chunks=True, small_vae="OpenSoraVAE_V1_2-S", video_kl_micro_batch=None),
    # Open-Sora 2.0 (main:scripts/diffusion/inference.py, configs/diffusion/inference/256px.py): its own flow
    # (cond types, T5 + CLIP, suffixes), so its pipeline is opensora_dual.pipelines.opensora_v2
    "v2.0": Recipe("v2.0", "mmdit", "hunyuan_vae", "flow-matching",
                   dict(num_sampling_steps=50, guidance=7.5, guidance_img=3.0, text_osci=True, image_osci=True,
                        scale_temporal_osci=True, shift=True, method="i2v", is_causal_vae=True),
                   multi_resolution=False, conditioning=False, score_suffixes=False, small_vae="HunyuanVAE-S",
                   video_kl_micro_batch=None),
}


def recipe_for_family(family: str) -> Recipe:
    for r in RECIPES.values():
        if r.model_family == family:
            return r
    raise KeyError(f"no sampling recipe for model family {family!r}; known: "
                   f"{sorted(r.model_family for r in RECIPES.values())}")


def recipe_for_model(model) -> Recipe:
    """The recipe of a built diffusion model (either twin), from its class name (``STDiT3`` -> v1.2)."""
    from opensora_dual import registry

    return recipe_for_family(registry.family_for_model_type(type(model).__name__).name)


def recipe_for_preset(preset: str) -> Recipe:
    from opensora_dual import registry

    return recipe_for_family(registry.resolve(preset)[0].name)
