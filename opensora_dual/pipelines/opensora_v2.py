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
                   cond_type="t2v")
T5_MAX_LENGTH, CLIP_MAX_LENGTH = 512, 77


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

    def __init__(self, model, vae, scheduler, text_encoder=None, clip=None, recipe=None):
        super().__init__(model, vae, scheduler, text_encoder, recipe or RECIPES["v2.0"])
        self.clip = clip

    # ---- shapes -------------------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        return int(getattr(self.model, "patch_size", 2))

    @property
    def latent_channels(self) -> int:
        """upstream's ``channel // patch_size**2`` with channel = the model's in_channels."""
        return int(self.model.in_channels) // self.patch_size ** 2

    def latent_size(self, num_frames, image_size) -> Tuple[int, int, int]:
        """``get_noise``'s [T_lat, p ceil(H/D), p ceil(W/D)] with D = the VAE's spatial compression x p (16 for
        the HunyuanVideo VAE: upstream's AE_SPATIAL_COMPRESSION default)."""
        p = self.patch_size
        D = int(os.environ.get("AE_SPATIAL_COMPRESSION", 0)) or int(self.vae.spatial_compression_ratio) * p
        T = latent_num_frames(num_frames, int(self.vae.time_compression_ratio), is_causal_vae=True)
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
                n = v2v_reference_length(cond_type, r.shape[1])
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

    # ---- the pipeline ---------------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[str], *, image_size=None, resolution=DEFAULTS_V2["resolution"],
                 aspect_ratio=DEFAULTS_V2["aspect_ratio"], num_frames=DEFAULTS_V2["num_frames"],
                 fps=DEFAULTS_V2["fps_save"], motion_score=DEFAULTS_V2["motion_score"],
                 cond_type=DEFAULTS_V2["cond_type"], reference_path=None, negative_prompt=None,
                 guidance_scale=None, guidance_img=None, noise=None, seed=None, prompt_embeds=None,
                 output_type="uint8", progress=True) -> PipelineOutput:
        """Sample one batch. ``fps``: upstream's ``fps_save`` (the prompt's FPS suffix; the script also saves at
        it); ``motion_score`` None: no motion suffix. ``cond_type``: t2v, i2v_head, i2v_tail, i2v_loop,
        v2v_head, v2v_tail, v2v_head_easy, v2v_tail_easy with ``reference_path`` (per prompt, ";"-separated).
        ``prompt_embeds``: ((txt, vec), (txt_null, vec_null)) instead of the text encoders. ``output_type``:
        "uint8", "float" ([-1, 1] videos in ``clips``) or "latent"."""
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
            k = (16 if cond_type.endswith("_easy") else 8) + 1
            if T < k:
                raise InferenceInputError(f"{cond_type} conditions the first/last {k} latent frames: num_frames "
                                          f"must be >= {(k - 1) * 4 + 1}, got {num_frames}")
        processed = process_prompts_v2(prompts, fps=fps, motion_score=motion_score)

        # == api_fn: noise, references, text, sampling ==
        z = noise.randn((B, self.latent_channels, *latent_size)).astype(np.float32)
        references = [None] * B
        if cond_type != "t2v" and any(refs):
            references = self.collect_references_v2(refs, cond_type, image_size)
            if "easy" in cond_type:
                k = 17
                short = [i for i, r in enumerate(references) if r is not None and r[0].shape[1] < min(k, T)]
                if short and T > 1:
                    raise InferenceInputError(f"{cond_type} needs a reference of at least 65 frames (17 latent "
                                              f"frames); prompt {short[0]}'s is shorter")
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
        if output_type == "float":
            return PipelineOutput(prompts=processed, latents=z, clips=[video])
        return PipelineOutput(videos=[to_uint8_frames(v) for v in video], prompts=processed, latents=z)

    def fit_model(self, latent_size):
        pass

    # ---- building ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder=None, *, model=None, vae=None, text_encoder=None, clip=None, tokenizer=None,
                        clip_tokenizer=None, model_preset=None, vae_preset=None, scheduler=None, dtype="fp32",
                        load_text_encoder=True, **model_overrides):
        """``folder``: a pipeline folder (``model/``, ``vae/``, ``text_encoder/``, ``clip/``); or the release
        files: ``model`` (``Open_Sora_v2.safetensors``, a bare file: ``model_preset="OpenSora-v2-MMDiT"``),
        ``vae`` (``hunyuan_vae.safetensors`` + ``vae_preset="HunyuanVAE"``), ``text_encoder`` (the T5 folder,
        ``google/t5-v1_1-xxl``), ``clip`` (``openai/clip-vit-large-patch14``); tokenizers default to those
        folders."""
        import converters

        def part(explicit, name):
            if explicit is not None:
                return explicit
            if folder is not None and os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
            return None

        paths = {n: part(v, n) for n, v in (("model", model), ("vae", vae), ("text_encoder", text_encoder),
                                            ("clip", clip))}
        if paths["model"] is None or paths["vae"] is None:
            raise InferenceInputError("need the diffusion model and the VAE weights (a pipeline folder, or model= "
                                      "and vae=)")
        for p in paths.values():
            if p is not None and not os.path.exists(p):
                raise InferenceInputError(f"weights not found: {p}")
        net = converters.from_pretrained(None, paths["model"], cls.backend,
                                         **({"model": model_preset} if model_preset else {}), **model_overrides)
        vae_net = converters.from_pretrained(None, paths["vae"], cls.backend,
                                             **({"model": vae_preset} if vae_preset else {}))
        recipe = RECIPES["v2.0"]
        t5 = clip_emb = None
        if load_text_encoder and paths["text_encoder"] is not None:
            t5 = cls.load_text_embedder(paths["text_encoder"], tokenizer or paths["text_encoder"], T5_MAX_LENGTH,
                                        dtype, kind="t5")
        if load_text_encoder and paths["clip"] is not None:
            clip_emb = cls.load_text_embedder(paths["clip"], clip_tokenizer or paths["clip"], CLIP_MAX_LENGTH,
                                              dtype, kind="clip")
        pipe = cls(net, vae_net, cls.make_scheduler(recipe, scheduler), t5, clip_emb, recipe=recipe)
        pipe.apply_dtype(dtype)
        return pipe

    @classmethod
    def build_random(cls, model="MMDiT-S", vae="HunyuanVAE-S", text_encoder="T5-S", clip="CLIP-S-text",
                     tokenizer=None, clip_tokenizer=None, scheduler=None, dtype="fp32", **model_overrides):
        """Registered presets with random weights. The model's widths follow the other parts (in_channels =
        the VAE's latent channels x p^2, context_in_dim = T5's d_model, vec_in_dim = CLIP's hidden size) unless
        given. Without tokenizers there are no text encoders (pass ``prompt_embeds``)."""
        from opensora_dual import registry

        vae_kw = registry.resolve(vae)[1]
        t5_kw, clip_kw = registry.resolve(text_encoder)[1], registry.resolve(clip)[1]
        p = int(registry.resolve(model)[1].get("patch_size", 2))
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
        recipe = RECIPES["v2.0"]
        pipe = cls(net, vae_net, cls.make_scheduler(recipe, scheduler), t5, clip_emb, recipe=recipe)
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
        super().free(*names)


def text_kind_options(kind: str) -> dict:
    """``make_text_embedder`` options of 2.0's encoders (``HFEmbedder``): no cleaning, no mask to the model;
    T5 keeps the last hidden state, CLIP the pooled output."""
    if kind == "t5":
        return dict(clean=False, mask_to_model=False, output="last_hidden_state")
    if kind == "clip":
        return dict(clean=False, mask_to_model=False, output="pooler_output")
    raise ValueError(f"unknown text encoder kind {kind!r}")
