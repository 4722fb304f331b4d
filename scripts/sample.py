"""Open-Sora 1.2 sampling: text/image/video to video (upstream ``v1.2.0:scripts/inference.py``), MindSpore or PyTorch.

    python scripts/sample.py --prompt "a red car on a coastal road" [--config sample.yaml] [--backend ms|pt]
    python scripts/sample.py --prompt-path prompts.txt --num-frames 4s --resolution 480p --aspect-ratio 9:16
    python scripts/sample.py --config configs/opensora-v1-2/inference/demo-small.yaml   # tiny random pipeline

Settings come from a YAML config (default ``configs/opensora-v1-2/inference/sample.yaml``, upstream's ``sample.py``
keys and v1.2 defaults; ``_base_: other.yaml`` inherits). EVERY config key can be overridden on the command line,
spelled with dashes or underscores (``--num-frames 4s``, ``--num_frames 51``), nested keys with a dot
(``--scheduler.num_sampling_steps 10``, ``--model.type STDiT3-XL/2``); ``null`` means None, several values make a
list. ``--print-config`` shows the effective settings and exits.

Weights: ``--pipeline-folder DIR`` (``model/``, ``vae/``, ``text_encoder/`` as written by ``save_pretrained``), or
``--model-path`` (the ``hpcai-tech/OpenSora-STDiT-v3`` release folder, or a converted file + ``--model-preset``),
``--vae-path`` (+ ``--vae-preset``), ``--text-encoder-path`` (a T5 folder with ``spiece.model``; ``--tokenizer-path``
if the tokenizer lives elsewhere). A Hugging Face repo id (the config's default) is looked up in the local cache
only: nothing is downloaded. ``--text-embeddings DIR`` uses cached T5 features (``scripts/infer_t5.py``,
``{index:06d}.npz`` per prompt-file line) instead of the text encoder.

Randomness: ``--noise numpy`` (default) draws from ``numpy.random.default_rng(seed)``, the same numbers in both
backends, so ``--backend pt`` and ``--backend ms`` give the same video; ``--noise torch`` draws with
``torch.randn`` after ``torch.manual_seed(seed)`` as upstream does (needs torch, also for ``--backend ms``). One
stream runs through all samples in order, as upstream; skipped (already written) samples still advance it, so a
resumed run gives the files a complete run would.

``--stages 3`` for tight memory: (1) encode the text of every prompt, free the text encoder, (2) denoise every
prompt and keep the latents in ``<save_dir>/.latents/``, free the diffusion model, (3) decode and save. Results
equal the one-stage run. Outputs already present are skipped (``--overwrite`` redoes them), before any model
work. Outputs: ``<save_dir>/sample_0000.mp4`` (H.264) or ``.png`` for one frame, at ``save_fps``, with the prompt in
``sample_0000.txt``. Bad input ends with one line on stderr and exit code 2.
"""
import argparse
import copy
import gc
import hashlib
import json
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from opensora_dual.config import (ConfigError, load_config, parse_values,  # noqa: E402  (framework-free)
                                   resolve_weights as _resolve_weights, split_options)

PROG = "sample.py"
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "opensora-v1-2", "inference", "sample.yaml")
SCRIPT_DEFAULTS = dict(pipeline_folder=None, build_random_pipeline=False, noise="numpy", stages=1,
                       text_embeddings=None, image_size=None, prompt=None, prompt_path=None, reference_path=None,
                       mask_strategy=None, loop=1, condition_frame_length=5, condition_frame_edit=0.0, align=None,
                       aes=None, flow=None, camera_motion=None, sample_name=None, prompt_as_path=False, num_sample=1,
                       start_index=0, end_index=None, verbose=1, frame_interval=1, save_fps=None, batch_size=1,
                       seed=1024, dtype="fp32", multi_resolution="STDiT2", save_dir="./samples/samples/")
# what a component folder's config.json may name (the recipe then checks model and VAE belong together)
COMPONENT_TYPES = {"model": ("STDiT3", "STDiT2", "STDiT"), "vae": ("VideoAutoencoderPipeline", "AutoencoderKL"),
                   "text_encoder": ("t5",)}
# keys a section may get from the command line even when the config file does not list them
SCHEDULER_KEYS = ("type", "num_sampling_steps", "num_timesteps", "cfg_scale", "use_discrete_timesteps",   # rflow
                  "use_timestep_transform", "transform_scale",
                  "cfg_channel", "timestep_respacing", "noise_schedule", "use_kl", "sigma_small",     # iddpm
                  "predict_xstart", "learn_sigma", "rescale_learned_sigmas", "diffusion_steps")
KNOWN_NESTED = {"scheduler": SCHEDULER_KEYS, "model": ("type", "from_pretrained"),
                "vae": ("type", "from_pretrained"), "text_encoder": ("type", "from_pretrained", "tokenizer"),
                # Open-Sora 2.0's sections (upstream's names)
                "sampling_option": ("resolution", "aspect_ratio", "num_frames", "num_steps", "guidance",
                                    "guidance_img", "text_osci", "image_osci", "scale_temporal_osci", "shift",
                                    "flow_shift", "seed", "method", "temporal_reduction", "is_causal_vae", "height",
                                    "width"),
                "ae": ("type", "from_pretrained"), "t5": ("type", "from_pretrained", "tokenizer"),
                "clip": ("type", "from_pretrained", "tokenizer")}


class UserError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


# ---------------------------------------------------------------------------------------------------------------
# command line and config
# ---------------------------------------------------------------------------------------------------------------
def _none_or(kind):
    def parse(text):
        if text.strip().lower() in ("null", "none", ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} or null, got {text!r}") from None
    parse.__name__ = kind.__name__
    return parse


def _bool(text):
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _str_or_none(text):
    return None if text.strip().lower() in ("null", "none") else text


