"""Open-Sora sampling pipeline (1.0, 1.1, 1.2), framework-free: upstream's ``scripts/inference.py`` for one
batch of prompts.

Reads top to bottom like a diffusers pipeline: prompts (JSON references, loop prompts, score suffixes,
cleaning) -> references encoded by the VAE -> for each loop: starting noise, reference latents pasted by the
mask strategy, text features, sampling (rectified flow, IDDPM or DPM-Solver), decode -> clips joined -> uint8
frames. What a release's script has or lacks (model kwargs, references, score suffixes, the sampler) is its
``Recipe`` (``opensora_dual.pipelines.recipes``), chosen from the diffusion model's family.

The twins subclass :class:`OpenSoraPipelineBase` and implement the tensor parts (``encode_video``,
``decode_latents``, ``sample``, ``encode_text``); everything here works on numpy arrays, so the two twins run the
very same orchestration and differ only where a framework computes.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from opensora_dual.inference import (InferenceInputError, append_generated, append_score_to_prompts,
                                     apply_mask_strategy, extract_json_from_prompts,
                                     extract_prompts_loop, get_image_size, get_num_frames, merge_prompt,
                                     prepare_multi_resolution_info, read_reference, split_prompt,
                                     to_uint8_frames)
from opensora_dual.pipelines.recipes import SCHEDULERS, Recipe, recipe_for_model, recipe_for_preset
from opensora_dual.sampling.noise import NumpyNoise
from opensora_dual.text.cleaning import text_preprocessing

# configs/opensora-v1-2/inference/sample.yaml: upstream's sample.py defaults
DEFAULTS = dict(resolution="240p", aspect_ratio="9:16", num_frames=51, fps=24, frame_interval=1,
                condition_frame_length=5, condition_frame_edit=0.0, align=5, loop=1, aes=6.5, flow=None,
                camera_motion=None)


@dataclass
class PipelineOutput:
    videos: List[np.ndarray] = field(default_factory=list)    # per prompt: uint8 [T, H, W, 3]
    prompts: List[str] = field(default_factory=list)          # the processed prompts (what the text encoder saw)
    latents: Optional[np.ndarray] = None                      # last loop's final latents [B, C, T', H', W']
    clips: List[np.ndarray] = field(default_factory=list)     # decoded clips of earlier loops ([B, 3, T, H, W])
    images: List[np.ndarray] = field(default_factory=list)    # 2.0 t2i2v: the generated first frames, uint8 [H, W, 3]


def resolve_size(image_size=None, resolution=None, aspect_ratio=None) -> Tuple[int, int]:
    if image_size is not None:
        h, w = (int(v) for v in image_size)
        if h <= 0 or w <= 0:
            raise InferenceInputError(f"image_size must be positive, got {image_size}")
        return h, w
    if resolution is None or aspect_ratio is None:
        raise InferenceInputError("give image_size, or both resolution and aspect_ratio")
    return tuple(get_image_size(str(resolution), str(aspect_ratio)))


def process_prompts(prompts: Sequence[str], aes=None, flow=None, camera_motion=None, clean=True) -> List[str]:
    """Upstream's order: split loop prompts, append score suffixes, clean each segment (T5's
    ``text_preprocessing``), merge back into the ``|k|text`` form."""
    out = []
    for prompt in prompts:
        segments, loop_idx = split_prompt(prompt)
        segments = append_score_to_prompts(segments, aes=aes, flow=flow, camera_motion=camera_motion)
        if clean:
            segments = [text_preprocessing(s) for s in segments]
        out.append(merge_prompt(segments, loop_idx))
    return out


class OpenSoraPipelineBase:
    """Wires a text embedder (or cached embeddings), the diffusion model (STDiT, STDiT2 or STDiT3), its VAE and
    its sampler; ``recipe`` (default: from the model's class) says which release's script to follow.

    Subclasses set ``backend`` and implement ``encode_text``, ``encode_video``, ``decode_latents``, ``sample``
    and ``free``. ``text_encoder`` is an object with ``encode(list[str]) -> {"text_emb", "mask"}`` that does not
    clean captions itself (the pipeline cleans, as upstream's script does); it may be None when embeddings are
    passed to ``__call__``.
    """

    backend = None

    def __init__(self, model, vae, scheduler, text_encoder=None, recipe: Optional[Recipe] = None):
        self.model, self.vae, self.scheduler, self.text_encoder = model, vae, scheduler, text_encoder
        self.recipe = recipe or recipe_for_model(model)

    # ---- the tensor parts (twins) ---------------------------------------------------------------------
    def encode_text(self, prompts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        """-> (y [B, 1, L, C] float32, mask [B, L] int)."""
        if self.text_encoder is None:
            raise InferenceInputError("this pipeline has no text encoder: pass prompt_embeds (cached embeddings)")
        out = self.text_encoder.encode(list(prompts))
        return out["text_emb"][:, None].astype(np.float32), out["mask"].astype(np.int64)

    def encode_video(self, x: np.ndarray) -> np.ndarray:
        """[B, 3, T, H, W] in [-1, 1] -> latents [B, C, T', H', W'] (posterior mode)."""
        raise NotImplementedError

    def decode_latents(self, z: np.ndarray, num_frames: int) -> np.ndarray:
        raise NotImplementedError

    def sample(self, z, y, y_mask, additional_args, mask, noise, guidance_scale=None, progress=True):
        raise NotImplementedError

    def latent_size(self, num_frames, image_size) -> Tuple[int, int, int]:
        return tuple(int(v) for v in self.vae.get_latent_size([num_frames, *image_size]))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.out_channels)

    def free(self, *names):
        """Drop components (``"text_encoder"``, ``"model"``, ``"vae"``) to free memory between stages."""
        for n in names:
            setattr(self, n, None)
        if "model" in names:  # the MindSpore sampler caches its compiled CFG denoiser, which holds the model
            cache = getattr(self.scheduler, "_denoisers", None)
            if cache:
                cache.clear()
        gc.collect()

    # ---- the pipeline ---------------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[str], *, image_size=None, resolution=None, aspect_ratio=None,
                 num_frames=DEFAULTS["num_frames"], fps=DEFAULTS["fps"], reference_path=None, mask_strategy=None,
                 loop=1, condition_frame_length=5, condition_frame_edit=0.0, align=None, aes=None, flow=None,
                 camera_motion=None, guidance_scale=None, noise=None, seed=None,
                 prompt_embeds: Optional[Tuple[np.ndarray, np.ndarray]] = None, output_type="uint8",
                 progress=True) -> PipelineOutput:
        """Sample one batch of prompts. ``noise``: a noise source (``randn(shape)``), else ``NumpyNoise(seed)``.
        ``prompt_embeds``: (text_emb [B, L, D], mask [B, L]) used instead of the text encoder for every loop.
        ``output_type``: "uint8" (frames), "float" ([-1, 1] videos in ``clips``) or "latent" (no final decode)."""
        prompts = list(prompts)
        if not prompts:
            raise InferenceInputError("no prompts")
        B = len(prompts)
        image_size = resolve_size(image_size, resolution, aspect_ratio)
        num_frames = get_num_frames(num_frames)
        loop = int(loop)
        if loop < 1:
            raise InferenceInputError(f"loop must be >= 1, got {loop}")
        if noise is None:
            noise = NumpyNoise(0 if seed is None else seed)
        refs = list(reference_path) if reference_path is not None else [""] * B
        strategies = list(mask_strategy) if mask_strategy is not None else [""] * B
        if len(refs) != B or len(strategies) != B:
            raise InferenceInputError(f"{B} prompts but {len(refs)} reference_path and {len(strategies)} "
                                      f"mask_strategy entries")

        # == JSON in prompts, references ==
        recipe = self.recipe
        prompts, refs, strategies = extract_json_from_prompts(prompts, refs, strategies)
        if not recipe.conditioning and (any(refs) or any(strategies) or loop > 1):
            raise InferenceInputError(f"Open-Sora {recipe.name} is text-to-video only: no reference_path, "
                                      f"mask_strategy or loop > 1 (use a 1.1 or 1.2 model)")
        refs_x = self.collect_references(refs, image_size)
        if loop > 1 and recipe.latent_chunks and condition_frame_length % 5:
            raise InferenceInputError(f"condition_frame_length must be a multiple of 5 latent frames (one "
                                      f"17-frame chunk), got {condition_frame_length}")
        additional = prepare_multi_resolution_info(B, image_size, num_frames, fps) if recipe.multi_resolution else {}
        if not recipe.score_suffixes:   # upstream's 1.0 / 1.1 scripts never append scores
            aes = flow = camera_motion = None
        processed = process_prompts(prompts, aes=aes, flow=flow, camera_motion=camera_motion)
        latent_size = self.latent_size(num_frames, image_size)
        self.fit_model(latent_size)

        clips, z = [], None
        for loop_i in range(loop):
            prompts_loop = extract_prompts_loop(processed, loop_i)
            if loop_i > 0:
                refs_x, strategies = append_generated(self.encode_video(clips[-1]), refs_x, strategies, loop_i,
                                                      condition_frame_length, condition_frame_edit)
            z = noise.randn((B, self.latent_channels, *latent_size)).astype(np.float32)
            cond_mask = apply_mask_strategy(z, refs_x, strategies, loop_i, align=align) if recipe.conditioning \
                else None
            if prompt_embeds is not None:
                y, y_mask = np.asarray(prompt_embeds[0], np.float32)[:, None], np.asarray(prompt_embeds[1])
            else:
                y, y_mask = self.encode_text(prompts_loop)
            z = self.sample(z, y, y_mask, additional, cond_mask, noise, guidance_scale, progress)
            if loop_i < loop - 1 or output_type != "latent":
                clips.append(self.decode_latents(z, num_frames))
        if output_type == "latent":
            return PipelineOutput(prompts=processed, latents=z, clips=clips)
        if output_type == "float":
            return PipelineOutput(prompts=processed, latents=z, clips=clips)
        return PipelineOutput(videos=self.join_clips(clips, recipe.condition_pixel_frames(condition_frame_length)),
                              prompts=processed, latents=z)

    def fit_model(self, latent_size):
        """Models with a fixed input size (STDiT, 1.0) are built for one latent size, as upstream builds the
        model from the config's ``image_size`` / ``num_frames``: rebuild their position tables for this one."""
        set_size = getattr(self.model, "set_input_size", None)
        if set_size is not None:
            set_size(tuple(int(v) for v in latent_size))

    def collect_references(self, reference_paths: Sequence[str], image_size) -> List[list]:
        """Each sample's ";"-separated references, read with resize-crop and encoded: [[latent [C,T,H,W]]]."""
        refs_x = []
        for paths in reference_paths:
            if not paths:
                refs_x.append([])
                continue
            refs_x.append([self.encode_video(read_reference(p, image_size)[None])[0] for p in paths.split(";")])
        return refs_x

    @staticmethod
    def join_clips(clips: List[np.ndarray], drop_frames=17) -> List[np.ndarray]:
        """Loop clips [B, 3, T, H, W] -> per sample uint8 [T_total, H, W, 3]; later loops drop their first
        ``drop_frames`` frames, which re-encode their condition (``Recipe.condition_pixel_frames``)."""
        out = []
        for b in range(clips[0].shape[0]):
            parts = [clips[0][b]] + [c[b][:, drop_frames:] for c in clips[1:]]
            out.append(to_uint8_frames(np.concatenate(parts, axis=1)))
        return out

    # ---- building ---------------------------------------------------------------------------------------
    COMPONENTS = ("model", "vae", "text_encoder")

    @classmethod
    def from_pretrained(cls, folder=None, *, model=None, vae=None, text_encoder=None, tokenizer=None,
                        model_preset=None, vae_preset=None, scheduler=None, dtype="fp32", load_text_encoder=True,
                        vae_micro_batch_size=None, **model_overrides):
        """Build from weights on disk. ``folder``: a pipeline folder written by ``save_pretrained``
        (``model/``, ``vae/``, ``text_encoder/`` with its tokenizer files); or each component given on its own:
        ``model`` (a release folder, e.g. ``hpcai-tech/OpenSora-STDiT-v3`` or ``OpenSora-STDiT-v2-stage3``, or a
        file such as ``OpenSora-v1-HQ-16x512x512.pth``, which then needs ``model_preset``), ``vae`` (the 1.2
        ``OpenSora-VAE-v1.2`` folder, or for 1.0/1.1 the ``sd-vae-ft-ema`` diffusers folder; a bare file needs
        ``vae_preset``), ``text_encoder`` (a T5 folder; ``tokenizer`` defaults to it). The model's family picks
        the release's recipe (VAE kind, sampler, script features). ``scheduler``: sampler kwargs over the
        release's defaults (``type`` picks another sampler: rflow, iddpm, dpm-solver).
        Weights that do not match the config raise ``converters.ConversionError`` naming the keys."""
        import os

        import converters

        def part(explicit, name):
            if explicit is not None:
                return explicit
            if folder is not None and os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
            return None

        model_path, vae_path, text_path = part(model, "model"), part(vae, "vae"), part(text_encoder, "text_encoder")
        if model_path is None or vae_path is None:
            raise InferenceInputError("need the diffusion model and the VAE weights (a pipeline folder, or model= "
                                      "and vae=)")
        for p in (model_path, vae_path, text_path):
            if p is not None and not os.path.exists(p):
                raise InferenceInputError(f"weights not found: {p}")
        kw = {"model": model_preset} if model_preset else {}
        net = converters.from_pretrained(None, model_path, cls.backend, **kw, **model_overrides)
        vae_net = converters.from_pretrained(None, vae_path, cls.backend, **({"model": vae_preset} if vae_preset
                                                                          else {}))
        recipe = recipe_for_model(net)
        vae_net = cls.video_vae(vae_net, recipe, vae_micro_batch_size)
        text = None
        if text_path is not None and load_text_encoder:
            text = cls.load_text_embedder(text_path, tokenizer or text_path,
                                          int(net.y_embedder.y_embedding.shape[0]), dtype)
        pipe = cls(net, vae_net, cls.make_scheduler(recipe, scheduler), text, recipe=recipe)
        pipe.apply_dtype(dtype)
        return pipe

    @classmethod
    def make_scheduler(cls, recipe: Recipe, overrides=None):
        """The recipe's sampler (this backend's twin) with ``overrides``."""
        from opensora_dual import registry

        try:
            kind, kwargs = recipe.scheduler_kwargs(overrides)
        except ValueError as e:
            raise InferenceInputError(str(e)) from None
        module, name = SCHEDULERS[kind].split(":")
        return getattr(registry.twin_module(cls.backend, module), name)(**kwargs)

    @classmethod
    def video_vae(cls, vae_net, recipe: Recipe, micro_batch_size=None):
        """1.0/1.1 ("video_kl"): the loaded 2D AutoencoderKL wrapped to run frame by frame, ``micro_batch_size``
        frames per call (the twins' ``VideoAutoencoderKL.from_module``); 1.2: the video VAE as loaded."""
        is_2d = type(vae_net).__name__ == "AutoencoderKL"
        if recipe.vae == "video_kl":
            if not is_2d:
                raise InferenceInputError(f"Open-Sora {recipe.name} samples with a 2D AutoencoderKL (sd-vae-ft-ema), "
                                          f"got a {type(vae_net).__name__}")
            return cls.wrap_video_kl(vae_net, micro_batch_size or recipe.video_kl_micro_batch)
        if is_2d:
            raise InferenceInputError(f"Open-Sora {recipe.name} samples with its video VAE "
                                      f"(VideoAutoencoderPipeline), got a 2D AutoencoderKL")
        return vae_net

    @classmethod
    def wrap_video_kl(cls, autoencoder, micro_batch_size):
        raise NotImplementedError

    @classmethod
    def build_random(cls, model="STDiT3-S/2", vae=None, text_encoder="T5-S", tokenizer=None,
                     scheduler=None, dtype="fp32", **model_overrides):
        """A pipeline of registered presets with random weights (tests, demo, benchmarks); ``vae`` defaults to
        the model's release's small VAE. ``tokenizer``: a folder with ``spiece.model``
        (``opensora_dual.text.toy_tokenizers.build_t5_tokenizer_folder``); without it there is no text encoder
        (pass ``prompt_embeds``)."""
        from opensora_dual import registry

        recipe = recipe_for_preset(model)
        vae = vae or recipe.small_vae
        presets = {"model": model, "vae": vae}
        net = registry.build(model, cls.backend, **model_overrides)
        vae_net = cls.video_vae(registry.build(vae, cls.backend), recipe)
        text = None
        if text_encoder and tokenizer:
            presets["text_encoder"] = text_encoder
            text = cls.make_text_embedder(registry.build(text_encoder, cls.backend), tokenizer,
                                          int(net.y_embedder.y_embedding.shape[0]))
        pipe = cls(net, vae_net, cls.make_scheduler(recipe, scheduler), text, recipe=recipe)
        pipe.presets = {k: (v, {**registry.resolve(v)[1], **(model_overrides if k == "model" else {})})
                        for k, v in presets.items()}
        pipe.tokenizer_folder = tokenizer
        pipe.apply_dtype(dtype)
        return pipe

    @classmethod
    def make_text_embedder(cls, net, tokenizer_folder, max_length):
        """Wrap a loaded text twin (eval mode) into an embedder that does not clean captions."""
        raise NotImplementedError

    @classmethod
    def load_text_embedder(cls, weights, tokenizer_folder, max_length, dtype="fp32"):
        """A T5 embedder that does not clean captions (the pipeline cleans, as upstream's script)."""
        raise NotImplementedError

    def apply_dtype(self, dtype):
        """Compute dtype of the diffusion model ("fp32" | "fp16" | "bf16"); twins refuse what their device lacks."""
        raise NotImplementedError

    def save_pretrained(self, folder):
        """Write ``model/``, ``vae/`` (upstream release layouts) and, when present, ``text_encoder/`` (+ tokenizer
        files), atomically per component; ``from_pretrained(folder)`` in either twin reads it back."""
        import os
        import shutil

        import converters
        from opensora_dual import registry  # noqa: F401  (families register the config writers)

        os.makedirs(folder, exist_ok=True)
        presets = getattr(self, "presets", None)
        if not presets:
            raise InferenceInputError("save_pretrained needs a pipeline made by build_random (registered presets)")
        for name in ("model", "vae"):
            preset, kwargs = presets[name]
            net = getattr(self, name)
            if name == "vae" and self.recipe.vae == "video_kl":   # the 2D VAE's diffusers folder (sd-vae-ft-ema layout)
                net = net.module
            converters.save_release_folder(net, self.backend, os.path.join(folder, name), kwargs, preset=preset)
        if self.text_encoder is not None and "text_encoder" in presets:
            dst = os.path.join(folder, "text_encoder")
            preset, kwargs = presets["text_encoder"]
            converters.save_release_folder(self.text_encoder.net, self.backend, dst, kwargs, preset=preset)
            src = getattr(self, "tokenizer_folder", None)
            if src:
                for name in os.listdir(src):
                    if os.path.isfile(os.path.join(src, name)) and name != "config.json":
                        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
