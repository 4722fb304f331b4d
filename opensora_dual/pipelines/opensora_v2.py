"""Open-Sora 2.0 sampling pipeline, framework-free: upstream's ``main:scripts/diffusion/inference.py`` +
``opensora/utils/sampling.py::api_fn`` for one batch of prompts (text / image / video to video).

Top to bottom: prompts get " {fps} FPS." (after a period) and " {motion_score} motion score." -> the starting
noise (one draw) -> the references read (resize-crop) and encoded by the HunyuanVideo VAE per cond type -> T5
(512 tokens, no attention mask) and CLIP (pooled) of the prompts and of the negative prompt ("") -> flow matching
(``FlowMatching`` twins: text + image guidance, oscillations, the temporal image-scale ramp, paste-back) ->
decode -> the first ``num_frames`` frames -> uint8.

2.0's flow differs from the 1.x ``OpenSoraPipelineBase.__call__`` (cond types instead of mask strategies, two
text encoders, no size conditioning, no loops), so :class:`OpenSoraV2PipelineBase` subclasses it for the
building, saving and freeing machinery and replaces ``__call__``. The twins
(``{pt_reference,ms_impl}.pipelines.opensora_v2``) add the tensor parts through their 1.x pipeline classes.
"""
from __future__ import annotations

import math
import os
import re
from typing import List, Sequence, Tuple

import numpy as np

from opensora_dual.inference import InferenceInputError, read_reference, to_uint8_frames
from opensora_dual.inference.aspect import check_num_frames_v2, get_image_size_v2, round_up_16
from opensora_dual.pipelines.opensora import OpenSoraPipelineBase, PipelineOutput
from opensora_dual.pipelines.recipes import RECIPES
from opensora_dual.sampling.flow_matching import COND_TYPES, latent_num_frames
from opensora_dual.sampling.noise import NumpyNoise

# configs/diffusion/inference/256px.py
DEFAULTS_V2 = dict(resolution="256px", aspect_ratio="16:9", num_frames=129, fps_save=24, motion_score="4",
                   cond_type="t2v", img_resolution="768px")
T5_MAX_LENGTH, CLIP_MAX_LENGTH = 512, 77
T2I_GUIDANCE = 4.0   # modify_option_to_t2i: the Flux-dev image step's (distilled) guidance


# ------------------------------------------------------------------------------------------------ prompts
def add_fps_info_to_text(texts: Sequence[str], fps) -> List[str]:
    """``add_fps_info_to_text``: strip, end with a period, then " {fps} FPS." unless it already ends so."""
    out = []
    for t in texts:
        t = t.strip()
        if not t.endswith("."):
            t += "."
        if not re.search(r"\d+ FPS\.$", t):
            t = t + f" {fps} FPS."
        out.append(t)
    return out


def add_motion_score_to_text(texts: Sequence[str], motion_score) -> List[str]:
    """``add_motion_score_to_text``: " {motion_score} motion score." ("dynamic" asks an OpenAI model upstream:
    refused here, no network)."""
    if motion_score == "dynamic":
        raise InferenceInputError("motion_score 'dynamic' needs upstream's GPT prompt refiner (network); give a "
                                  "number (default 4)")
    return [f"{t} {motion_score} motion score." for t in texts]


def process_prompts_v2(prompts: Sequence[str], fps=24, motion_score="4") -> List[str]:
    """The script's order: FPS suffix, then (when ``motion_score`` is not None) the motion score. No cleaning."""
    out = add_fps_info_to_text(prompts, fps)
    return add_motion_score_to_text(out, motion_score) if motion_score is not None else out


def resolve_size_v2(image_size=None, resolution=None, aspect_ratio=None) -> Tuple[int, int]:
    """``sanitize_sampling_option``: (height, width) given, or from the 2.0 tables; rounded up to 16."""
    if image_size is not None:
        h, w = (int(v) for v in image_size)
        if h <= 0 or w <= 0:
            raise InferenceInputError(f"image_size must be positive, got {image_size}")
        return round_up_16(h), round_up_16(w)
    if resolution is None or aspect_ratio is None:
        raise InferenceInputError("give image_size, or both resolution and aspect_ratio")
    return get_image_size_v2(str(resolution), str(aspect_ratio))