# config key -> (argparse kwargs, help). Keys with a dot are nested; "scheduler.num_sampling_steps" is also
# reachable as --num-sampling-steps (upstream's flag).
CONFIG_OPTIONS = [
    ("prompt", dict(nargs="+", type=str), "prompts (each may end with JSON: reference_path, mask_strategy)"),
    ("prompt_path", dict(type=_str_or_none), "text file, one prompt per line"),
    ("start_index", dict(type=int), "first prompt (0-based) of the file / list to sample; names count from it"),
    ("end_index", dict(type=_none_or(int)), "stop before this prompt (null: to the end)"),
    ("num_frames", dict(type=str), "frames: an int or 2s/1x=51, 4s/2x=102, 8s/4x=204, 16s/8x=408, 32s/16x=816"),
    ("image_size", dict(nargs=2, type=int, metavar=("H", "W")), "height width (wins over resolution/aspect ratio)"),
    ("resolution", dict(type=str), "144p 240p 360p 480p 720p 1080p (or 256 512 1024 2048)"),
    ("aspect_ratio", dict(type=str), "H:W name, e.g. 9:16 (landscape 240x426 at 240p), 1:1, 16:9"),
    ("fps", dict(type=int), "fps the model is conditioned on"),
    ("frame_interval", dict(type=int), "save_fps defaults to fps // frame_interval"),
    ("save_fps", dict(type=_none_or(int)), "fps of the written mp4"),
    ("batch_size", dict(type=int), "prompts per forward"),
    ("seed", dict(type=int), "random seed"),
    ("num_sample", dict(type=int), "samples per prompt (names get -k)"),
    ("scheduler.num_sampling_steps", dict(type=int), "rectified-flow steps"),
    ("scheduler.cfg_scale", dict(type=float), "classifier-free guidance scale"),
    ("aes", dict(type=_none_or(float)), "aesthetic score appended to prompts (null: none)"),
    ("flow", dict(type=_none_or(float)), "motion score appended to prompts (null: none)"),
    ("camera_motion", dict(type=_str_or_none), "camera motion appended to prompts (null: none)"),
    ("reference_path", dict(nargs="+", type=_str_or_none), "per prompt: ';'-separated images/videos"),
    ("mask_strategy", dict(nargs="+", type=_str_or_none), "per prompt: loop,ref,ref_start,target_start,len,edit;..."),
    ("loop", dict(type=int), "clips generated one after another, each continuing the last"),
    ("condition_frame_length", dict(type=int), "latent frames a loop takes from the previous clip (5 = 17 frames)"),
    ("condition_frame_edit", dict(type=float), "edit ratio of those frames (0 = frozen)"),
    ("align", dict(type=_none_or(int)), "snap mask-strategy starts to multiples of this (latent frames)"),
    ("save_dir", dict(type=str), "output folder"),
    ("sample_name", dict(type=_str_or_none), "output name prefix (default sample_)"),
    ("prompt_as_path", dict(nargs="?", const=True, type=_bool), "name outputs after their prompt"),
    ("multi_resolution", dict(type=str), "STDiT2 (size conditioning, the only v1.2 choice)"),
    ("dtype", dict(choices=["fp32", "fp16", "bf16"]), "diffusion model compute dtype (bf16: pt, or ms on Ascend)"),
    ("verbose", dict(type=int), "0 quiet, 1 progress over prompts, 2 also over steps"),
    ("pipeline_folder", dict(type=_str_or_none), "folder written by save_pretrained: model/ vae/ text_encoder/"),
    ("model.from_pretrained", dict(type=_str_or_none), "STDiT3 release folder or converted file"),
    ("model.type", dict(type=str), "STDiT3 preset of a bare weights file (e.g. STDiT3-XL/2)"),
    ("vae.from_pretrained", dict(type=_str_or_none), "OpenSora-VAE-v1.2 release folder or converted file"),
    ("vae.type", dict(type=str), "VAE preset of a bare weights file (e.g. OpenSoraVAE_V1_2)"),
    ("text_encoder.from_pretrained", dict(type=_str_or_none), "T5 folder (config.json, weights, spiece.model)"),
    ("text_encoder.tokenizer", dict(type=_str_or_none), "tokenizer folder (default: the T5 folder)"),
    ("text_embeddings", dict(type=_str_or_none), "folder of cached T5 features {index:06d}.npz (no T5 loaded)"),
    ("noise", dict(choices=["numpy", "torch"]), "random numbers: numpy (same in both backends) or torch (upstream)"),
    ("stages", dict(type=int, choices=[1, 3]), "3: text, denoise, decode one after another (less memory)"),
    # Open-Sora 2.0 (configs/opensora-v2-0/inference/*.yaml, upstream's key names)
    ("cond_type", dict(type=str), "2.0: t2v i2v_head i2v_tail i2v_loop v2v_head v2v_tail v2v_head_easy v2v_tail_easy"),
    ("ref", dict(nargs="+", type=_str_or_none), "2.0: per prompt the reference image/video (';' for i2v_loop)"),
    ("motion_score", dict(type=_str_or_none), "2.0: ' {motion_score} motion score.' appended (null: none)"),
    ("fps_save", dict(type=int), "2.0: the ' {fps} FPS.' suffix and the mp4's fps"),
    ("clip.from_pretrained", dict(type=_str_or_none), "2.0: CLIP folder (openai/clip-vit-large-patch14)"),
    ("num_steps", dict(type=int), "2.0: sampling steps (upstream alias of sampling_option.num_steps)"),
    ("guidance", dict(type=float), "2.0: text guidance (alias of sampling_option.guidance)"),
    ("guidance_img", dict(type=float), "2.0: image guidance (alias of sampling_option.guidance_img)"),
]
# our flag names for some keys (besides the key's own spelling)
ALIASES = {"scheduler.num_sampling_steps": ["--num-sampling-steps"], "scheduler.cfg_scale": ["--cfg-scale"],
           "model.from_pretrained": ["--model-path", "--ckpt-path"], "model.type": ["--model-preset"],
           "vae.from_pretrained": ["--vae-path"], "vae.type": ["--vae-preset"],
           "text_encoder.from_pretrained": ["--text-encoder-path"], "text_encoder.tokenizer": ["--tokenizer-path"],
           "clip.from_pretrained": ["--clip-path"]}


def _flags(key):
    """--num-frames and --num_frames for "num_frames"; --scheduler.num_sampling_steps (+ ALIASES) for nested keys."""
    flags = list(ALIASES.get(key, []))
    spellings = [key] if "." in key else [key.replace("_", "-"), key]
    for s in spellings:
        if "--" + s not in flags:
            flags.append("--" + s)
    return flags


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    p.add_argument("--backend", default="ms", choices=["ms", "pt"],
                   help="MindSpore port (default) or PyTorch reference")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    g = p.add_argument_group("config keys (any other key: --key value, --section.key value)")
    for key, kwargs, help_text in CONFIG_OPTIONS:
        if "choices" not in kwargs and "metavar" not in kwargs:
            kwargs = dict(kwargs, metavar=key.split(".")[-1].upper())
        g.add_argument(*_flags(key), dest="cfg:" + key, default=argparse.SUPPRESS, help=help_text, **kwargs)
    return p


def parse_generic(tokens):
    """["--scheduler.num_sampling_steps", "3", "--a=b", "--l", "1", "2"]
    -> [("scheduler.num_sampling_steps", 3), ("a", "b"), ("l", [1, 2])]"""
    out = []
    for name, values in split_options(tokens):
        if not values:
            raise UserError(f"option --{name} needs a value")
        key = name.replace("-", "_")
        out.append((key, parse_values(values)))
    return out


def set_key(cfg, dotted, value, cli_keys):
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise UserError(f"cannot set --{dotted}: {part!r} is not a section in the config")
        node = node[part]
    node[parts[-1]] = value
    cli_keys.add(dotted)


def key_exists(cfg, parts):
    """A dotted key present in the config, or a known key of a section (KNOWN_NESTED)."""
    node = cfg
    for depth, part in enumerate(parts):
        if node is None and depth == 1:
            node = {}
        if not isinstance(node, dict):
            return False
        if part not in node:
            return depth == 1 and len(parts) == 2 and part in KNOWN_NESTED.get(parts[0], ())
        node = node[part]
    return True


def effective_config(args, extras):
    """Config file + command line -> (cfg dict, set of dotted keys given on the command line)."""
    cfg = load_config(args.config)
    for k, v in SCRIPT_DEFAULTS.items():
        cfg.setdefault(k, copy.deepcopy(v))
    cli_keys = set()
    for name, value in vars(args).items():
        if name.startswith("cfg:"):
            set_key(cfg, name[4:], value, cli_keys)
    known = {k for k, _, _ in CONFIG_OPTIONS}
    for key, value in parse_generic(extras):
        if key not in known and not key_exists(cfg, key.split(".")):
            raise UserError(f"unknown option --{key} (not a key of the config {args.config}; see --help)")
        set_key(cfg, key, value, cli_keys)
    if "image_size" not in cli_keys and ({"resolution", "aspect_ratio"} & cli_keys):
        cfg["image_size"] = None  # --resolution / --aspect-ratio on the command line beat a config image_size
    if "prompt_path" in cli_keys and "prompt" not in cli_keys:
        cfg["prompt"] = None      # --prompt-path on the command line beats prompts listed in the config
    if isinstance(cfg.get("prompt"), str):
        cfg["prompt"] = [cfg["prompt"]]
    return cfg, cli_keys


# ---------------------------------------------------------------------------------------------------------------
# planning: prompts, names, what is left to do
# ---------------------------------------------------------------------------------------------------------------
class Unit:
    """One batch of prompts for one sample number k: what upstream's loop body samples in one go."""

    def __init__(self, pos, k, prompts, texts, refs, strategies, indices, lines, bases):
        self.pos, self.k = pos, k
        self.prompts, self.texts, self.refs, self.strategies = prompts, texts, refs, strategies
        self.indices, self.lines, self.bases = indices, lines, bases


def _int_key(cfg, key, minimum=None, allow_none=False):
    v = cfg.get(key)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{key} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise UserError(f"{key} must be >= {minimum}, got {v}")
    return v


def _per_prompt(cfg, key, n_all, lo, hi):
    """reference_path / mask_strategy: None -> "" per prompt; a list of one entry per prompt (all prompts, or just
    the selected ones)."""
    from opensora_dual.inference import InferenceInputError

    v = cfg.get(key)
    n_sel = hi - lo
    if v is None:
        return [""] * n_sel
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise InferenceInputError(f"{key} must be a list with one entry per prompt, got {v!r}")
    v = ["" if x is None else str(x) for x in v]
    if len(v) == n_all:
        return v[lo:hi]
    if len(v) == n_sel:
        return v
    raise InferenceInputError(f"{key} has {len(v)} entries for {n_sel} prompts (give one per prompt)")


def select_prompts(cfg):
    """-> (prompts, file line indices or None, sample indices, refs, strategies). Upstream: ``--prompt`` wins over
    ``prompt_path``; [start_index:end_index] selects (here for both); names count from start_index."""
    from opensora_dual.inference import InferenceInputError, load_prompts

    start = _int_key(cfg, "start_index", 0)
    end = _int_key(cfg, "end_index", 0, allow_none=True)
    lines = None
    if cfg.get("prompt") is not None:
        everything = [str(p) for p in cfg["prompt"]]
        if not everything:
            raise InferenceInputError("--prompt needs at least one prompt")
        selected = everything[start:end]
        if not selected:
            raise InferenceInputError(f"start_index={start}, end_index={end} select none of the "
                                      f"{len(everything)} prompts")
        n_all = len(everything)
    elif cfg.get("prompt_path"):
        path = cfg["prompt_path"]
        if os.path.isdir(path):
            raise InferenceInputError(f"prompt file is a directory: {path}")
        selected = load_prompts(path, start, end)
        # line numbers of the selected prompts: the names of the embedding cache (opensora_dual.text.embed_cache)
        with open(path, encoding="utf-8-sig") as f:
            nonblank = [i for i, line in enumerate(f) if line.strip()]
        lines = nonblank[start:end]
        n_all = len(nonblank)
        if len(lines) != len(selected):  # a line separator Python's splitlines knows but file iteration does not
            lines = None
    else:
        raise InferenceInputError("no prompts: give --prompt TEXT [TEXT ...] or --prompt-path FILE")
    hi = start + len(selected)
    refs = _per_prompt(cfg, "reference_path", n_all, start, hi)
    strategies = _per_prompt(cfg, "mask_strategy", n_all, start, hi)
    return selected, lines, list(range(start, hi)), refs, strategies


def check_references(texts_refs):
    """Every reference file exists before any model is loaded (URLs are not downloaded)."""
    from opensora_dual.inference import InferenceInputError, collect_reference_paths

    for i, ref in texts_refs:
        for p in collect_reference_paths(ref):
            if re.match(r"^(?:http|ftp)s?://", p, re.IGNORECASE):
                raise InferenceInputError(f"prompt {i}: reference {p} is a URL; download it first (no network here)")
            if not os.path.isfile(p):
                raise InferenceInputError(f"prompt {i}: reference file not found: {p}")


def plan(cfg, num_frames, loop):
    from opensora_dual.inference import (InferenceInputError, extract_json_from_prompts, get_save_path_name,
                                         parse_mask_strategy, split_prompt)

    prompts, lines, indices, refs, strategies = select_prompts(cfg)
    texts, refs, strategies = extract_json_from_prompts(list(prompts), list(refs), list(strategies))
    check_references(zip(indices, refs))
    for i, (t, m) in zip(indices, zip(texts, strategies)):
        split_prompt(t)          # a malformed "|0|a|2|b" loop prompt fails here, before any model work
        try:
            parse_mask_strategy(m)
        except InferenceInputError as e:
            raise InferenceInputError(f"prompt {i}: {e}") from None
    bs = _int_key(cfg, "batch_size", 1)
    num_sample = _int_key(cfg, "num_sample", 1)
    save_dir = cfg["save_dir"]
    ext = ".png" if num_frames == 1 and loop == 1 else ".mp4"
    units = []
    for b0 in range(0, len(prompts), bs):
        sl = slice(b0, b0 + bs)
        for k in range(num_sample):
            bases = [get_save_path_name(save_dir, sample_name=cfg.get("sample_name"), sample_idx=idx, prompt=t,
                                        prompt_as_path=bool(cfg.get("prompt_as_path")), num_sample=num_sample, k=k)
                     for idx, t in zip(indices[sl], texts[sl])]
            units.append(Unit(len(units), k, prompts[sl], texts[sl], refs[sl], strategies[sl], indices[sl],
                              None if lines is None else lines[sl], bases))
    return units, ext


# ---------------------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------------------
def resolve_weights(path, what):
    """``opensora_dual.config.resolve_weights`` with this script's error type."""
    from opensora_dual.inference import InferenceInputError

    try:
        return _resolve_weights(path, what)
    except ConfigError as e:
        raise InferenceInputError(str(e)) from None


def _folder_type(path):
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        return None
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        return cfg.get("model_type") or cfg.get("_class_name")   # transformers / diffusers config.json
    except (OSError, ValueError):
        return None


def _is_preset(name):
    from opensora_dual import registry

    return isinstance(name, str) and name in registry.preset_names()


def resolve_components(cfg, cli_keys, need_text):
    """-> dict(model=, vae=, text_encoder=, tokenizer=, model_preset=, vae_preset=) of checked local paths."""
    from opensora_dual.inference import InferenceInputError

    folder = cfg.get("pipeline_folder")
    if folder and cfg.get("build_random_pipeline") and not os.path.isdir(os.path.join(folder, "model")):
        return None  # built later, then resolved again
    if folder and not os.path.isdir(folder):
        raise InferenceInputError(f"pipeline folder not found: {folder}")
    out = {}
    for name, what in (("model", "diffusion model"), ("vae", "VAE"), ("text_encoder", "text encoder")):
        section = cfg.get(name) or {}
        explicit = f"{name}.from_pretrained" in cli_keys
        if name == "text_encoder" and not need_text:
            path = None
        elif folder and not explicit:
            p = os.path.join(folder, name)
            path = p if os.path.exists(p) else None
        else:
            path = resolve_weights(section.get("from_pretrained"), what)
        if path is None and (name != "text_encoder" or need_text):
            where = f"in the pipeline folder {folder}" if folder and not explicit else "in the config"
            flag = {"model": "--model-path", "vae": "--vae-path", "text_encoder": "--text-encoder-path"}[name]
            raise InferenceInputError(f"no {what} weights {where}: pass {flag} (or --pipeline-folder)")
        if path is not None and os.path.isdir(path):
            kind = _folder_type(path)
            if kind is None and name != "text_encoder":
                raise InferenceInputError(f"{what} folder {path} has no config.json (a release folder needs one)")
            if kind is not None and kind not in COMPONENT_TYPES[name]:
                raise InferenceInputError(f"{what} folder {path} holds a {kind!r} model, expected one of "
                                          f"{', '.join(COMPONENT_TYPES[name])}")
        out[name] = path if (name != "text_encoder" or need_text) else None
        preset = section.get("type")
        if name in ("model", "vae"):
            bare = path is not None and os.path.isfile(path)
            if bare or f"{name}.type" in cli_keys:
                if not _is_preset(preset):
                    raise InferenceInputError(f"{what}: {preset!r} is not a registered preset (needed for the bare "
                                              f"weights file {path}; pass --{name}-preset)")
                out[f"{name}_preset"] = preset
            else:
                out[f"{name}_preset"] = None
    if need_text:
        tok = (cfg.get("text_encoder") or {}).get("tokenizer") or out["text_encoder"]
        if not os.path.isdir(tok) or not ({"spiece.model", "tokenizer.json"} & set(os.listdir(tok))):
            raise InferenceInputError(f"no T5 tokenizer in {tok} (needs spiece.model); pass --tokenizer-path")
        out["tokenizer"] = tok
    else:
        out["tokenizer"] = None
    return out


def model_max_length(comp):
    """Caption length of the diffusion model (the text encoder pads to it), without building the model."""
    import converters

    path, preset = comp["model"], comp.get("model_preset")
    if preset:
        from opensora_dual import registry

        return int(registry.resolve(preset)[1].get("model_max_length", 300))
    ckpt = converters.read_checkpoint(path)
    try:
        cfg = ckpt.config
        if cfg is None:
            from converters.api import _own_config

            cfg = _own_config(ckpt)
    finally:
        ckpt.close()
    return int((cfg or {}).get("model_max_length", 300))