def t2i_image_size(image_resolution, aspect_ratio=None, video_size=None) -> Tuple[int, int]:
    """``modify_option_to_t2i``: the image step's (height, width) = ``get_image_size(img_resolution,
    aspect_ratio)`` (768px 16:9 -> 576 x 1024). Upstream needs an aspect-ratio name; for a video given as
    ``image_size`` (H, W) the same table arithmetic is applied to W / H (multiples of 16)."""
    from opensora_dual.inference.aspect import get_num_pixels_v2

    if aspect_ratio is not None:
        return get_image_size_v2(str(image_resolution), str(aspect_ratio))
    if video_size is None:
        raise InferenceInputError("t2i2v needs the video's aspect ratio or size")
    h, w = (int(v) for v in video_size)
    pixels, D = get_num_pixels_v2(str(image_resolution)), 16
    width = int(math.sqrt(pixels * (w / h)) // D) * D
    return int((pixels / width) // D) * D, width


def v2v_reference_length(cond_type: str, actual_t: int, causal: bool = True) -> int:
    """``collect_references_batch``'s v2v clip: the first / last 32 (+1 causal) frames, 64 (+1) for *_easy
    when the reference has at least 64 frames."""
    target = 64 if (actual_t >= 64 and "easy" in cond_type) else 32
    return target + int(causal)


class OpenSoraV2PipelineBase(OpenSoraPipelineBase):
    """MMDiT + HunyuanVideo VAE + T5 + CLIP + the flow-matching sampler (``recipe`` v2.0). Twins implement
    ``encode_video``, ``decode_latents``, ``sample`` (inherited from their 1.x pipeline) and the text loaders.

    ``text_encoder``: a T5 ``TextEmbedder`` (512 tokens, no mask to the model); ``clip``: a CLIP ``TextEmbedder``
    giving the pooled vector."""

    COMPONENTS = ("model", "vae", "text_encoder", "clip")

    def __init__(self, model, vae, scheduler, text_encoder=None, clip=None, recipe=None, image_model=None,
                 image_vae=None):
        super().__init__(model, vae, scheduler, text_encoder, recipe or RECIPES["v2.0"])
        self.clip = clip
        # t2i2v: the Flux image model (``img_flux``, guidance-distilled) and its autoencoder (``img_flux_ae``)
        self.image_model, self.image_vae = image_model, image_vae
        # name -> callable that (re)builds a freed component (``from_pretrained`` sets them; offloading uses them)
        self.loaders = {}
        self._image_pipes = {}
        self._dims = {}
        if getattr(scheduler, "patch_size", None) is not None:   # packing follows the model (1 for the DC-AE)
            scheduler.patch_size = self._dim("patch_size")

    # ---- shapes -------------------------------------------------------------------------------------
    # Read from the model and the VAE while they live (kept when offloading frees them).
    def _dim(self, key):
        if self.model is not None:
            self._dims.update(patch_size=int(getattr(self.model, "patch_size", 2)),
                              in_channels=int(self.model.in_channels))
        if self.vae is not None:
            self._dims.update(spatial=int(self.vae.spatial_compression_ratio),
                              time=int(self.vae.time_compression_ratio))
        if key not in self._dims:
            self.ensure("model", "vae")
            return self._dim(key)
        return self._dims[key]

    @property
    def patch_size(self) -> int:
        return self._dim("patch_size")

    @property
    def latent_channels(self) -> int:
        """upstream's ``channel // patch_size**2`` with channel = the model's in_channels."""
        return self._dim("in_channels") // self.patch_size ** 2

    @property
    def is_causal_vae(self) -> bool:
        """The sampling option ``is_causal_vae`` (the sampler's): (T - 1) / 4 + 1 latent frames when True, T / 4
        otherwise. Upstream's configs keep True even for the (non-causal) video DC-AE (``high_compression.py``
        inherits it from 256px.py), which then decodes 4 T_lat frames and keeps the first ``num_frames``."""
        return bool(getattr(self.scheduler, "is_causal_vae", True))

    def latent_size(self, num_frames, image_size) -> Tuple[int, int, int]:
        """``get_noise``'s [T_lat, p ceil(H/D), p ceil(W/D)] with D = the VAE's spatial compression x p (16 for
        the HunyuanVideo VAE: upstream's AE_SPATIAL_COMPRESSION default)."""
        p = self.patch_size
        D = int(os.environ.get("AE_SPATIAL_COMPRESSION", 0)) or self._dim("spatial") * p
        T = latent_num_frames(num_frames, self._dim("time"), is_causal_vae=self.is_causal_vae)
        h, w = image_size
        return T, p * math.ceil(h / D), p * math.ceil(w / D)

    # ---- text --------------------------------------------------------------------------------------
    def encode_text_v2(self, prompts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        """-> (T5 last hidden state [B, 512, D], CLIP pooled [B, D']) float32."""
        if self.text_encoder is None or self.clip is None:
            raise InferenceInputError("this pipeline has no T5 / CLIP text encoder: pass prompt_embeds")
        txt = self.text_encoder.encode(list(prompts))["text_emb"]
        vec = self.clip.encode(list(prompts))["text_emb"]
        return np.asarray(txt, np.float32), np.asarray(vec, np.float32)

    # ---- references --------------------------------------------------------------------------------
    def collect_references_v2(self, reference_paths: Sequence[str], cond_type: str, image_size) -> list:
        """``collect_references_batch``: per sample None or a list of encoded latents [C, T', H', W']."""
        refs = []
        for paths in reference_paths:
            if not paths:
                refs.append(None)
                continue
            parts = paths.split(";")
            if "v2v" in cond_type:
                r = read_reference(parts[0], image_size)
                n = v2v_reference_length(cond_type, r.shape[1], self.is_causal_vae)
                if r.shape[1] < n:
                    raise InferenceInputError(f"{cond_type} needs a reference video of at least {n} frames, "
                                              f"{parts[0]} has {r.shape[1]}")
                clips = [r[:, :n] if "head" in cond_type else r[:, -n:]]
            elif cond_type == "i2v_head":
                clips = [read_reference(parts[0], image_size)[:, :1]]
            elif cond_type == "i2v_tail":
                clips = [read_reference(parts[-1], image_size)[:, -1:]]
            elif cond_type == "i2v_loop":
                clips = [read_reference(parts[0], image_size)[:, :1], read_reference(parts[-1], image_size)[:, -1:]]
            else:
                raise InferenceInputError(f"unknown cond_type {cond_type!r}")
            refs.append([self.encode_video(c[None])[0] for c in clips])
        return refs

    # ---- components that can be freed and rebuilt (offloading) ---------------------------------------
    def ensure(self, *names):
        """Rebuild freed components through ``self.loaders`` (set by ``from_pretrained``)."""
        for n in names:
            if getattr(self, n, None) is None:
                if n not in self.loaders:
                    what = {"image_model": "the Flux image model (img_flux)",
                            "image_vae": "the Flux autoencoder (img_flux_ae)"}.get(n, n)
                    raise InferenceInputError(f"this pipeline has no {what}" + (
                        ": t2i2v needs both (from_pretrained(..., image_model=, image_vae=))" if "image" in n else ""))
                setattr(self, n, self.loaders[n]())
                self.on_rebuilt(n)

    def on_rebuilt(self, name):
        """Re-apply switches to a rebuilt component: the compute dtype; sequence parallelism (``sp_layout`` =
        (ranks, rank), set by the script under msrun)."""
        if name == "model":
            self.apply_dtype(getattr(self, "dtype", "fp32"))
        layout = getattr(self, "sp_layout", None)
        if layout and name in ("model", "image_model"):
            getattr(self, name).set_sequence_parallel(*layout)

    # ---- t2i2v: the Flux image step -------------------------------------------------------------------
    def image_pipeline(self, num_steps: int, guidance: float = T2I_GUIDANCE):
        """A pipeline of the image parts with the distilled flow-matching sampler (``modify_option_to_t2i``:
        method "distill", guidance 4.0, the video's number of steps); cached while the image parts live."""
        self.ensure("image_model", "image_vae")
        key = (int(num_steps), float(guidance))
        if key not in self._image_pipes:
            sched = self.make_scheduler(self.recipe, dict(num_sampling_steps=int(num_steps), guidance=float(guidance),
                                                          method="distill"))
            pipe = type(self)(self.image_model, self.image_vae, sched, self.text_encoder, self.clip,
                              recipe=self.recipe)
            pipe.apply_dtype(getattr(self, "dtype", "fp32"))
            self._image_pipes[key] = pipe
        return self._image_pipes[key]

    def text_to_image(self, prompts: Sequence[str], *, image_size, num_steps=None, guidance=T2I_GUIDANCE,
                      noise=None, seed=None, prompt_embeds=None, progress=True) -> np.ndarray:
        """upstream ``api_fn_img``: Flux-dev makes one image per prompt -> float [B, 3, 1, H, W] in about [-1, 1].
        ``noise``: its own source (upstream seeds a fresh generator with the video's seed), else
        ``NumpyNoise(seed)``; ``prompt_embeds``: (T5 features, CLIP pooled) of the raw prompts."""
        prompts = list(prompts)
        steps = int(num_steps if num_steps is not None else self.scheduler.num_sampling_steps)
        ip = self.image_pipeline(steps, guidance)
        if noise is None:
            noise = NumpyNoise(0 if seed is None else seed)
        z = noise.randn((len(prompts), ip.latent_channels, *ip.latent_size(1, image_size))).astype(np.float32)
        txt, vec = prompt_embeds if prompt_embeds is not None else self.encode_text_v2(prompts)
        z = ip.sample(z, np.asarray(txt, np.float32), None, dict(y_vec=np.asarray(vec, np.float32)), None, noise,
                      None, progress)
        return ip.decode_latents(z, 1)

    def make_image_condition(self, prompts, paths, *, video_size, image_size, num_steps=None, noise=None, seed=None,
                             prompt_embeds=None, progress=True) -> List[str]:
        """t2i2v's first stage: the images of ``text_to_image`` (``image_size``, upstream's ``img_resolution``
        768px) as uint8, rescaled to the video's ``video_size`` (PIL bilinear: upstream's
        ``rescale_image_by_path``) and written as PNG to ``paths`` (without extension, as upstream's
        ``generated_condition/<name>.png``) -> (the PNG paths, the i2v_head references; the uint8 images)."""
        from opensora_dual.inference import save_sample
        from opensora_dual.inference.references import rescale_image

        images = self.text_to_image(prompts, image_size=image_size, num_steps=num_steps, noise=noise, seed=seed,
                                    prompt_embeds=prompt_embeds, progress=progress)
        out, frames = [], []
        for img, base in zip(images, paths):
            frame = to_uint8_frames(img)[0]
            if tuple(frame.shape[:2]) != tuple(video_size):
                frame = rescale_image(frame, *video_size)
            out.append(save_sample(frame[None], 1, base))
            frames.append(frame)
        return out, frames

    # ---- the pipeline ---------------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[str], *, image_size=None, resolution=DEFAULTS_V2["resolution"],
                 aspect_ratio=DEFAULTS_V2["aspect_ratio"], num_frames=DEFAULTS_V2["num_frames"],
                 fps=DEFAULTS_V2["fps_save"], motion_score=DEFAULTS_V2["motion_score"],
                 cond_type=DEFAULTS_V2["cond_type"], reference_path=None, negative_prompt=None,
                 guidance_scale=None, guidance_img=None, noise=None, seed=None, prompt_embeds=None,
                 output_type="uint8", progress=True, t2i2v=False, image_resolution=DEFAULTS_V2["img_resolution"],
                 condition_paths=None, image_noise=None, image_prompt_embeds=None, offload=False) -> PipelineOutput:
        """Sample one batch. ``fps``: upstream's ``fps_save`` (the prompt's FPS suffix; the script also saves at
        it); ``motion_score`` None: no motion suffix. ``cond_type``: t2v, i2v_head, i2v_tail, i2v_loop,
        v2v_head, v2v_tail, v2v_head_easy, v2v_tail_easy with ``reference_path`` (per prompt, ";"-separated).
        ``prompt_embeds``: ((txt, vec), (txt_null, vec_null)) instead of the text encoders. ``output_type``:
        "uint8", "float" ([-1, 1] videos in ``clips``) or "latent".

        ``t2i2v``: first the Flux image model makes each prompt's first frame at ``image_resolution`` (same aspect
        ratio), rescaled to the video size and saved as PNG at ``condition_paths`` (one path per prompt without
        extension; default a temporary folder), then the video is sampled as i2v_head from it (upstream's
        ``use_t2i2v``). ``image_noise``: the image step's noise source (default ``NumpyNoise(seed)``);
        ``image_prompt_embeds``: (txt, vec) of the raw prompts for the image step. ``offload``: never hold both
        diffusion models: the video model is freed during the image step and the image parts after it, each
        rebuilt through ``loaders`` when needed (upstream's ``offload_model`` moves them between GPU and CPU)."""
        prompts = list(prompts)
        if not prompts:
            raise InferenceInputError("no prompts")
        B = len(prompts)
        if cond_type not in COND_TYPES:
            raise InferenceInputError(f"unknown cond_type {cond_type!r}; one of {', '.join(COND_TYPES)}")
        image_size = resolve_size_v2(image_size, resolution, aspect_ratio)
        num_frames = check_num_frames_v2(num_frames)
        refs = list(reference_path) if reference_path is not None else [""] * B
        refs = ["" if r is None else str(r) for r in refs]
        if len(refs) != B:
            raise InferenceInputError(f"{B} prompts but {len(refs)} reference_path entries")
        if noise is None:
            noise = NumpyNoise(0 if seed is None else seed)
        latent_size = self.latent_size(num_frames, image_size)
        T = latent_size[0]
        if "v2v" in cond_type and T > 1:
            k = (16 if cond_type.endswith("_easy") else 8) + int(self.is_causal_vae)
            if T < k:
                raise InferenceInputError(f"{cond_type} conditions the first/last {k} latent frames: num_frames "
                                          f"must be >= {(k - 1) * 4 + 1 if self.is_causal_vae else k * 4}, got {num_frames}")
        tmp, images = None, None
        if t2i2v:
            import tempfile

            if condition_paths is None:
                tmp = tempfile.TemporaryDirectory(prefix="t2i2v-")
                condition_paths = [os.path.join(tmp.name, f"condition_{i:04d}") for i in range(B)]
            if len(condition_paths) != B:
                raise InferenceInputError(f"{B} prompts but {len(condition_paths)} condition_paths")
            img_size = t2i_image_size(image_resolution, aspect_ratio, image_size)
            if offload and "model" in self.loaders:
                self.free("model")
            refs, images = self.make_image_condition(prompts, condition_paths, video_size=image_size, image_size=img_size,
                                             noise=image_noise if image_noise is not None else NumpyNoise(
                                                 0 if seed is None else seed),
                                             prompt_embeds=image_prompt_embeds, progress=progress)
            if offload and "image_model" in self.loaders:
                self.free("image_model", "image_vae")
            cond_type = "i2v_head"
        try:
            out = self._sample_video(prompts, processed=process_prompts_v2(prompts, fps=fps, motion_score=motion_score),
                                      refs=refs, image_size=image_size, num_frames=num_frames, cond_type=cond_type,
                                      latent_size=latent_size, negative_prompt=negative_prompt,
                                      guidance_scale=guidance_scale, guidance_img=guidance_img, noise=noise,
                                      prompt_embeds=prompt_embeds, output_type=output_type, progress=progress)
            out.images = images or []
            return out
        finally:
            if tmp is not None:
                tmp.cleanup()

    def _sample_video(self, prompts, *, processed, refs, image_size, num_frames, cond_type, latent_size,
                      negative_prompt, guidance_scale, guidance_img, noise, prompt_embeds, output_type, progress):
        """``api_fn`` for the video model: noise, references, text, sampling, decoding."""
        self.ensure("model", "vae")
        B, T = len(prompts), latent_size[0]
        # == api_fn: noise, references, text, sampling ==
        z = noise.randn((B, self.latent_channels, *latent_size)).astype(np.float32)
        references = [None] * B
        if cond_type != "t2v" and any(refs):
            references = self.collect_references_v2(refs, cond_type, image_size)
            if "easy" in cond_type:
                k = 16 + int(self.is_causal_vae)
                short = [i for i, r in enumerate(references) if r is not None and r[0].shape[1] < min(k, T)]
                if short and T > 1:
                    raise InferenceInputError(f"{cond_type} needs a reference of at least {k} latent frames "
                                              f"(64 video frames + 1 if causal); prompt {short[0]}'s is shorter")
        elif cond_type != "t2v":
            cond_type = "t2v"   # upstream: "will default to cond_type t2v!"
        if prompt_embeds is not None:
            (txt, vec), (txt_null, vec_null) = prompt_embeds
        else:
            neg = [""] if negative_prompt is None else [str(negative_prompt)]
            txt, vec = self.encode_text_v2(processed)
            txt_null, vec_null = self.encode_text_v2(neg)
        additional = dict(y_vec=np.asarray(vec, np.float32), txt_null=np.asarray(txt_null, np.float32),
                          y_vec_null=np.asarray(vec_null, np.float32), cond_type=cond_type)
        if cond_type != "t2v":
            additional["ref"] = references
        if guidance_img is not None:
            additional["guidance_img"] = float(guidance_img)
        z = self.sample(z, np.asarray(txt, np.float32), None, additional, None, noise, guidance_scale, progress)
        if output_type == "latent":
            return PipelineOutput(prompts=processed, latents=z)
        video = self.decode_latents(z, num_frames)[:, :, :num_frames]
        if not self.is_causal_vae and cond_type in ("i2v_head", "i2v_tail", "i2v_loop"):
            pad = self._dim("time") - 1       # api_fn: "remove the duplicate frames"
            video = {"i2v_head": video[:, :, pad:], "i2v_tail": video[:, :, :video.shape[2] - pad],
                     "i2v_loop": video[:, :, pad:video.shape[2] - pad]}[cond_type]
        if output_type == "float":
            return PipelineOutput(prompts=processed, latents=z, clips=[video])
        return PipelineOutput(videos=[to_uint8_frames(v) for v in video], prompts=processed, latents=z)

    def fit_model(self, latent_size):
        pass

    # ---- building ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder=None, *, model=None, vae=None, text_encoder=None, clip=None, tokenizer=None,
                        clip_tokenizer=None, model_preset=None, vae_preset=None, scheduler=None, dtype="fp32",
                        load_text_encoder=True, image_model=None, image_vae=None, image_model_preset=None,
                        image_vae_preset=None, lazy=(), **model_overrides):
        """``folder``: a pipeline folder (``model/``, ``vae/``, ``text_encoder/``, ``clip/``, for t2i2v also
        ``image_model/``, ``image_vae/``); or the release files: ``model`` (``Open_Sora_v2.safetensors``, a bare
        file: ``model_preset="OpenSora-v2-MMDiT"``), ``vae`` (``hunyuan_vae.safetensors`` +
        ``vae_preset="HunyuanVAE"``), ``text_encoder`` (the T5 folder, ``google/t5-v1_1-xxl``), ``clip``
        (``openai/clip-vit-large-patch14``), t2i2v's ``image_model`` (``flux1-dev.safetensors`` +
        ``image_model_preset="Flux-dev"``) and ``image_vae`` (``flux1-dev-ae.safetensors`` +
        ``image_vae_preset="FluxAE"``); tokenizers default to those folders. Components named in ``lazy`` are
        only built when first used (``loaders``; e.g. the image parts, or everything with offloading)."""
        import converters

        def part(explicit, name):
            if explicit is not None:
                return explicit
            if folder is not None and os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
            return None

        paths = {n: part(v, n) for n, v in (("model", model), ("vae", vae), ("text_encoder", text_encoder),
                                            ("clip", clip), ("image_model", image_model),
                                            ("image_vae", image_vae))}
        if paths["model"] is None or paths["vae"] is None:
            raise InferenceInputError("need the diffusion model and the VAE weights (a pipeline folder, or model= "
                                      "and vae=)")
        if (paths["image_model"] is None) != (paths["image_vae"] is None):
            raise InferenceInputError("t2i2v needs both the Flux image model and its autoencoder (image_model= and "
                                      "image_vae=)")
        for p in paths.values():
            if p is not None and not os.path.exists(p):
                raise InferenceInputError(f"weights not found: {p}")
        presets = {"model": model_preset, "vae": vae_preset, "image_model": image_model_preset,
                   "image_vae": image_vae_preset}
        overrides = {"model": model_overrides}

        def loader(name):
            def build():
                preset = presets[name]
                return converters.from_pretrained(None, paths[name], cls.backend,
                                                  **({"model": preset} if preset else {}), **overrides.get(name, {}))
            return build

        loaders = {n: loader(n) for n in presets if paths[n] is not None}
        built = {n: (None if n in lazy else build()) for n, build in loaders.items()}
        recipe = RECIPES["v2.0"]
        t5 = clip_emb = None
        if load_text_encoder and paths["text_encoder"] is not None:
            t5 = cls.load_text_embedder(paths["text_encoder"], tokenizer or paths["text_encoder"], T5_MAX_LENGTH,
                                        dtype, kind="t5")
        if load_text_encoder and paths["clip"] is not None:
            clip_emb = cls.load_text_embedder(paths["clip"], clip_tokenizer or paths["clip"], CLIP_MAX_LENGTH,
                                              dtype, kind="clip")
        if built["model"] is None or built["vae"] is None:   # shapes are read once from the video parts
            built["model"], built["vae"] = built["model"] or loaders["model"](), built["vae"] or loaders["vae"]()
            pipe = cls(built["model"], built["vae"], cls.make_scheduler(recipe, scheduler), t5, clip_emb,
                       recipe=recipe, image_model=built.get("image_model"), image_vae=built.get("image_vae"))
            pipe.free(*[n for n in ("model", "vae") if n in lazy])
        else:
            pipe = cls(built["model"], built["vae"], cls.make_scheduler(recipe, scheduler), t5, clip_emb,
                       recipe=recipe, image_model=built.get("image_model"), image_vae=built.get("image_vae"))
        pipe.loaders = loaders
        pipe.dtype = dtype
        if pipe.model is not None:
            pipe.apply_dtype(dtype)
        return pipe

    @classmethod
    def build_random(cls, model="MMDiT-S", vae="HunyuanVAE-S", text_encoder="T5-S", clip="CLIP-S-text",
                     tokenizer=None, clip_tokenizer=None, scheduler=None, dtype="fp32", image_model=None,
                     image_vae=None, **model_overrides):
        """Registered presets with random weights. The model's widths follow the other parts (in_channels =
        the VAE's latent channels x p^2, context_in_dim = T5's d_model, vec_in_dim = CLIP's hidden size) unless
        given. Without tokenizers there are no text encoders (pass ``prompt_embeds``). ``image_model`` /
        ``image_vae`` (e.g. "Flux-S" / "FluxAE-S"): t2i2v's image parts, sized the same way."""
        from opensora_dual import registry

        vae_kw = registry.resolve(vae)[1]
        t5_kw, clip_kw = registry.resolve(text_encoder)[1], registry.resolve(clip)[1]
        p = int(model_overrides.get("patch_size", registry.resolve(model)[1].get("patch_size", 2)))
        model_overrides.setdefault("in_channels", int(vae_kw.get("latent_channels", 16)) * p * p)
        model_overrides.setdefault("context_in_dim", int(t5_kw["d_model"]))
        model_overrides.setdefault("vec_in_dim", int(clip_kw["hidden_size"]))
        presets = {"model": model, "vae": vae}
        net = registry.build(model, cls.backend, **model_overrides)
        vae_net = registry.build(vae, cls.backend)
        t5 = clip_emb = None
        overrides = {"model": model_overrides}
        if tokenizer and clip_tokenizer:
            from opensora_dual.text.tokenization import load_tokenizer

            presets.update(text_encoder=text_encoder, clip=clip)
            # a (toy) CLIP tokenizer's vocabulary may be larger than the small preset's
            overrides["clip"] = dict(vocab_size=max(int(clip_kw["vocab_size"]), len(load_tokenizer(clip_tokenizer))))
            t5 = cls.make_text_embedder(registry.build(text_encoder, cls.backend), tokenizer, T5_MAX_LENGTH,
                                        kind="t5")
            clip_emb = cls.make_text_embedder(registry.build(clip, cls.backend, **overrides["clip"]), clip_tokenizer,
                                              CLIP_MAX_LENGTH, kind="clip")
        img_net = img_vae_net = None
        if (image_model is None) != (image_vae is None):
            raise InferenceInputError("t2i2v needs both image_model and image_vae")
        if image_model is not None:
            img_kw = registry.resolve(image_vae)[1]
            ip = int(registry.resolve(image_model)[1].get("patch_size", 2))
            overrides["image_model"] = dict(in_channels=int(img_kw.get("z_channels", img_kw.get("latent_channels", 16))) * ip * ip,
                                            context_in_dim=int(t5_kw["d_model"]), vec_in_dim=int(clip_kw["hidden_size"]))
            presets.update(image_model=image_model, image_vae=image_vae)
            img_net = registry.build(image_model, cls.backend, **overrides["image_model"])
            img_vae_net = registry.build(image_vae, cls.backend)
        recipe = RECIPES["v2.0"]
        pipe = cls(net, vae_net, cls.make_scheduler(recipe, scheduler), t5, clip_emb, recipe=recipe,
                   image_model=img_net, image_vae=img_vae_net)
        pipe.presets = {k: (v, {**registry.resolve(v)[1], **overrides.get(k, {})}) for k, v in presets.items()}
        pipe.tokenizer_folder, pipe.clip_tokenizer_folder = tokenizer, clip_tokenizer
        pipe.apply_dtype(dtype)
        return pipe

    def save_pretrained(self, folder):
        """The 1.x layout (``model/``, ``vae/``, ``text_encoder/`` + tokenizer files) plus ``clip/`` (+ its
        tokenizer files)."""
        import shutil

        import converters

        super().save_pretrained(folder)
        for name in ("image_model", "image_vae"):
            if getattr(self, name) is not None and name in self.presets:
                preset, kwargs = self.presets[name]
                converters.save_release_folder(getattr(self, name), self.backend, os.path.join(folder, name), kwargs,
                                               preset=preset)
        if self.clip is not None and "clip" in self.presets:
            dst = os.path.join(folder, "clip")
            preset, kwargs = self.presets["clip"]
            converters.save_release_folder(self.clip.net, self.backend, dst, kwargs, preset=preset)
            src = getattr(self, "clip_tokenizer_folder", None)
            if src:
                for name in os.listdir(src):
                    if os.path.isfile(os.path.join(src, name)) and name != "config.json":
                        shutil.copy(os.path.join(src, name), os.path.join(dst, name))

    def free(self, *names):
        if "text_encoder" in names and "clip" not in names:
            names = names + ("clip",)
        if "image_model" in names or "image_vae" in names:
            self._image_pipes.clear()   # they hold the image parts (and MindSpore's compiled step)
        super().free(*names)


def encode_kwargs(vae) -> dict:
    """``sample_posterior=False`` (the mode) for VAEs with a posterior (HunyuanVideo VAE, Flux AE); nothing for
    the deterministic DC-AE."""
    import inspect

    return {"sample_posterior": False} if "sample_posterior" in inspect.signature(vae.encode).parameters else {}


def text_kind_options(kind: str) -> dict:
    """``make_text_embedder`` options of 2.0's encoders (``HFEmbedder``): no cleaning, no mask to the model;
    T5 keeps the last hidden state, CLIP the pooled output."""
    if kind == "t5":
        return dict(clean=False, mask_to_model=False, output="last_hidden_state")
    if kind == "clip":
        return dict(clean=False, mask_to_model=False, output="pooler_output")
    raise ValueError(f"unknown text encoder kind {kind!r}")