def recipe_from_config(cfg, cli_keys):
    """The release recipe (opensora_dual.pipelines.recipes) of the configured diffusion model, without building
    it: the model folder's config.json ``model_type`` (pipeline folder or model.from_pretrained), else the
    ``model.type`` preset."""
    from opensora_dual import registry
    from opensora_dual.inference import InferenceInputError
    from opensora_dual.pipelines.recipes import recipe_for_family

    section = cfg.get("model") or {}
    candidates = []
    folder = cfg.get("pipeline_folder")
    if folder and "model.from_pretrained" not in cli_keys:
        candidates.append(os.path.join(folder, "model"))
    else:
        try:
            candidates.append(_resolve_weights(section.get("from_pretrained"), "diffusion model"))
        except ConfigError:
            pass
    for path in candidates:
        kind = _folder_type(path) if path and os.path.isdir(path) else None
        if kind:
            try:
                return recipe_for_family(registry.family_for_model_type(kind).name)
            except KeyError as e:
                raise InferenceInputError(f"diffusion model folder {path}: {e.args[0]}") from None
    preset = section.get("type")
    if _is_preset(preset):
        try:
            return recipe_for_family(registry.resolve(preset)[0].name)
        except KeyError as e:
            raise InferenceInputError(f"model.type {preset}: {e.args[0]}") from None
    raise InferenceInputError(f"cannot tell which Open-Sora release the diffusion model is: no config.json in its "
                              f"folder and model.type {preset!r} is not a registered preset")


def _small_vae(names):
    """The demo pipeline's VAE preset: the config's when it is registered, else the release's small one."""
    from opensora_dual.pipelines.recipes import recipe_for_preset

    return names["vae"] if _is_preset(names["vae"]) else recipe_for_preset(names["model"]).small_vae


def build_random_pipeline(Pipeline, cfg, backend, folder, seed):
    """The demo: registered small presets with random weights (zero-initialised layers filled with small values,
    else upstream's zero-init final layer makes every video blank), a toy T5 tokenizer, written with
    ``save_pretrained`` so that either backend reads the same weights afterwards."""
    import tempfile

    import numpy as np

    from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder

    names = {k: (cfg.get(k) or {}).get("type") for k in ("model", "vae", "text_encoder")}
    print(f"building a random demo pipeline ({names['model']}, {names['vae']}, {names['text_encoder']}) "
          f"in {folder}", flush=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = os.path.join(tmp, "tokenizer")
        build_t5_tokenizer_folder(tok, vocab_size=512)
        if backend == "pt":
            import torch

            torch.manual_seed(seed)
        else:
            import mindspore as ms

            ms.set_seed(seed)
        pipe = Pipeline.build_random(model=names["model"], vae=_small_vae(names), text_encoder=names["text_encoder"],
                                     tokenizer=tok)
        if backend == "pt":
            import torch

            with torch.no_grad():
                for _, p in sorted(pipe.model.named_parameters()):
                    if not p.detach().abs().sum():
                        p.copy_(torch.from_numpy((rng.standard_normal(tuple(p.shape)) * 0.02).astype(np.float32)))
        else:
            import mindspore as ms

            for p in sorted(pipe.model.get_parameters(), key=lambda q: q.name):
                if not p.asnumpy().any():
                    p.set_data(ms.Tensor((rng.standard_normal(tuple(p.shape)) * 0.02).astype(np.float32)))
        pipe.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------
def one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def _npz_save(path, **arrays):
    import numpy as np

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def job_rank_size(backend):
    """(rank, ranks) of an msrun job (``MS_WORKER_NUM`` > 1, communication initialised in ``main``), else (0, 1)."""
    if backend != "ms" or int(os.environ.get("MS_WORKER_NUM", "1") or 1) <= 1:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank

    return get_rank(), get_group_size()


class Runner:
    def __init__(self, cfg, cli_keys, args):
        self.cfg, self.cli_keys, self.args = cfg, cli_keys, args
        self.backend = args.backend
        # under msrun every rank runs every sample (the model's tokens are split over the ranks: sequence
        # parallelism); rank 0 alone decodes and writes
        self.rank, self.ranks = job_rank_size(self.backend)
        self.pipe = None
        self.compile_seconds = None
        self.written = self.skipped = 0

    # ---- settings -------------------------------------------------------------------------------------------
    def settings(self):
        from opensora_dual.inference import InferenceInputError, get_num_frames
        from opensora_dual.pipelines.opensora import resolve_size

        cfg = self.cfg
        self.image_size = resolve_size(cfg.get("image_size"), cfg.get("resolution"), cfg.get("aspect_ratio"))
        self.num_frames = get_num_frames(cfg.get("num_frames"))
        self.loop = _int_key(cfg, "loop", 1)
        self.cfl = _int_key(cfg, "condition_frame_length", 1)
        self.seed = _int_key(cfg, "seed")
        self.fps = cfg.get("fps")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or self.fps <= 0:
            raise InferenceInputError(f"fps must be a positive number, got {self.fps!r}")
        save_fps = cfg.get("save_fps")
        self.save_fps = save_fps if save_fps is not None else self.fps // _int_key(cfg, "frame_interval", 1)
        self.recipe = recipe_from_config(cfg, self.cli_keys)
        if self.loop > 1:
            if not self.recipe.conditioning:
                raise InferenceInputError(f"loop > 1 needs Open-Sora 1.1 or 1.2; this is a {self.recipe.name} model "
                                          f"(text-to-video only)")
            if self.recipe.latent_chunks and self.cfl % 5:
                raise InferenceInputError(f"condition_frame_length must be a multiple of 5 latent frames (one "
                                          f"17-frame chunk), got {self.cfl}")
            frames = self.recipe.condition_pixel_frames(self.cfl)
            if self.num_frames <= frames:
                raise InferenceInputError(f"loop > 1 needs more than {frames} frames per clip "
                                          f"(condition_frame_length {self.cfl}), got num_frames {self.num_frames}")
        if self.recipe.multi_resolution and cfg.get("multi_resolution") not in ("STDiT2", "OpenSora"):
            raise InferenceInputError(f"multi_resolution must be STDiT2 for Open-Sora {self.recipe.name}, got "
                                      f"{cfg.get('multi_resolution')!r}")
        sched = dict(cfg.get("scheduler") or {})
        unknown = sorted(set(sched) - set(SCHEDULER_KEYS))
        if unknown:
            raise InferenceInputError(f"unknown scheduler key(s) {', '.join(unknown)}; "
                                      f"known: {', '.join(SCHEDULER_KEYS)}")
        try:
            kind, merged = self.recipe.scheduler_kwargs(sched)
        except ValueError as e:
            raise InferenceInputError(str(e)) from None
        self.scheduler = dict(merged, type=kind)   # what the pipeline builds (the recipe's defaults included)
        self.steps = _int_key(self.scheduler, "num_sampling_steps", 1)
        self.dtype = self.checked_dtype(cfg)
        self.stages = cfg.get("stages", 1)
        if self.stages not in (1, 3):
            raise InferenceInputError(f"stages must be 1 or 3, got {self.stages!r}")
        if self.ranks > 1 and self.stages != 1:
            raise InferenceInputError("--stages 3 runs in one process; sequence parallelism (msrun) needs --stages 1")
        self.check_noise(cfg)
        self.verbose = _int_key(cfg, "verbose", 0)
        self.cache = cfg.get("text_embeddings")
        if self.cache and not os.path.isdir(self.cache):
            raise InferenceInputError(f"text embeddings folder not found: {self.cache}")

    def guidance_text(self):
        return f"cfg {self.scheduler.get('cfg_scale')}"

    def checked_dtype(self, cfg):
        """The compute dtype; bf16 on the MindSpore backend only on Ascend (no bf16 matmul/softmax on CPU)."""
        from opensora_dual.inference import InferenceInputError

        dtype = cfg.get("dtype", "fp32")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise InferenceInputError(f"dtype must be fp32, fp16 or bf16, got {dtype!r}")
        if dtype == "bf16" and self.backend == "ms":
            from ms_impl.device import on_ascend

            if not on_ascend():
                raise InferenceInputError("--dtype bf16 needs Ascend: MindSpore has no bf16 matmul/softmax kernels "
                                          "on CPU; use --dtype fp32 or fp16 (or --backend pt)")
        return dtype

    @staticmethod
    def check_noise(cfg):
        from opensora_dual.inference import InferenceInputError

        if cfg.get("noise") not in ("numpy", "torch"):
            raise InferenceInputError(f"noise must be numpy or torch, got {cfg.get('noise')!r}")

    def call_kwargs(self):
        c = self.cfg
        return dict(image_size=self.image_size, num_frames=self.num_frames, fps=self.fps, loop=self.loop,
                    condition_frame_length=self.cfl, condition_frame_edit=float(c.get("condition_frame_edit") or 0.0),
                    align=c.get("align"), aes=c.get("aes"), flow=c.get("flow"), camera_motion=c.get("camera_motion"),
                    progress=self.verbose >= 2)

    # ---- outputs ---------------------------------------------------------------------------------------------
    def done(self, base):
        return not self.args.overwrite and os.path.exists(base + self.ext)

    def unit_done(self, unit):
        return all(self.done(b) for b in unit.bases)

    def save(self, unit, j, frames):
        from opensora_dual.inference import save_sample

        if self.rank != 0:
            return
        if self.done(unit.bases[j]):
            self.skipped += 1
            return
        path = save_sample(frames, self.save_fps, unit.bases[j])
        tmp = f"{unit.bases[j]}.txt.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(unit.prompts[j] + "\n")
        os.replace(tmp, unit.bases[j] + ".txt")
        self.written += 1
        if self.verbose >= 2:
            self.bar_write(f"saved {path}")

    def bar_write(self, text):
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)

    # ---- models ----------------------------------------------------------------------------------------------
    def pipeline_class(self):
        if self.backend == "ms":
            from ms_impl.pipelines.opensora import OpenSoraPipeline
        else:
            from pt_reference.pipelines.opensora import OpenSoraPipeline
        return OpenSoraPipeline

    def components(self, need_text):
        comp = resolve_components(self.cfg, self.cli_keys, need_text)
        if comp is None:  # the demo pipeline folder does not exist yet
            build_random_pipeline(self.pipeline_class(), self.cfg, self.backend, self.cfg["pipeline_folder"],
                                  self.seed)
            comp = resolve_components(self.cfg, self.cli_keys, need_text)
        return comp

    def load(self, with_text):
        if self.pipe is None:
            t0 = time.perf_counter()
            c = self.comp
            self.pipe = self.pipeline_class().from_pretrained(
                None, model=c["model"], vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                model_preset=c["model_preset"], vae_preset=c["vae_preset"], scheduler=self.scheduler,
                dtype=self.dtype, load_text_encoder=with_text, **self.model_build_kwargs())
            self.check_cache_shape()
            self.sequence_parallel()
            self.bar_write(f"loaded the {self.backend} pipeline ({'with' if with_text else 'without'} text encoder) "
                           f"in {time.perf_counter() - t0:.1f} s")
        return self.pipe

    def sequence_parallel(self):
        """Under msrun: the diffusion model(s) split their tokens over the job's ranks (STDiT3: spatial tokens of
        every frame; MMDiT: image tokens), upstream's automatic sequence parallelism when launched with > 1
        process."""
        if self.ranks <= 1:
            return
        from opensora_dual.inference import InferenceInputError

        nets = [self.pipe.model] + [getattr(self.pipe, "image_model", None)]
        for net in [n for n in nets if n is not None]:
            if not hasattr(net, "set_sequence_parallel"):
                raise InferenceInputError(f"{type(net).__name__} has no sequence parallelism (STDiT3 and the 2.0 "
                                          f"MMDiT have); run it in one process")
            net.set_sequence_parallel(self.ranks, self.rank)
        self.pipe.sp_layout = (self.ranks, self.rank)   # re-applied to models rebuilt after offloading
        self.bar_write(f"sequence parallelism over {self.ranks} ranks (this is rank {self.rank})")

    def model_build_kwargs(self):
        """The config's build arguments the recipe names (1.0: space_scale, time_scale) and the VAE micro batch."""
        model = self.cfg.get("model") or {}
        out = {k: model[k] for k in self.recipe.model_kwargs if model.get(k) is not None}
        mb = (self.cfg.get("vae") or {}).get("micro_batch_size")
        if self.recipe.vae == "video_kl" and mb:
            out["vae_micro_batch_size"] = int(mb)
        return out

    def noise_source(self):
        if self.cfg["noise"] == "torch":
            from pt_reference.schedulers.noise import TorchNoise

            return TorchNoise(self.seed)
        from opensora_dual.sampling.noise import NumpyNoise

        return NumpyNoise(self.seed)

    def pay_noise_debt(self):
        """Draw what skipped units would have drawn (per loop: the starting latent, then the sampler's draws,
        ``noise_draws``; the 1.1/1.2 pipelines always pass a conditioning mask), so the stream stays aligned."""
        if not self.debt:
            return
        shape = (self.pipe.latent_channels, *self.pipe.latent_size(self.num_frames, self.image_size))
        for b in self.debt:
            for _ in range(self.loop):
                self.noise.randn((b, *shape))
                for draw in self.pipe.scheduler.noise_draws(b, shape, has_mask=self.pipe.recipe.conditioning):
                    self.noise.randn(draw)
        self.debt = []

    def sample(self, unit, **extra):
        if self.noise is None:   # seeded here, after the models are built (building a torch model draws numbers)
            self.noise = self.noise_source()
        self.pay_noise_debt()
        if self.rank != 0:
            extra["output_type"] = "latent"   # rank 0 decodes and writes
        out = self.pipe(unit.prompts, reference_path=unit.refs, mask_strategy=unit.strategies, noise=self.noise,
                        **self.call_kwargs(), **extra)
        if self.compile_seconds is None and self.backend == "ms":
            self.compile_seconds = getattr(self.pipe.scheduler, "compile_seconds", None)
        return out

    # ---- text: cached features ---------------------------------------------------------------------------------
    def cache_files(self, unit):
        from opensora_dual.inference import InferenceInputError

        if unit.lines is not None:
            names = unit.lines
        elif self.cfg.get("prompt") is not None:
            names = unit.indices
        else:
            raise InferenceInputError("--text-embeddings: cannot match the prompt file's lines to cache files")
        files = [os.path.join(self.cache, f"{i:06d}.npz") for i in names]
        for f in files:
            if not os.path.isfile(f):
                raise InferenceInputError(f"text embedding not found: {f} (run scripts/infer_t5.py on the prompts "
                                          f"first)")
        return files

    def cached_embeds(self, unit):
        import numpy as np

        from opensora_dual.inference import InferenceInputError

        embs, masks = [], []
        for f in self.cache_files(unit):
            try:
                with np.load(f) as d:
                    embs.append(np.asarray(d["text_emb"], np.float32))
                    masks.append(np.asarray(d["mask"]).astype(np.int64))
            except (OSError, ValueError, KeyError) as e:
                raise InferenceInputError(f"cannot read text embedding {f}: {one_line(e)}") from None
            if embs[-1].ndim != 2 or masks[-1].shape != embs[-1].shape[:1]:
                raise InferenceInputError(f"text embedding {f}: expected text_emb [L, D] and mask [L], got "
                                          f"{embs[-1].shape} and {masks[-1].shape}")
        if len({e.shape for e in embs}) != 1:
            raise InferenceInputError(f"text embeddings of one batch differ in shape: {[e.shape for e in embs]}")
        return np.stack(embs), np.stack(masks)

    def check_cache_shape(self):
        if not self.cache:
            return
        from opensora_dual.inference import InferenceInputError

        want = tuple(int(v) for v in self.pipe.model.y_embedder.y_embedding.shape)
        for unit in self.todo:
            emb, _ = self.cached_embeds(unit)
            if tuple(emb.shape[1:]) != want:
                raise InferenceInputError(f"text embeddings {self.cache_files(unit)[0]} are {tuple(emb.shape[1:])}, "
                                          f"the diffusion model takes [L, D] = {list(want)}")

    # ---- text: stage 1 -----------------------------------------------------------------------------------------
    def loop_texts(self, unit):
        """The captions the text encoder sees for each loop: the pipeline's own processing."""
        from opensora_dual.inference import extract_json_from_prompts, extract_prompts_loop
        from opensora_dual.pipelines.opensora import process_prompts

        n = len(unit.prompts)
        texts, _, _ = extract_json_from_prompts(list(unit.prompts), [""] * n, [""] * n)
        c = self.cfg
        processed = process_prompts(texts, aes=c.get("aes"), flow=c.get("flow"), camera_motion=c.get("camera_motion"))
        return [extract_prompts_loop(processed, i) for i in range(self.loop)]

    def text_file(self, text):
        c = self.comp
        key = json.dumps([os.path.abspath(c["text_encoder"]), os.path.abspath(c["tokenizer"]), self.max_length,
                          self.dtype, self.backend, text])
        return os.path.join(self.cfg["save_dir"], ".text", hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")

    def stage_text(self, units):
        import numpy as np
        from tqdm import tqdm

        self.max_length = model_max_length(self.comp)
        texts = {}
        for unit in units:
            for per_loop in self.loop_texts(unit):
                texts.update(dict.fromkeys(per_loop))
        missing = [t for t in texts if not os.path.isfile(self.text_file(t))]
        if not missing:
            return
        t0 = time.perf_counter()
        c = self.comp
        embedder = self.pipeline_class().load_text_embedder(c["text_encoder"], c["tokenizer"], self.max_length,
                                                            self.dtype)
        self.bar_write(f"stage 1/3: text encoder loaded in {time.perf_counter() - t0:.1f} s")
        bs = _int_key(self.cfg, "batch_size", 1)
        with tqdm(total=len(missing), desc="text", unit="prompt", disable=self.verbose < 1) as bar:
            for i in range(0, len(missing), bs):
                batch = missing[i:i + bs]
                out = embedder.encode(batch)
                for j, t in enumerate(batch):
                    _npz_save(self.text_file(t), text_emb=np.asarray(out["text_emb"][j], np.float32),
                              mask=np.asarray(out["mask"][j], np.uint8))
                bar.update(len(batch))
        del embedder
        gc.collect()

    def encode_from_files(self, prompts):
        import numpy as np

        from opensora_dual.inference import InferenceInputError

        embs, masks = [], []
        for t in prompts:
            f = self.text_file(t)
            if not os.path.isfile(f):  # stage 1 and the pipeline disagree about the captions: a bug, said clearly
                raise InferenceInputError(f"stage 2: no stage-1 text features for caption {t!r}")
            with np.load(f) as d:
                embs.append(d["text_emb"])
                masks.append(d["mask"])
        return np.stack(embs)[:, None].astype(np.float32), np.stack(masks).astype(np.int64)

    # ---- latents: stage 2 / 3 ------------------------------------------------------------------------------------
    def latent_file(self, base):
        save_dir = self.cfg["save_dir"]
        rel = os.path.relpath(base, save_dir)
        return os.path.join(save_dir, ".latents", rel + ".npz")

    def signature(self, unit):
        c = self.cfg
        return json.dumps(dict(pos=unit.pos, k=unit.k, prompts=unit.prompts, refs=unit.refs, ms=unit.strategies,
                               bs=c.get("batch_size"), seed=self.seed, noise=c.get("noise"), backend=self.backend,
                               dtype=self.dtype, size=list(self.image_size), frames=self.num_frames, fps=self.fps,
                               loop=self.loop, cfl=self.cfl, cfe=c.get("condition_frame_edit"), align=c.get("align"),
                               aes=c.get("aes"), flow=c.get("flow"), cm=c.get("camera_motion"),
                               sched=self.scheduler, comp={k: v and os.path.abspath(v) for k, v in self.comp.items()
                                                           if k in ("model", "vae", "text_encoder")},
                               cache=self.cache and os.path.abspath(self.cache)), sort_keys=True, default=str)

    def latents_ready(self, unit):
        import numpy as np

        sig = self.signature(unit)
        for base in unit.bases:
            f = self.latent_file(base)
            if not os.path.isfile(f):
                return False
            try:
                with np.load(f) as d:
                    if str(d["signature"]) != sig:
                        return False
            except (OSError, ValueError, KeyError):
                return False
        return True

    # ---- drivers -------------------------------------------------------------------------------------------------
    def run(self):
        self.settings()
        units, self.ext = plan(self.cfg, self.num_frames, self.loop)
        self.todo = [u for u in units if not self.unit_done(u)]
        n_samples = sum(len(u.prompts) for u in units)
        h, w = self.image_size
        print(f"{n_samples} sample(s), {sum(len(u.prompts) for u in self.todo)} to make: {h}x{w}, "
              f"{self.num_frames} frames x {self.loop} loop(s), {self.scheduler['type']} {self.steps} steps, "
              f"{self.guidance_text()}, Open-Sora {self.recipe.name}, "
              f"seed {self.seed}, noise {self.cfg['noise']}, backend {self.backend} {self.dtype}, "
              f"{self.stages} stage(s) -> {self.cfg['save_dir']}", flush=True)
        self.noise, self.debt = None, []
        if self.todo:
            self.comp = self.components(need_text=not self.cache)
            self.precheck_masks()
            if self.cache:
                for unit in self.todo:
                    self.cache_files(unit)   # every needed file exists, before any model work
                c = self.cfg
                if any(c.get(k) is not None for k in ("aes", "flow", "camera_motion")):
                    print("note: cached text features are used as they are: the aes/flow/camera_motion suffixes are "
                          "not added (embed captions that carry them, or pass --aes null)", flush=True)
            if self.stages == 1:
                self.run_one_stage(units)
            else:
                self.run_three_stages(units)
        else:
            self.skipped = n_samples
        return units

    def precheck_masks(self):
        """Mask-strategy groups that point outside the video or at a missing reference fail before any model is
        loaded (the v1.2 VAE: 5 latent frames per 17-frame chunk, ceil(r / 4) for a remainder r). The pipeline
        checks everything again (also the reference's own length) when it runs."""
        from opensora_dual.families.vae_pipeline import latent_frames
        from opensora_dual.inference import InferenceInputError, collect_reference_paths, parse_mask_strategy

        mfs = self.vae_micro_frame_size()
        if not mfs:
            return
        T = latent_frames(self.num_frames, mfs)
        for unit in self.todo:
            for idx, ref, strategy in zip(unit.indices, unit.refs, unit.strategies):
                n_refs = len(collect_reference_paths(ref))
                for group in parse_mask_strategy(strategy):
                    loop_id, ref_id, target_start = group[0], group[1], group[3]
                    if not 0 <= loop_id < self.loop:
                        continue
                    where = f"prompt {idx}, mask strategy group {','.join(str(v) for v in group)} (in {strategy!r})"
                    n = n_refs + loop_id       # each later loop adds the previous clip as a reference
                    if not -n <= ref_id < n:
                        raise InferenceInputError(f"{where}: reference {ref_id} does not exist, the sample has {n}")
                    t = target_start + T if target_start < 0 else target_start
                    if not 0 <= t < T:
                        raise InferenceInputError(f"{where}: target_start is outside the video's {T} latent frames")

    def vae_micro_frame_size(self):
        path, preset = self.comp["vae"], self.comp.get("vae_preset")
        try:
            if preset:
                from opensora_dual import registry

                return registry.resolve(preset)[1].get("micro_frame_size")
            with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
                return json.load(f).get("micro_frame_size", 17)
        except (OSError, ValueError, KeyError):
            return None   # no cheap answer: the pipeline's own check runs later

    def run_one_stage(self, units):
        from tqdm import tqdm

        todo = set(id(u) for u in self.todo)
        with tqdm(total=sum(len(u.prompts) for u in units), desc="samples", unit="sample",
                  disable=self.verbose < 1) as bar:
            for unit in units:
                if id(unit) not in todo:
                    self.debt.append(len(unit.prompts))
                    self.skipped += len(unit.prompts)
                    bar.update(len(unit.prompts))
                    continue
                self.load(with_text=not self.cache)
                embeds = self.cached_embeds(unit) if self.cache else None
                out = self.sample(unit, prompt_embeds=embeds)
                if self.verbose >= 2:
                    for p in out.prompts:
                        self.bar_write(f"prompt: {p}")
                for j, frames in enumerate(out.videos):
                    self.save(unit, j, frames)
                bar.update(len(unit.prompts))

    def run_three_stages(self, units):
        import numpy as np
        from tqdm import tqdm

        todo = set(id(u) for u in self.todo)
        need_latents = [u for u in self.todo if not self.latents_ready(u)]
        # == stage 1: text features of every caption (then the text encoder is gone) ==
        if not self.cache and need_latents:
            self.stage_text(need_latents)
        # == stage 2: denoise every prompt, keep the latents (then the diffusion model is gone) ==
        need = set(id(u) for u in need_latents)
        with tqdm(total=len(need_latents), desc="denoise", unit="batch", disable=self.verbose < 1) as bar:
            for unit in units:
                if id(unit) not in need:
                    self.debt.append(len(unit.prompts))
                    continue
                pipe = self.load(with_text=False)
                if not self.cache:
                    pipe.encode_text = self.encode_from_files
                embeds = self.cached_embeds(unit) if self.cache else None
                out = self.sample(unit, prompt_embeds=embeds, output_type="latent")
                sig = np.array(self.signature(unit))
                for j, base in enumerate(unit.bases):
                    extra = {"clips": np.stack([c[j] for c in out.clips])} if out.clips else {}
                    _npz_save(self.latent_file(base), latent=np.asarray(out.latents[j], np.float32), signature=sig,
                              **extra)
                bar.update(1)
        if self.pipe is not None:
            self.pipe.free("model")
        self.remove_files(os.path.join(self.cfg["save_dir"], ".text"))  # every latent exists: texts are done
        # == stage 3: decode and save ==
        with tqdm(total=sum(len(u.prompts) for u in units), desc="decode", unit="sample",
                  disable=self.verbose < 1) as bar:
            for unit in units:
                if id(unit) not in todo:
                    self.skipped += len(unit.prompts)
                    bar.update(len(unit.prompts))
                    continue
                pipe = self.load(with_text=False)
                if pipe.model is not None:
                    pipe.free("model")
                data = []
                for base in unit.bases:
                    with np.load(self.latent_file(base)) as d:
                        data.append((d["latent"], d["clips"] if "clips" in d else None))
                z = np.stack([d[0] for d in data])
                clips = [] if data[0][1] is None else [np.stack([d[1][i] for d in data])
                                                         for i in range(data[0][1].shape[0])]
                clips.append(pipe.decode_latents(z, self.num_frames))
                for j, frames in enumerate(pipe.join_clips(clips, pipe.recipe.condition_pixel_frames(self.cfl))):
                    self.save(unit, j, frames)
                for base in unit.bases:
                    os.remove(self.latent_file(base))
                bar.update(len(unit.prompts))
        self.remove_files(os.path.join(self.cfg["save_dir"], ".latents"), only_empty=True)

    @staticmethod
    def remove_files(folder, only_empty=False):
        """Drop the stage files of a finished run (``.text/*.npz``; then the folders if empty)."""
        if not os.path.isdir(folder):
            return
        for root, dirs, files in os.walk(folder, topdown=False):
            if not only_empty:
                for f in files:
                    if f.endswith(".npz"):
                        os.remove(os.path.join(root, f))
            try:
                os.rmdir(root)
            except OSError:
                pass


class RunnerV2(Runner):
    """Open-Sora 2.0 (``main:scripts/diffusion/inference.py``): the config's upstream keys (``sampling_option``,
    ``cond_type``, ``ref``, ``motion_score``, ``fps_save``, ``ae``, ``t5``, ``clip``) onto the 2.0 pipeline
    (``opensora_dual.pipelines.opensora_v2``); outputs, resuming and the noise stream as for 1.x."""

    def settings(self):
        from opensora_dual.inference import InferenceInputError
        from opensora_dual.inference.aspect import check_num_frames_v2
        from opensora_dual.pipelines.opensora_v2 import resolve_size_v2
        from opensora_dual.sampling.flow_matching import COND_TYPES

        cfg = self.cfg
        so = dict(cfg.get("sampling_option") or {})
        # upstream's parse_alias: top-level keys win over sampling_option (--resolution, --num-frames, ...)
        for key in ("resolution", "aspect_ratio", "num_frames", "num_steps", "guidance", "guidance_img"):
            if cfg.get(key) is not None:
                so[key] = cfg[key]
        sched = dict(cfg.get("scheduler") or {})   # this script's generic spellings
        if sched.get("num_sampling_steps") is not None:
            so["num_steps"] = sched["num_sampling_steps"]
        if sched.get("cfg_scale") is not None:
            so["guidance"] = sched["cfg_scale"]
        if cfg.get("image_size") is not None:
            size = cfg["image_size"]
        elif so.get("height") is not None and so.get("width") is not None:
            size = (so["height"], so["width"])
        else:
            size = None
        self.image_size = resolve_size_v2(size, so.get("resolution"), so.get("aspect_ratio"))
        self.aspect_ratio = so.get("aspect_ratio") if size is None else None
        self.num_frames = check_num_frames_v2(so.get("num_frames", 129))
        if so.get("method", "i2v") != "i2v":
            raise InferenceInputError(f"sampling_option.method {so.get('method')!r}: the video model samples with "
                                      f"i2v; the distilled Flux image step runs with use_t2i2v: true")
        if int(so.get("temporal_reduction", 4)) != 4:
            raise InferenceInputError("the Open-Sora 2.0 VAEs (HunyuanVideo VAE, video DC-AE) reduce time by 4")
        self.cond_type = str(cfg.get("cond_type") or "t2v")
        # t2i2v (plugins/t2i2v.py): the Flux image model makes the first frame at img_resolution
        self.t2i2v = bool(cfg.get("use_t2i2v", False))
        self.img_resolution = str(cfg.get("img_resolution") or "768px")
        self.offload = bool(cfg.get("offload_model", False))
        if self.t2i2v:
            from opensora_dual.pipelines.opensora_v2 import t2i_image_size

            t2i_image_size(self.img_resolution, self.aspect_ratio, self.image_size)   # bad names fail here
            if self.cond_type != "t2v":
                raise InferenceInputError(f"use_t2i2v makes the first frame itself (i2v_head); cond_type "
                                          f"{self.cond_type!r} cannot be combined with it")
        if self.cond_type not in COND_TYPES:
            raise InferenceInputError(f"unknown cond_type {self.cond_type!r}; one of {', '.join(COND_TYPES)}")
        if cfg.get("ref") is not None:
            cfg["reference_path"] = cfg["ref"]
        if cfg.get("mask_strategy"):
            raise InferenceInputError("Open-Sora 2.0 has no mask strategies: use --cond-type and --ref")
        fps_save = cfg.get("fps_save", 16)   # upstream's default when the config has none
        if isinstance(fps_save, bool) or not isinstance(fps_save, int) or fps_save <= 0:
            raise InferenceInputError(f"fps_save must be a positive integer, got {fps_save!r}")
        self.fps = self.save_fps = fps_save
        self.motion_score = None if cfg.get("motion_score") is None else str(cfg["motion_score"])
        self.loop, self.cfl = 1, 1
        seed = so.get("seed") if so.get("seed") is not None else cfg.get("seed")
        cfg["seed"] = seed
        self.seed = _int_key(cfg, "seed")
        self.recipe = recipe_from_config(cfg, self.cli_keys)
        steps = so.get("num_steps", 50)
        self.scheduler = dict(type="flow-matching", num_sampling_steps=steps,
                              **{k: so[k] for k in ("guidance", "guidance_img", "text_osci", "image_osci",
                                                    "scale_temporal_osci", "shift", "flow_shift", "is_causal_vae")
                                 if k in so})
        self.steps = _int_key(self.scheduler, "num_sampling_steps", 1)
        self.dtype = self.checked_dtype(cfg)
        self.stages = cfg.get("stages", 1)
        if self.stages != 1:
            raise InferenceInputError("--stages 3 is for Open-Sora 1.x; 2.0 runs in one stage")
        self.check_noise(cfg)
        self.verbose = _int_key(cfg, "verbose", 0)
        self.cache = None
        if cfg.get("text_embeddings"):
            raise InferenceInputError("--text-embeddings (cached T5 features) is for Open-Sora 1.x")

    def guidance_text(self):
        s = self.scheduler
        cond = f"t2i2v (Flux image at {self.img_resolution})" if self.t2i2v else self.cond_type
        return (f"guidance {s.get('guidance', 7.5)} / image {s.get('guidance_img', 3.0)}, cond {cond}, "
                f"fps {self.fps}, motion score {self.motion_score}")

    def call_kwargs(self):
        kw = dict(image_size=self.image_size, num_frames=self.num_frames, fps=self.fps,
                  motion_score=self.motion_score, cond_type=self.cond_type, progress=self.verbose >= 2)
        if self.t2i2v:
            kw.update(t2i2v=True, image_resolution=self.img_resolution, aspect_ratio=self.aspect_ratio,
                      offload=self.offload)
        return kw

    def pipeline_class(self):
        if self.backend == "ms":
            from ms_impl.pipelines.opensora_v2 import OpenSoraV2Pipeline
        else:
            from pt_reference.pipelines.opensora_v2 import OpenSoraV2Pipeline
        return OpenSoraV2Pipeline

    def precheck_masks(self):
        pass

    def section(self, ours, upstream):
        """The VAE / T5 weights: our section when given on the command line (--vae-path, --text-encoder-path),
        else upstream's (``ae``, ``t5``)."""
        if any(k.startswith(ours + ".") for k in self.cli_keys):
            return ours, self.cfg.get(ours) or {}
        return upstream, self.cfg.get(upstream) or {}

    def components(self, need_text=True):
        from opensora_dual.inference import InferenceInputError

        cfg = self.cfg
        folder = cfg.get("pipeline_folder")
        if folder and cfg.get("build_random_pipeline") and not os.path.isdir(os.path.join(folder, "model")):
            raise InferenceInputError("build_random_pipeline is for the 1.x demo; write a 2.0 folder with "
                                      "pt_reference.pipelines.opensora_v2.write_random_pipeline")
        if folder and not os.path.isdir(folder):
            raise InferenceInputError(f"pipeline folder not found: {folder}")
        out = {}
        parts = [("model", ("model", "model"), "diffusion model"), ("vae", ("vae", "ae"), "VAE"),
                 ("text_encoder", ("text_encoder", "t5"), "T5 text encoder"),
                 ("clip", ("clip", "clip"), "CLIP text encoder")]
        if self.t2i2v:
            parts += [("image_model", ("image_model", "img_flux"), "Flux image model (img_flux)"),
                      ("image_vae", ("image_vae", "img_flux_ae"), "Flux autoencoder (img_flux_ae)")]
        for name, (ours, upstream), what in parts:
            key, section = self.section(ours, upstream)
            explicit = f"{key}.from_pretrained" in self.cli_keys
            if folder and not explicit:
                p = os.path.join(folder, name)
                path = p if os.path.exists(p) else None
            else:
                path = resolve_weights(section.get("from_pretrained"), what)
            if path is None:
                raise InferenceInputError(f"no {what} weights: pass --pipeline-folder or --{key}.from_pretrained")
            out[name] = path
            if name in ("model", "vae", "image_model", "image_vae"):
                preset = section.get("type")
                bare = os.path.isfile(path)
                if bare and not _is_preset(preset):
                    raise InferenceInputError(f"{what}: {preset!r} is not a registered preset (needed for the bare "
                                              f"weights file {path})")
                out[f"{name}_preset"] = preset if bare else None
            if name in ("text_encoder", "clip"):
                tok = section.get("tokenizer") or path
                if not os.path.isdir(tok):
                    raise InferenceInputError(f"no {what} tokenizer folder: {tok}")
                out[f"{name}_tokenizer"] = tok
        return out

    def load(self, with_text=True):
        if self.pipe is None:
            t0 = time.perf_counter()
            c = self.comp
            image = {}
            if self.t2i2v:
                image = dict(image_model=c["image_model"], image_vae=c["image_vae"],
                             image_model_preset=c["image_model_preset"], image_vae_preset=c["image_vae_preset"],
                             lazy=("image_model", "image_vae") if self.offload else ())
            self.pipe = self.pipeline_class().from_pretrained(
                None, model=c["model"], vae=c["vae"], text_encoder=c["text_encoder"], clip=c["clip"],
                tokenizer=c["text_encoder_tokenizer"], clip_tokenizer=c["clip_tokenizer"],
                model_preset=c["model_preset"], vae_preset=c["vae_preset"], scheduler=self.scheduler,
                dtype=self.dtype, **image)
            self.sequence_parallel()
            self.bar_write(f"loaded the {self.backend} Open-Sora 2.0 pipeline in {time.perf_counter() - t0:.1f} s")
        return self.pipe

    def pay_noise_debt(self):
        """2.0 draws only the starting latent per batch (t2i2v: also the image's, from its own stream)."""
        if not self.debt:
            return
        shape = (self.pipe.latent_channels, *self.pipe.latent_size(self.num_frames, self.image_size))
        for b in self.debt:
            self.noise.randn((b, *shape))
        if self.t2i2v:
            from opensora_dual.pipelines.opensora_v2 import t2i_image_size

            ip = self.pipe.image_pipeline(self.steps)
            ishape = (ip.latent_channels, *ip.latent_size(1, t2i_image_size(self.img_resolution, self.aspect_ratio,
                                                                             self.image_size)))
            for b in self.debt:
                self.image_noise.randn((b, *ishape))
        self.debt = []

    def sample(self, unit, **extra):
        if self.noise is None:
            self.noise = self.noise_source()
            # upstream seeds the image step's generator with the video's seed: its own stream, same seed
            self.image_noise = self.noise_source() if self.t2i2v else None
        self.pay_noise_debt()
        if self.t2i2v:
            # upstream: <save_dir>/<sub_dir>/generated_condition/<name>.png, the i2v_head reference
            extra.update(image_noise=self.image_noise, condition_paths=[
                os.path.join(os.path.dirname(b), "generated_condition", os.path.basename(b)) for b in unit.bases])
        if self.rank != 0:
            extra["output_type"] = "latent"   # rank 0 decodes and writes
        return self.pipe(unit.prompts, reference_path=unit.refs, noise=self.noise, **self.call_kwargs(), **extra)


def main(argv=None):
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.backend == "ms":
        import mindspore as ms  # before anything that may import decord (shared/mindspore_cpu_notes.md, section 5)

        ms.set_context(mode=ms.PYNATIVE_MODE)   # the sampler compiles its denoiser step with ms.jit itself
        if int(os.environ.get("MS_WORKER_NUM", "1") or 1) > 1:   # launched by msrun: sequence parallelism
            from mindspore.communication import init

            init()
    from converters.errors import ConversionError
    from opensora_dual.inference import InferenceInputError

    t0 = time.perf_counter()
    try:
        cfg, cli_keys = effective_config(args, extras)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), end="")
            return 0
        runner = (RunnerV2 if recipe_from_config(cfg, cli_keys).name == "v2.0" else Runner)(cfg, cli_keys, args)
        runner.run()
    except (UserError, ConfigError, InferenceInputError, ConversionError) as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (finished outputs are kept; run again to resume)", file=sys.stderr)
        return 130
    where = os.path.abspath(cfg["save_dir"])
    if runner.rank != 0:
        print(f"rank {runner.rank} done (rank 0 writes the outputs)")
        return 0
    print(f"done: {runner.written} written, {runner.skipped} skipped (already there) -> {where} "
          f"[{time.perf_counter() - t0:.1f} s]")
    if runner.compile_seconds is not None:
        print(f"MindSpore graph compile: {runner.compile_seconds:.1f} s (first denoising step, compile included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
