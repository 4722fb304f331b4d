"""Open-Sora training with the MindSpore port (2.0 also with the PyTorch reference: ``--backend pt``): 2.0 (MMDiT,
flow matching; upstream ``main:scripts/diffusion/train.py``, on cached / synthetic latents + T5 / CLIP features), 1.2 (STDiT3, rectified flow; upstream ``v1.2.0:scripts/train.py``),
1.1 (STDiT2, IDDPM, buckets + frame masks; ``v1.1.0``) and 1.0 (STDiT, IDDPM, one fixed size; ``v1.0.0``).

    python scripts/train.py --config configs/opensora/train/demo-small.yaml            # 1.0, tiny, synthetic data
    python scripts/train.py --config configs/opensora-v1-1/train/demo-small.yaml       # 1.1, tiny, synthetic data

    python scripts/train.py --config configs/opensora-v1-2/train/demo-small.yaml          # tiny, synthetic data
    python scripts/train.py --config configs/opensora-v2-0/train/demo-small.yaml [--backend pt]   # 2.0, tiny
    python scripts/train.py --config configs/opensora-v1-2/train/stage1.yaml --dtype fp32 \\
        --dataset.data_path meta.csv --model.from_pretrained PixArt-Sigma-XL-2-2K-MS.pth --model.init_from pixart \\
        --vae.from_pretrained OpenSora-VAE-v1.2/ --text_encoder.from_pretrained t5-v1_1-xxl/
    python scripts/train.py --config ... --text-embeddings data/t5_emb --latents data/latents   # cached features
    python scripts/train.py --config ... --resume                 # = --resume auto: the run's last checkpoint
    msrun --worker_num=2 --local_worker_num=2 --master_port=8129 --join=True scripts/train.py --config ... \\
        --use_parallel True                                        # data parallel, one process per rank

The family comes from ``model.type`` (a preset: STDiT-*, STDiT2-*, STDiT3-*; or the config.json of
``model.from_pretrained``), the objective from ``scheduler.type`` (``rflow`` | ``iddpm``; upstream: 1.0/1.1 iddpm,
1.2 rflow). 1.0/1.1 encode with the 2D ``VideoAutoencoderKL`` (sd-vae-ft-ema) frame by frame (``vae.type``
VideoAutoencoderKL or a 2D preset such as AutoencoderKL-S); 1.0 trains at one size (upstream's top-level keys
``num_frames``, ``image_size``, ``frame_interval``, ``batch_size``; dataset type VideoTextDataset) and its STDiT
is built for that latent size; 1.1/1.2 use ``bucket_config`` and ``mask_ratios``.

Settings come from a YAML config (upstream's keys, ``configs/opensora-v1-2/train/stage{1,2,3}.yaml``,
``configs/opensora-v1-1/train/stage1.yaml``, ``configs/opensora/train/16x256x256.yaml``; ``_base_:
other.yaml`` inherits). EVERY key can be overridden on the command line, with dashes or underscores, nested keys
with a dot: ``--lr 1e-4``, ``--model.from_pretrained X``, ``--bucket_config '{"144p": {"1": [1.0, 4]}}'``
(JSON); ``null`` means None. ``--print-config`` prints the effective settings and exits.

Data: the dataset table (``dataset.data_path``, csv/parquet, ``VariableVideoTextDataset``) and the bucket sampler
(``bucket_config``, batch sizes per rank). Videos are encoded by the VAE (``vae.from_pretrained``, release folder /
converted file) and captions by T5 (``text_encoder.from_pretrained`` + ``text_encoder.tokenizer``) while training,
or read from caches: ``--text-embeddings DIR`` (``scripts/infer_t5.py``: ``text_emb`` [L, D], ``mask`` [L]) and
``--latents DIR`` (``scripts/infer_vae.py``: ``latent_mean``/``latent_std`` [T', C, h, w], ``fps``), looked up
by the table's ``path`` as those scripts name them. A missing or unreadable cache file, video or image is counted,
logged and skipped. A cached latent larger than the bucket's latent size is cropped (random start in time,
centred in space), a smaller one is skipped.

Initial weights (``model.from_pretrained``): none (random), an STDiT3 release folder or any file the converters
read, or, with ``model.init_from: pixart``, a PixArt-alpha/Sigma checkpoint mapped onto STDiT3 by the converter
(keys PixArt lacks -- temporal blocks, fps embedder, q/k norms -- keep their fresh initialisation).

Outputs in ``<outputs>/<run_name>/`` (run_name defaults to the config file's name): ``log.jsonl`` (one record per
step: loss, lr, grad norm, step time, samples/s, skipped samples; events), ``loss.png`` (refreshed at every
checkpoint), ``config.yaml`` and the checkpoints ``epoch{E}-global_step{S}/`` every ``ckpt_every`` steps and at
the end, written atomically (a half-written one is a hidden temporary that ``--resume`` ignores); the last
``keep_last`` are kept. A checkpoint holds ``config.json`` + ``model.ckpt`` (the trained weights, an STDiT3 folder
``scripts/sample.py --model-path`` and ``python -m converters convert`` read), ``ema/`` (the EMA weights, same
layout: what upstream samples with), ``optimizer.ckpt`` (AdamW moments), ``state.json`` (step, epoch, sampler
position, random states, loss scale, the config). ``--resume [auto|PATH]`` continues exactly: the same seed gives
the same loss curve as an uninterrupted run, bit for bit in fp32.

``--dtype fp32|fp16`` (fp16: mixed precision with dynamic loss scaling; bf16 needs Ascend). ``--use_parallel True``
under msrun: data parallel, each rank takes its share of the bucket sampler's batches, gradients averaged over the
ranks (AllReduce) before the optimizer. A NaN/Inf loss stops the run (exit 3) naming the step; the checkpoints
already written stay as they are. Bad input: one line on stderr, exit 2.
"""
import functools
import json
import math
import os
import re
import shutil
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from opensora_dual.config import (ConfigError, deep_merge, load_config, parse_values,  # noqa: E402  (framework-free)
                                   resolve_weights as _resolve_weights, split_options)

PROG = "train.py"
# Test hooks (environment): sleep inside the checkpoint write of one step ("STEP:SECONDS"), so a test can kill the
# process while a checkpoint is half written; make the latents of one step NaN ("STEP").
HOOK_CKPT_SLEEP = "OPENSORA_DUAL_TRAIN_TEST_CKPT_SLEEP"
HOOK_NAN_STEP = "OPENSORA_DUAL_TRAIN_TEST_NAN_STEP"
HOOK_DUMP_GRADS = "OPENSORA_DUAL_TRAIN_TEST_DUMP_GRADS"   # "PREFIX": rank 0 saves each step's gradients (npz)
CKPT_RE = re.compile(r"^epoch(\d+)-global_step(\d+)$")
EXIT_USER, EXIT_DIVERGED = 2, 3

# Every key the script reads, with its default; the config file and the command line override them.
DEFAULTS = dict(
    dataset=dict(type="VariableVideoTextDataset", data_path=None, transform_name="resize_crop", frame_interval=1,
                 synthetic=None),
    bucket_config=None,
    num_frames=None, image_size=None, frame_interval=None, batch_size=None, data_path=None,   # 1.0's dataset keys
    grad_checkpoint=False, sp_size=1,
    num_workers=0, num_bucket_build_workers=1, plugin=None, wandb=False,   # upstream keys, not used here
    dtype="fp32",
    model=dict(type="STDiT3-XL/2", from_pretrained=None, init_from=None),
    vae=dict(type="OpenSoraVAE_V1_2", from_pretrained=None),
    text_encoder=dict(type="t5", from_pretrained=None, tokenizer=None, model_max_length=None, jit=True),
    scheduler=dict(type="rflow"),
    mask_ratios=None,
    seed=42, outputs="outputs", run_name=None,
    epochs=1000, max_steps=None, log_every=10, ckpt_every=200, keep_last=3,
    load=None, resume=None,
    lr=1e-4, warmup_steps=0, grad_clip=1.0, ema_decay=0.99, adam_eps=1e-15, adam_betas=[0.9, 0.999],
    weight_decay=0.0, grad_accum=1, loss_scale=None, drop_last=False,
    text_embeddings=None, latents=None,
    use_parallel=False, parallel_optimizer=False,
    jit=True, jit_update=None,
    build_random_components=False,
    # Open-Sora 2.0 (model family mmdit; upstream configs/diffusion/train/*.py keys). The data are cached features:
    # --latents DIR (latent_mean/latent_std [T', C, h, w]) and --text-embeddings DIR (text_emb [L, D] = T5, y_vec
    # [D'] = CLIP pooled; null.npz = the encodings of ""), or dataset.synthetic (written into the run folder).
    backend="ms", dropout_ratio=None, condition_config=None, sigma_min=None, guidance=None, is_causal_vae=None,
    grad_ckpt_settings=None, t5=None, clip=None, ae=None,
)
SECTIONS = ("dataset", "model", "vae", "text_encoder", "scheduler")   # open sections: constructor kwargs
# scheduler defaults per objective (rflow: v1.2's; iddpm: upstream's train configs, the unrespaced schedule)
RFLOW_DEFAULTS = dict(use_timestep_transform=True, sample_method="logit-normal", loc=0.0, scale=1.0,
                      num_timesteps=1000, use_discrete_timesteps=False, transform_scale=1.0)
IDDPM_DEFAULTS = dict(timestep_respacing="")
# the Open-Sora release each model family belongs to (the IDDPM schedule's version: v1.0 float64 tables)
FAMILY_RELEASE = {"stdit": "v1.0", "stdit2": "v1.1", "stdit3": "v1.2", "mmdit": "v2.0"}
FM_CONFIG_KEYS = ("dropout_ratio", "condition_config", "sigma_min", "guidance", "is_causal_vae")   # 2.0 top-level
VAE2D_TYPES = ("VideoAutoencoderKL",)     # upstream's 1.0/1.1 vae.type; the 2D presets are accepted too
# section keys the script consumes itself (the rest of model/vae go to the constructor)
MODEL_OWN = ("type", "from_pretrained", "init_from")
VAE_OWN = ("type", "from_pretrained", "micro_batch_size", "conv_impl", "local_files_only", "cache_dir")
IGNORED_NOTES = {
    "num_workers": "samples are read in the training process",
    "num_bucket_build_workers": "buckets are assigned in the training process",
    "plugin": "ColossalAI's zero2; here data parallel over msrun ranks (--use_parallel True)",
    "sp_size": "no sequence parallelism in training here",
    "wandb": "logs go to the console and log.jsonl",
}


class UserError(Exception):
    """Bad input: one line on stderr, exit 2."""


class Diverged(Exception):
    """The loss went NaN/Inf: the message is printed, exit 3."""


def one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------
def parse_cli(argv):
    """-> (config path, [(dotted key, value)], print_config). ``--key value``, ``--key=value``, ``--key v1 v2``
    (a list); a key without a value is True (``--resume`` alone is "auto")."""
    config, pairs, show = None, [], False
    if any(tok in ("-h", "--help") for tok in argv):
        print(__doc__)
        raise SystemExit(0)
    for name, values in split_options(argv):
        key = ".".join(part.replace("-", "_") for part in name.split("."))
        if key == "config":
            if len(values) != 1:
                raise UserError("--config needs one path")
            config = values[0]
            continue
        if key == "print_config":
            show = True
            continue
        if not values:
            value = "auto" if key == "resume" else True
        else:
            value = parse_values(values)
        pairs.append((key, value))
    return config, pairs, show


def effective_config(argv):
    """Defaults < config file < command line. -> (cfg, dotted keys given on the command line, print_config)."""
    config_path, pairs, show = parse_cli(argv)
    file_cfg = load_config(config_path) if config_path else {}
    cfg = deep_merge(DEFAULTS, file_cfg)
    cli = set()
    for key, value in pairs:
        parts = key.split(".")
        if parts[0] not in cfg and parts[0] not in DEFAULTS:
            raise UserError(f"unknown option --{key} (not a key of the config or of this script; see --help)")
        if len(parts) > 1 and parts[0] not in SECTIONS and not isinstance(cfg.get(parts[0]), dict):
            raise UserError(f"cannot set --{key}: {parts[0]!r} is not a section")
        node = cfg
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        cli.add(key)
    if cfg.get("run_name") is None:
        cfg["run_name"] = os.path.splitext(os.path.basename(config_path))[0] if config_path else "train"
    if cfg.get("resume") is None and cfg.get("load"):
        cfg["resume"] = cfg["load"]              # upstream's key for "continue from this checkpoint"
    cfg["_config_path"] = os.path.abspath(config_path) if config_path else None
    return cfg, cli, show


def _int(cfg, key, minimum=None, allow_none=False):
    v = cfg.get(key)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{key} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise UserError(f"{key} must be >= {minimum}, got {v}")
    return v


def _float(cfg, key, minimum=None):
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise UserError(f"{key} must be a number, got {v!r}")
    if minimum is not None and v < minimum:
        raise UserError(f"{key} must be >= {minimum}, got {v}")
    return float(v)


def _bool(cfg, key):
    v = cfg.get(key)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.strip().lower() in ("1", "true", "yes", "on")
    if v in (0, 1):
        return bool(v)
    raise UserError(f"{key} must be true or false, got {v!r}")


def resolve_weights(path, what):
    """``opensora_dual.config.resolve_weights`` with this script's error type."""
    try:
        return _resolve_weights(path, what)
    except ConfigError as e:
        raise UserError(str(e)) from None


# ---------------------------------------------------------------------------------------------------------------
# files: atomic writes, log, checkpoints
# ---------------------------------------------------------------------------------------------------------------
def write_json_atomic(path, obj):
    from converters.atomic import atomic_file

    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)


def read_log(path):
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        pass          # a line cut by a kill
    return records


def truncate_log(path, step):
    """Keep the records up to ``step`` (a resumed run recomputes the steps after its checkpoint)."""
    from converters.atomic import atomic_file

    records = [r for r in read_log(path) if int(r.get("step", 0)) <= step]
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return records


def plot_loss(log_path, png_path):
    """Loss per step (and a moving average) as a PNG, written atomically (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from converters.atomic import atomic_file

    recs = [r for r in read_log(log_path) if "loss" in r and "event" not in r]
    if not recs:
        return None
    steps = np.array([r["step"] for r in recs])
    loss = np.array([r["loss"] for r in recs], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    k = max(1, min(50, len(loss) // 10))
    if k > 1:
        ma = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], ma, lw=1.6, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss (step {int(steps[-1])})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png_path


def list_checkpoints(run_dir):
    """Complete checkpoints of a run, oldest first: [(step, path)]. Hidden temporaries (a write that was
    interrupted) and folders without state.json are not checkpoints."""
    out = []
    if not os.path.isdir(run_dir):
        return out
    for name in os.listdir(run_dir):
        m = CKPT_RE.match(name)
        path = os.path.join(run_dir, name)
        if m and os.path.isfile(os.path.join(path, "state.json")):
            out.append((int(m.group(2)), path))
    return sorted(out)


def find_resume(resume, run_dir):
    """``auto``: the run's last complete checkpoint (None when there is none); a checkpoint folder; a run folder
    (its last checkpoint)."""
    if resume in (None, False):
        return None
    if resume is True or str(resume).lower() == "auto":
        found = list_checkpoints(run_dir)
        return found[-1][1] if found else None
    path = os.path.abspath(os.path.expanduser(str(resume)))
    if os.path.isfile(os.path.join(path, "state.json")):
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1][1]
    raise UserError(f"--resume {resume}: not a checkpoint folder (no state.json) nor a run folder with checkpoints")


def remove_stale(run_dir):
    """Delete the hidden temporaries interrupted checkpoint writes left behind."""
    if not os.path.isdir(run_dir):
        return []
    gone = []
    for name in os.listdir(run_dir):
        if name.startswith(".epoch") and (name.endswith(".tmp") or name.endswith(".old") or ".deleting" in name):
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
            gone.append(name)
    return gone


def prune_checkpoints(run_dir, keep):
    """Keep the newest ``keep`` checkpoints: older ones are renamed to a hidden name first (atomic), then deleted,
    so an interrupted deletion never leaves a folder that looks complete."""
    removed = []
    if not keep:
        return removed
    for step, path in list_checkpoints(run_dir)[:-keep]:
        doomed = os.path.join(run_dir, f".{os.path.basename(path)}.deleting")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(path)
    return removed


def _crc(arrays):
    c = 0
    for a in arrays:
        c = zlib.crc32(memoryview(a.tobytes()), c)
    return c


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------
def cache_name(path):
    """Name of a caption / latent cache file of a table row: the ``path`` with the suffix .npz (leading "/"
    dropped), as ``scripts/infer_t5.py`` (``opensora_dual.text.embed_cache.read_captions``) and
    ``scripts/infer_vae.py`` (``output_path`` without ``--video-folder``) write them."""
    return os.path.splitext(str(path).lstrip(os.sep))[0] + ".npz"


class VAEGeometry:
    """Latent size of a pixel size, from the VAE's config alone (no weights): upstream's rule for the 1.2
    pipeline (``opensora_dual.families.vae_pipeline``); for the 1.0/1.1 2D AutoencoderKL (a diffusers config with
    ``block_out_channels``) every frame is its own latent frame and the spatial factor is 2**(levels - 1)."""

    def __init__(self, kwargs):
        from opensora_dual.families.vae_pipeline import spatial_factor

        if "block_out_channels" in kwargs:     # 2D AutoencoderKL, frame by frame (VideoAutoencoderKL)
            self.f = 2 ** (len(kwargs["block_out_channels"]) - 1)
            self.tdown, self.micro = 1, None
            self.channels = int(kwargs.get("latent_channels", 4))
            return
        self.f = spatial_factor(kwargs)
        tdown = (kwargs.get("vae_temporal") or {}).get("temporal_downsample", (False, True, True))
        self.tdown = 2 ** sum(bool(t) for t in tdown)
        self.micro = kwargs.get("micro_frame_size")
        self.channels = int((kwargs.get("vae_temporal") or {}).get("embed_dim", 4))

    def latent_size(self, T, H, W):
        from opensora_dual.families.vae_pipeline import latent_frames

        if self.micro is None:
            t = -(-T // self.tdown)
        else:
            t = latent_frames(T, self.micro, self.tdown)
        return t, H // self.f, W // self.f


class FlowMatchingGeometry:
    """Open-Sora 2.0's latent size (the HunyuanVAE: causal 4x in time, 8x in space): T -> (T - 1)//4 + 1."""

    def __init__(self, channels):
        self.channels = channels

    def latent_size(self, T, H, W):
        return (T - 1) // 4 + 1, H // 8, W // 8


class FixedSize:
    """The one "bucket" of Open-Sora 1.0's ``VideoTextDataset``: every video at (num_frames, H, W) =
    (``num_frames``, ``image_size``), one batch size. Rows too short for num_frames x frame_interval frames (and
    images, unless num_frames is 1) are left out, as upstream's temporal crop could not serve them."""

    num_bucket = 1

    def __init__(self, num_frames, height, width, batch_size):
        self.thw, self.batch_size = (int(num_frames), int(height), int(width)), int(batch_size)

    def get_bucket_id(self, T, H, W, frame_interval=1, seed=None):
        n = self.thw[0]
        fits = T == 1 if n == 1 else T >= (n - 1) * frame_interval + 1
        return ("fixed", n, 0) if fits else None

    def get_batch_size(self, bucket_id):
        return self.batch_size

    def get_thw(self, bucket_id):
        return self.thw


def fixed_size_sampler(dataset, num_frames, height, width, batch_size, **kwargs):
    """``VariableVideoBatchSampler`` (its shuffling, replica split and resume state) over the single
    ``FixedSize`` bucket of 1.0."""
    from opensora_dual.data import VariableVideoBatchSampler

    sampler = VariableVideoBatchSampler(dataset, {"144p": {1: (1.0, 1)}}, **kwargs)
    sampler.bucket = FixedSize(num_frames, height, width, batch_size)
    return sampler


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg, cli):
        self.cfg, self.cli = cfg, cli
        self.notes = []
        self.backend = str(cfg.get("backend") or "ms")   # settings() checks it

    # ---- output -------------------------------------------------------------------------------------------------
    def say(self, text, all_ranks=False):
        if self.rank == 0 or all_ranks:
            prefix = f"[rank {self.rank}] " if all_ranks and self.world > 1 else ""
            print(prefix + text, flush=True)

    def log(self, record):
        if self.rank != 0:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    # ---- settings -----------------------------------------------------------------------------------------------
    def settings(self):
        cfg = self.cfg
        self.seed = _int(cfg, "seed", 0)
        self.lr = _float(cfg, "lr", 0.0)
        self.warmup = _int(cfg, "warmup_steps", 0)
        self.grad_clip = _float(cfg, "grad_clip", 0.0) if cfg.get("grad_clip") is not None else 0.0
        self.ema_decay = None if cfg.get("ema_decay") is None else _float(cfg, "ema_decay", 0.0)
        self.eps = _float(cfg, "adam_eps", 0.0)
        betas = cfg.get("adam_betas")
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise UserError(f"adam_betas must be [beta1, beta2], got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = _float(cfg, "weight_decay", 0.0)
        self.grad_accum = _int(cfg, "grad_accum", 1)
        self.epochs = _int(cfg, "epochs", 1)
        self.max_steps = _int(cfg, "max_steps", 0, allow_none=True)
        self.log_every = _int(cfg, "log_every", 1)
        self.ckpt_every = _int(cfg, "ckpt_every", 0)
        self.keep_last = _int(cfg, "keep_last", 0)
        self.jit = _bool(cfg, "jit")
        self.jit_update = self.jit if cfg.get("jit_update") is None else _bool(cfg, "jit_update")
        self.dtype = cfg.get("dtype")
        if self.dtype not in ("fp32", "fp16", "bf16"):
            raise UserError(f"dtype must be fp32, fp16 or bf16, got {self.dtype!r}")
        if self.dtype == "bf16":
            from ms_impl.device import on_ascend

            if not on_ascend():
                raise UserError("--dtype bf16 needs Ascend: MindSpore has no bf16 matmul/softmax kernels on CPU; "
                                "use --dtype fp32 or --dtype fp16 (mixed precision with loss scaling)")
        self.backend = str(cfg.get("backend") or "ms")
        self.family = self.model_family()
        self.release = FAMILY_RELEASE.get(self.family, "v1.2")
        if self.backend not in ("ms", "pt"):
            raise UserError(f"backend must be ms or pt, got {self.backend!r}")
        if self.backend == "pt" and (self.family != "mmdit" or self.use_parallel or self.dtype != "fp32"):
            raise UserError("--backend pt (the PyTorch reference) trains Open-Sora 2.0 (mmdit) only, fp32, one process")
        self.objective_settings(dict(cfg.get("scheduler") or {}))
        self.mask_ratios = cfg.get("mask_ratios")
        if self.family == "mmdit" and self.mask_ratios is not None:
            raise UserError("mask_ratios: Open-Sora 2.0 (mmdit) conditions by condition_config, not frame masks")
        if self.mask_ratios is not None:
            from opensora_dual.training import FrameMaskGenerator

            if self.family == "stdit":
                raise UserError("mask_ratios: STDiT (Open-Sora 1.0) takes no frame mask (x_mask); remove mask_ratios")
            try:
                FrameMaskGenerator(self.mask_ratios)
            except ValueError as e:
                raise UserError(f"mask_ratios: {e}") from None
        self.fixed_size = None
        if self.family == "stdit":   # 1.0: one size (STDiT's position tables are built for it)
            if cfg.get("bucket_config") is not None:
                raise UserError("STDiT (Open-Sora 1.0) trains at one size: set num_frames, image_size and "
                                "batch_size instead of bucket_config")
            size = cfg.get("image_size")
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise UserError(f"image_size must be [height, width] for STDiT (Open-Sora 1.0), got {size!r}")
            self.fixed_size = (_int(cfg, "num_frames", 1), int(size[0]), int(size[1]), _int(cfg, "batch_size", 1))
        elif cfg.get("bucket_config") is None:
            raise UserError("bucket_config is required (resolution -> {num_frames: [keep_prob, batch_size]})")
        unknown = sorted(k for k in cfg if k not in DEFAULTS and not k.startswith("_"))
        if unknown:
            self.notes.append(f"unknown config key(s) {', '.join(unknown)} (not used)")
        for key, why in IGNORED_NOTES.items():
            if key in self.cli or (cfg.get(key) not in (None, False, 0, 1) and key != "plugin"):
                self.notes.append(f"{key} is not used ({why})")
        if _bool(cfg, "parallel_optimizer"):
            self.check_parallel_optimizer()
        self.run_dir = os.path.abspath(os.path.join(str(cfg["outputs"]), str(cfg["run_name"])))
        self.log_path = os.path.join(self.run_dir, "log.jsonl")

    @functools.cached_property
    def family(self):
        """The model family; ``settings`` sets it, ``build_model`` alone (tests) computes it on first use."""
        return self.model_family()

    def model_family(self):
        """The model family (stdit, stdit2, stdit3): from the config.json of ``model.from_pretrained`` when it is a
        release folder, else from the ``model.type`` preset."""
        from opensora_dual import registry

        sec = self.cfg.get("model") or {}
        if sec.get("from_pretrained") and sec.get("init_from") is None:
            path = resolve_weights(sec["from_pretrained"], "diffusion model")
            cj = os.path.join(path, "config.json") if os.path.isdir(path) else None
            if cj and os.path.isfile(cj):
                from converters.families import family_from_config

                with open(cj, encoding="utf-8") as f:
                    return family_from_config(json.load(f)).name
        preset = sec.get("type")
        if preset not in registry.preset_names() or registry.resolve(preset)[0].name not in FAMILY_RELEASE:
            raise UserError(f"model.type {preset!r} is not a registered STDiT / STDiT2 / STDiT3 preset (known: "
                            f"{', '.join(n for n in registry.preset_names() if n.startswith('STDiT'))})")
        return registry.resolve(preset)[0].name

    def objective_settings(self, sched):
        """``scheduler.type`` rflow (its sampling keys -> ``self.noise_kw``) or iddpm (the unrespaced IDDPM's
        training keys -> ``self.objective_kwargs``; version v1.0 for STDiT, v1.1 otherwise)."""
        from opensora_dual.training import IDDPM_TRAIN_KEYS, objective_settings

        if self.family == "mmdit":   # Open-Sora 2.0: flow matching, its settings are top-level keys (upstream)
            from opensora_dual.training import flow_matching_settings

            kind = str(sched.pop("type", "flow_matching")).lower()
            if kind not in ("flow_matching", "rflow") or sched:   # rflow: the DEFAULTS' scheduler.type
                raise UserError(f"Open-Sora 2.0 (mmdit) trains with flow matching (set dropout_ratio, "
                                f"condition_config, sigma_min, guidance at the top level), got scheduler {kind} {sched}")
            kw = {k: self.cfg[k] for k in FM_CONFIG_KEYS if self.cfg.get(k) is not None}
            try:
                self.objective_kwargs = flow_matching_settings(kw)
            except ValueError as e:
                raise UserError(f"flow matching: {e}") from None
            self.objective, self.noise_kw = "flow_matching", {}
            return
        kind = str(sched.pop("type", "rflow")).lower()
        if kind == "rflow":
            unknown = sorted(set(sched) - set(RFLOW_DEFAULTS))
            if unknown:
                raise UserError(f"unknown scheduler key(s) {', '.join(unknown)} for rflow; known: "
                                f"{', '.join(RFLOW_DEFAULTS)}")
            sc = {**RFLOW_DEFAULTS, **sched}
            self.objective, self.objective_kwargs = "rflow", None
            self.noise_kw = dict(sample_method=sc["sample_method"], loc=float(sc["loc"]), scale=float(sc["scale"]),
                                 num_timesteps=int(sc["num_timesteps"]),
                                 use_discrete_timesteps=_bool(sc, "use_discrete_timesteps"),
                                 use_timestep_transform=_bool(sc, "use_timestep_transform"),
                                 transform_scale=float(sc["transform_scale"]))
            return
        if kind != "iddpm":
            raise UserError(f"scheduler.type must be rflow or iddpm, got {kind!r}")
        unknown = sorted(set(sched) - set(IDDPM_TRAIN_KEYS))
        if unknown:
            raise UserError(f"unknown scheduler key(s) {', '.join(unknown)} for iddpm; known: "
                            f"{', '.join(IDDPM_TRAIN_KEYS)}")
        kw = {**IDDPM_DEFAULTS, **sched}
        kw.setdefault("version", "v1.0" if self.family == "stdit" else "v1.1")
        try:
            self.objective_kwargs = objective_settings("iddpm", kw)
        except ValueError as e:
            raise UserError(f"scheduler: {e}") from None
        self.objective = "iddpm"
        self.noise_kw = dict(num_timesteps=int(kw.get("diffusion_steps", 1000)))

    def check_parallel_optimizer(self):
        """MindSpore's optimizer sharding (``enable_parallel_optimizer``) works on Ascend only, and only for its own
        ``nn.AdamWeightDecay``/``Lamb``/``AdaFactor``; this port's update is torch's AdamW written out
        (``ms_impl.training.AdamWUpdate``), which it does not shard. Try it, report what MindSpore says."""
        import mindspore as ms
        from mindspore import nn

        if not self.use_parallel:
            raise UserError("parallel_optimizer needs --use_parallel True (msrun)")
        try:
            ms.set_auto_parallel_context(enable_parallel_optimizer=True)
            nn.AdamWeightDecay([ms.Parameter(ms.Tensor([1.0, 2.0]), name="probe")], learning_rate=1e-3)
        except Exception as e:
            raise UserError(f"parallel_optimizer: MindSpore refuses it here: {one_line(e)}") from None
        finally:
            ms.set_auto_parallel_context(enable_parallel_optimizer=False)
        raise UserError("parallel_optimizer: MindSpore shards only nn.AdamWeightDecay/Lamb/AdaFactor states; this "
                        "port's optimizer is torch's AdamW (bias-corrected, ms_impl.training.AdamWUpdate), which it "
                        "would not shard: not supported")

    # ---- distributed ----------------------------------------------------------------------------------------------
    def setup_parallel(self):
        import mindspore as ms

        self.use_parallel = _bool(self.cfg, "use_parallel")
        if not self.use_parallel:
            if os.environ.get("MS_ROLE") == "MS_WORKER" and int(os.environ.get("MS_WORKER_NUM", "1")) > 1:
                raise UserError(f"started by msrun with {os.environ['MS_WORKER_NUM']} workers but without "
                                f"--use_parallel True: every worker would train alone into the same folder")
            self.rank, self.world = 0, 1
            return
        from mindspore.communication import get_group_size, get_rank, init

        try:
            init()
        except Exception as e:
            raise UserError(f"use_parallel: mindspore.communication.init() failed (launch with msrun "
                            f"--worker_num=N ...): {one_line(e)}") from None
        self.rank, self.world = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=self.world)
        from mindspore import ops

        self._allreduce = ops.AllReduce()

    def allreduce_sum(self, values):
        """Sum of a small vector of integers < 2**24 / world over the ranks (MindSpore's CPU AllReduce: SUM only,
        float32/float16 only), as int64."""
        import mindspore as ms
        import numpy as np

        arr = np.asarray(values, dtype=np.float32)
        if self.world > 1:
            arr = self._allreduce(ms.Tensor(arr)).asnumpy()
        return np.rint(arr).astype(np.int64)

    def barrier(self):
        self.allreduce_sum([1])

    def sync_from_rank0(self, net):
        """Give every rank rank 0's parameters: AllReduce(SUM) of the parameter on rank 0 and zeros elsewhere."""
        import mindspore as ms
        import numpy as np
        from mindspore import ops

        if self.world == 1:
            return
        for p in net.get_parameters():
            a = p.asnumpy()
            if not np.issubdtype(a.dtype, np.floating):
                continue
            mine = a if self.rank == 0 else np.zeros_like(a)
            ops.assign(p, self._allreduce(ms.Tensor(mine)))

    def replicas_in_sync(self):
        """All ranks hold the same weights: the CRC32 of every parameter, as 4 bytes b, with sum(b) = world * b and
        sum(b^2) = world * b^2 over the ranks (equality iff every rank has b)."""
        c = _crc([p.asnumpy() for p in self.model.get_parameters()])
        b = [(c >> (8 * k)) & 0xFF for k in range(4)]
        s = self.allreduce_sum(b + [v * v for v in b])
        return all(int(s[k]) == self.world * b[k] and int(s[4 + k]) == self.world * b[k] ** 2 for k in range(4))

    # ---- models ---------------------------------------------------------------------------------------------------
    def build_random_components(self):
        """The demo: a random VAE and a random T5 with a toy tokenizer, written once as release folders under the
        run, so that every run (resumed, other ranks, sampling) reads the same weights."""
        cfg = self.cfg
        comp = os.path.join(self.run_dir, "components")
        vdir, tdir = os.path.join(comp, "vae"), os.path.join(comp, "text_encoder")
        need_vae = cfg["vae"].get("from_pretrained") is None
        need_t5 = cfg["text_encoder"].get("from_pretrained") is None
        if self.rank == 0 and ((need_vae and not os.path.isdir(vdir)) or (need_t5 and not os.path.isdir(tdir))):
            import mindspore as ms

            import converters
            from opensora_dual import registry
            from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder

            self.say(f"building random components (VAE {cfg['vae'].get('type')}, text encoder "
                     f"{cfg['text_encoder'].get('type')}) in {comp}")
            if need_vae and not os.path.isdir(vdir):
                ms.set_seed(self.seed)
                fam, kw = registry.resolve(self.vae_preset())
                kw.update(self.vae_kwargs())
                vae = fam.model_class("ms")(**kw)
                converters.save_release_folder(vae, "ms", vdir, kw, preset=self.vae_preset())
            if need_t5 and not os.path.isdir(tdir):
                import tempfile

                ms.set_seed(self.seed + 1)
                name = cfg["text_encoder"]["type"]
                fam, kw = registry.resolve(name)
                net = fam.model_class("ms")(**kw)
                with tempfile.TemporaryDirectory(dir=comp) as tmp:
                    tok = build_t5_tokenizer_folder(os.path.join(tmp, "tok"), vocab_size=int(kw.get("vocab_size",
                                                                                                   512)))
                    stage = os.path.join(tmp, "t5")
                    converters.save_release_folder(net, "ms", stage, kw, preset=name)
                    shutil.copy(os.path.join(tok, "spiece.model"), os.path.join(stage, "spiece.model"))
                    os.replace(stage, tdir)
        self.barrier()
        if need_vae:
            cfg["vae"]["from_pretrained"] = vdir
        if need_t5:
            cfg["text_encoder"]["from_pretrained"] = tdir

    def vae_preset(self):
        """The registered VAE preset of ``vae.type``: upstream's 1.0/1.1 ``VideoAutoencoderKL`` is the 2D
        sd-vae-ft-ema frame by frame; a 2D preset (AutoencoderKL-S) or a 1.2 pipeline preset is itself."""
        t = (self.cfg.get("vae") or {}).get("type")
        return "sd-vae-ft-ema" if t in VAE2D_TYPES else t

    def vae_is_2d(self):
        from opensora_dual import registry

        t = self.vae_preset()
        return t in registry.preset_names() and registry.resolve(t)[0].name == "vae2d"

    def vae_kwargs(self):
        return {k: v for k, v in (self.cfg.get("vae") or {}).items() if k not in VAE_OWN}

    def model_kwargs(self):
        kw = {k: v for k, v in (self.cfg.get("model") or {}).items() if k not in MODEL_OWN}
        for k in ("patch_size", "input_size"):
            if isinstance(kw.get(k), list):
                kw[k] = tuple(kw[k])
        return kw

    def build_model(self):
        """STDiT3 from the preset + section kwargs, weights from ``model.from_pretrained`` (release folder, converted
        file, or a PixArt checkpoint with ``init_from: pixart``). Sets ``self.model_kwargs_full``."""
        import converters
        from converters.api import _own_config
        from opensora_dual import registry

        sec = self.cfg.get("model") or {}
        preset = sec.get("type")
        path = resolve_weights(sec.get("from_pretrained"), "diffusion model")
        init_from = sec.get("init_from")
        if init_from not in (None, "pixart"):
            raise UserError(f"model.init_from must be null or pixart, got {init_from!r}")
        overrides = self.model_kwargs()
        if self.family == "mmdit" and self.cfg.get("grad_ckpt_settings") is not None:
            overrides.setdefault("grad_ckpt_settings", tuple(self.cfg["grad_ckpt_settings"]))
        ckpt = None
        fam = registry.get_family(self.family)
        if getattr(self, "fixed_size", None) is not None:   # 1.0: STDiT built for the latent of (num_frames, image_size)
            T, H, W, _ = self.fixed_size
            overrides["input_size"] = tuple(int(v) for v in self.vae_geometry().latent_size(T, H, W))
        if path is not None and init_from is None:
            ckpt = converters.read_checkpoint(path)
            cfg_json = ckpt.config if ckpt.config is not None else _own_config(ckpt)
        else:
            cfg_json = None
        if cfg_json is not None:
            kwargs = fam.config_from_json(cfg_json)
        else:
            if preset not in registry.preset_names() or registry.resolve(preset)[0].name != self.family:
                raise UserError(f"model.type {preset!r} is not a registered {self.family} preset")
            kwargs = registry.resolve(preset)[1]
        kwargs.update(overrides)
        self.model_kwargs_full = kwargs
        if self.backend == "pt":
            import torch

            torch.manual_seed(self.seed)
        try:
            model = fam.model_class(self.backend)(**kwargs)
        except TypeError as e:
            raise UserError(f"cannot build {fam.name} from {kwargs}: {e}") from None
        if ckpt is not None:
            try:
                converters.load_state_into(model, ckpt, self.backend, strict=True, family=fam)
            finally:
                ckpt.close()
            self.init_note = f"weights from {path}"
        elif path is not None:   # PixArt: converted once per run (rank 0), then loaded non-strictly
            out = os.path.join(self.run_dir, "init", "pixart_init.safetensors")
            if self.rank == 0 and not os.path.exists(out):
                self.say(f"mapping the PixArt checkpoint {path} onto {fam.name} ({out})")
                rep = converters.convert(path, out, model=preset, overrides=overrides, init_from="pixart",
                                         progress=False)
                self.say(f"  {rep.tensors} tensors from PixArt, {len(rep.initialised_fresh)} initialised fresh, "
                         f"{len(rep.ignored)} ignored")
            self.barrier()
            with converters.read_checkpoint(out) as ck:
                lr = converters.load_state_into(model, ck, "ms", strict=False, family=fam)
            if lr.misshaped or lr.unexpected:
                raise UserError(f"PixArt init does not fit the model: {lr.misshaped[:3] + lr.unexpected[:3]}")
            self.init_note = f"PixArt init from {path} ({lr.loaded} tensors; {len(lr.missing)} fresh)"
        else:
            self.init_note = "random initialisation"
        return model

    def build_vae(self):
        import converters
        from opensora_dual import registry

        sec = self.cfg.get("vae") or {}
        preset = self.vae_preset()
        path = resolve_weights(sec.get("from_pretrained"), "VAE")
        if path is None:
            if preset not in registry.preset_names():
                raise UserError(f"vae.type {sec.get('type')!r} is not a registered preset and vae.from_pretrained "
                                f"is not set")
            fam, kw = registry.resolve(preset)
            kw.update(self.vae_kwargs())
            vae = fam.model_class("ms")(**kw)
            self.notes.append(f"the VAE ({preset}) has random weights (vae.from_pretrained is null)")
        else:
            extra = {"model": preset} if os.path.isfile(path) else {}
            vae = converters.from_pretrained(None, path, "ms", **extra)
        want = "AutoencoderKL" if self.release in ("v1.0", "v1.1") else "VideoAutoencoderPipeline"
        if type(vae).__name__ != want:
            raise UserError(f"Open-Sora {self.release} trains with a {want} VAE "
                            f"({'sd-vae-ft-ema, frame by frame' if want == 'AutoencoderKL' else 'OpenSora-VAE-v1.2'}),"
                            f" got {type(vae).__name__}")
        if want == "AutoencoderKL":   # upstream's VideoAutoencoderKL: the 2D VAE frame by frame, x0.18215
            from ms_impl.models.vae.vae import VideoAutoencoderKL

            mb = sec.get("micro_batch_size")
            vae = VideoAutoencoderKL.from_module(vae, None if mb is None else int(mb))
        elif sec.get("micro_batch_size") is not None:
            vae.spatial_vae.micro_batch_size = int(sec["micro_batch_size"])
        if sec.get("conv_impl") is not None and hasattr(vae, "set_conv_impl"):   # "native" (default) / matmul forms
            from ms_impl.layers.basic import CONV_IMPLS

            if sec["conv_impl"] not in CONV_IMPLS + ("default",):
                raise UserError(f"vae.conv_impl must be one of {', '.join(CONV_IMPLS + ('default',))}, got "
                                f"{sec['conv_impl']!r}")
            vae.set_conv_impl(sec["conv_impl"])
        vae.set_train(False)
        for p in vae.get_parameters():
            p.requires_grad = False
        if self.dtype == "fp16":
            import mindspore as ms
            from ms_impl.layers import set_compute_dtype

            set_compute_dtype(vae, ms.float16)
        return vae

    def vae_geometry(self):
        from converters.families import family_from_config
        from opensora_dual import registry

        sec = self.cfg.get("vae") or {}
        try:
            path = resolve_weights(sec.get("from_pretrained"), "VAE") if sec.get("from_pretrained") else None
        except UserError:   # cached latents need only the geometry: the preset's will do
            if self.vae_preset() not in registry.preset_names():
                raise
            self.notes.append(f"vae.from_pretrained {sec['from_pretrained']} not found: latent sizes from the "
                              f"{self.vae_preset()} preset")
            path = None
        if path is not None and os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json")) as f:
                cj = json.load(f)
            kw = cj if "block_out_channels" in cj else family_from_config(cj).config_from_json(cj)
        else:
            if self.vae_preset() not in registry.preset_names():
                raise UserError(f"vae.type {sec.get('type')!r} is not a registered preset (needed for the latent "
                                f"sizes)")
            kw = registry.resolve(self.vae_preset())[1]
            kw.update({k: v for k, v in self.vae_kwargs().items() if k in ("vae_2d", "vae_temporal",
                                                                            "micro_frame_size", "block_out_channels",
                                                                            "latent_channels")})
        return VAEGeometry(kw)

    def build_text(self):
        from ms_impl.models.text_encoder import runtime
        from opensora_dual import registry
        from opensora_dual.text.embedder import RELEASES
        from opensora_dual.text.tokenization import load_tokenizer

        sec = self.cfg.get("text_encoder") or {}
        path = resolve_weights(sec.get("from_pretrained"), "text encoder")
        if path is None:
            name = sec.get("type")
            if name not in registry.preset_names():
                raise UserError("text_encoder.from_pretrained is not set (a T5 folder), or use --text-embeddings")
            net = runtime.load_text_encoder(model=name)
            self.notes.append(f"the text encoder ({name}) has random weights")
        else:
            net = runtime.load_text_encoder(weights=path, dtype="fp16" if self.dtype == "fp16" else "fp32")
        tok = sec.get("tokenizer") or path
        if tok is None or not os.path.isdir(tok):
            raise UserError(f"no T5 tokenizer folder (text_encoder.tokenizer, or the text encoder folder): {tok}")
        for p in net.get_parameters():
            p.requires_grad = False
        return runtime.make_text_embedder(net, load_tokenizer(tok), self.text_len, clean=RELEASES[self.release]["clean"],
                                          mask_to_model=True, jit=_bool(sec, "jit") if "jit" in sec else self.jit)

    # ---- data -----------------------------------------------------------------------------------------------------
    def build_data(self):
        from opensora_dual.data import Bucket, VariableVideoBatchSampler, VariableVideoTextDataset

        ds_cfg = dict(self.cfg.get("dataset") or {})
        allowed = ("VariableVideoTextDataset", "VideoTextDataset") if self.fixed_size else ("VariableVideoTextDataset",)
        if ds_cfg.get("type", "VariableVideoTextDataset") not in allowed:
            raise UserError(f"dataset.type must be {' or '.join(allowed)}, got {ds_cfg.get('type')!r}")
        for key in ("data_path", "frame_interval"):   # 1.0's top-level keys
            if self.cfg.get(key) is not None:
                ds_cfg[key] = self.cfg[key]
        path = ds_cfg.get("data_path")
        if path is None and ds_cfg.get("synthetic") is not None:
            path = self.make_synthetic(ds_cfg["synthetic"])
            if self.family == "mmdit":
                self.make_synthetic_features(path)
        if path is None:
            raise UserError("dataset.data_path is required (the dataset csv/parquet)")
        self.dataset = VariableVideoTextDataset(path, transform_name=ds_cfg.get("transform_name", "resize_crop"),
                                                frame_interval=int(ds_cfg.get("frame_interval", 1)), seed=self.seed)
        if self.fixed_size is not None:
            T, H, W, bs = self.fixed_size
            self.bucket, self.max_bs = None, bs
            self.sampler = fixed_size_sampler(self.dataset, T, H, W, bs, num_replicas=self.world, rank=self.rank,
                                              shuffle=True, seed=self.seed, drop_last=_bool(self.cfg, "drop_last"))
        else:
            self.bucket = Bucket(self.cfg["bucket_config"])
            self.max_bs = max(bs for frames in self.bucket.bucket_bs.values() for bs in frames.values() if bs)
            self.sampler = VariableVideoBatchSampler(self.dataset, self.bucket, num_replicas=self.world,
                                                     rank=self.rank, shuffle=True, seed=self.seed,
                                                     drop_last=_bool(self.cfg, "drop_last"))
        if self.sampler.num_batches() == 0:
            raise UserError(f"no row of {path} fits a bucket of bucket_config (a video needs more frames than its "
                            f"bucket's num_frames, and at least 0.8x the pixels of the resolution): nothing to train on")
        self.text_cache = self.cfg.get("text_embeddings")
        self.latent_cache = self.cfg.get("latents")
        if self.family == "mmdit" and (self.text_cache is None or self.latent_cache is None):
            raise UserError("Open-Sora 2.0 (mmdit) trains on cached features here: pass --latents DIR and "
                            "--text-embeddings DIR (T5 text_emb + CLIP y_vec per sample, null.npz), or use "
                            "dataset.synthetic")
        for key in ("text_cache", "latent_cache"):
            d = getattr(self, key)
            if d is not None and not os.path.isdir(d):
                raise UserError(f"{'--text-embeddings' if key == 'text_cache' else '--latents'} folder not found: {d}")

    def make_synthetic(self, spec):
        from opensora_dual.data import make_synthetic_dataset

        folder = os.path.join(self.run_dir, "data")
        csv_path = os.path.join(folder, "synthetic.csv")
        if self.rank == 0 and not os.path.exists(csv_path):
            kw = dict(spec) if isinstance(spec, dict) else {}
            for k in ("sizes",):
                if k in kw:
                    kw[k] = [tuple(s) for s in kw[k]]
            self.say(f"writing a synthetic dataset in {folder}")
            make_synthetic_dataset(folder, seed=self.seed, **kw)
        self.barrier()
        return csv_path

    def make_synthetic_features(self, csv_path):
        """2.0's demo features, written once under the run (rank 0) in the cache formats: a latent per video =
        the video average-pooled to the latent grid (causal 4 x 8 x 8, the HunyuanVAE's), its C channels cycling
        RGB + grey, x2 (~unit scale, something to learn); T5 / CLIP features drawn from a generator seeded by the
        caption (same caption, same features); null.npz = the features of "" (3 T5 tokens, padded in training)."""
        import numpy as np

        from opensora_dual.data import read_table
        from opensora_dual.inference.references import decode_video_rgb

        folder = os.path.join(self.run_dir, "data")
        lat_dir, txt_dir = os.path.join(folder, "latents"), os.path.join(folder, "text")
        sec = self.cfg.get("model") or {}
        from opensora_dual import registry

        kw = {**registry.resolve(sec.get("type"))[1], **self.model_kwargs()}
        C = int(kw["in_channels"]) // int(kw.get("patch_size", 2)) ** 2
        L, D, Dv = self.fm_text_len(), int(kw["context_in_dim"]), int(kw["vec_in_dim"])
        if self.rank == 0 and not os.path.exists(os.path.join(txt_dir, "null.npz")):
            for row in read_table(csv_path):
                frames, fps = decode_video_rgb(row["path"])
                x = frames.astype(np.float32) / 127.5 - 1.0                    # [T, H, W, 3]
                T, H, W, _ = x.shape
                t = (T - 1) // 4 + 1
                x = np.concatenate([x[:1]] * 4 + [x[1:], np.repeat(x[-1:], 4 * t - T, 0)])[:4 * t] if T > 1 else \
                    np.repeat(x, 4, 0)
                x = x.reshape(t, 4, H // 8, 8, W // 8, 8, 3).mean(axis=(1, 3, 5))
                x = np.concatenate([x, x.mean(-1, keepdims=True)], -1)         # [t, h, w, 4]
                lat = np.stack([x[..., c % 4] for c in range(C)], 1) * 2.0     # [t, C, h, w]
                out = os.path.join(lat_dir, cache_name(row["path"]))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                np.savez(out, latent_mean=lat.astype(np.float32), latent_std=np.full_like(lat, 0.05, np.float32),
                         fps=np.float32(fps))
                g = np.random.default_rng(zlib.crc32(row["text"].encode()))
                out = os.path.join(txt_dir, cache_name(row["path"]))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                np.savez(out, text_emb=g.standard_normal((L, D), dtype=np.float32),
                         y_vec=g.standard_normal((Dv,), dtype=np.float32))
            g = np.random.default_rng(zlib.crc32(b""))
            np.savez(os.path.join(txt_dir, "null.npz"), text_emb=g.standard_normal((3, D), dtype=np.float32),
                     y_vec=g.standard_normal((Dv,), dtype=np.float32))
        self.barrier()
        self.cfg["latents"], self.cfg["text_embeddings"] = lat_dir, txt_dir

    def fm_text_len(self):
        """2.0's T5 length: ``t5.max_length`` (upstream 512)."""
        return int((self.cfg.get("t5") or {}).get("max_length", 512))

    def read_null_text(self):
        """The T5 / CLIP encodings of "" (``null.npz`` in the text cache: text_emb [L0, D], y_vec [D'])."""
        import numpy as np

        path = os.path.join(self.text_cache, "null.npz")
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing: the T5 / CLIP encodings of \"\" (text_emb [L0, D], y_vec [D']) "
                            f"for the caption dropout")
        with np.load(path) as f:
            return np.asarray(f["text_emb"], np.float32), np.asarray(f["y_vec"], np.float32)

    def _rng(self, step, g, stream):
        import numpy as np

        return np.random.default_rng([self.seed, step, g, stream])

    def read_batch(self, keys, step):
        """One rank's batch: samples read (or cached latents / captions loaded), bad ones skipped. Randomness is a
        function of (seed, step, global sample index) -- index = rank * max batch size + slot -- so the ranks'
        split of a global batch does not change any draw. -> (batch dict or None, skipped [(path, reason)])."""
        import numpy as np

        from opensora_dual.data import CorruptSampleError
        from opensora_dual.inference.aspect import IMG_FPS

        items, skipped = [], []
        for slot, (index, T, H, W) in enumerate(keys):
            g = self.rank * self.max_bs + slot
            row = self.dataset.rows[index]
            try:
                item = {"g": g, "text": row["text"], "path": row["path"], "T": T, "H": H, "W": W}
                if self.latent_cache is not None:
                    item["z"], fps = self.cached_latent(row, T, H, W, step, g)
                else:
                    s = self.dataset.get(index, T, H, W, rng=self._rng(step, g, 2))
                    item["video"], fps = s["video"], s["fps"]
                if T == 1:
                    fps = float(IMG_FPS)
                item["fps"] = float(fps)
                if self.text_cache is not None:
                    item["y"], item["mask"] = self.cached_text(row)
                items.append(item)
            except CorruptSampleError as e:
                skipped.append((e.path, e.reason))
        if not items:
            return None, skipped
        if self.latent_cache is not None:
            x0 = np.stack([it["z"] for it in items])
        else:
            x0 = self.encode_videos(np.stack([it["video"] for it in items]), [it["g"] for it in items], step)
        if self.family == "mmdit":
            f32 = np.float32
            batch = dict(x0=x0.astype(f32), txt=np.stack([it["y"] for it in items]).astype(f32),
                         y_vec=np.stack([it["mask"] for it in items]).astype(f32),
                         txt_null=self.null_txt[None], y_vec_null=self.null_vec[None])
            batch["_g"] = [it["g"] for it in items]
            return batch, skipped
        if self.text_cache is not None:
            y = np.stack([it["y"] for it in items])[:, None]
            mask = np.stack([it["mask"] for it in items]).astype(np.int64)
        else:
            out = self.text.encode([it["text"] for it in items])
            y, mask = out["text_emb"][:, None].astype(np.float32), out["mask"].astype(np.int64)
        f32 = np.float32
        batch = dict(x0=x0.astype(f32), y=y.astype(f32), mask=mask,
                     fps=np.array([it["fps"] for it in items], f32),
                     height=np.array([it["H"] for it in items], f32), width=np.array([it["W"] for it in items], f32),
                     num_frames=np.array([it["T"] for it in items], f32),
                     # STDiT2's aspect ratio: v1.1's training dataset passes width / height (its sampling H/W)
                     ar=np.array([it["W"] / it["H"] for it in items], f32))
        batch["_g"] = [it["g"] for it in items]
        return batch, skipped

    def cached_latent(self, row, T, H, W, step, g):
        import numpy as np

        from opensora_dual.data import CorruptSampleError

        path = os.path.join(self.latent_cache, cache_name(row["path"]))
        if not os.path.isfile(path):
            raise CorruptSampleError(path, "latent cache file missing")
        try:
            with np.load(path) as f:
                mean, std = np.asarray(f["latent_mean"], np.float32), np.asarray(f["latent_std"], np.float32)
                fps = float(f["fps"]) if "fps" in f else None
        except Exception as e:
            raise CorruptSampleError(path, f"unreadable latent cache ({one_line(e)})") from None
        if mean.ndim != 4 or mean.shape != std.shape:
            raise CorruptSampleError(path, f"latent_mean/latent_std must be [T, C, h, w], got {mean.shape}, "
                                           f"{std.shape}")
        z = mean + std * self._rng(step, g, 1).standard_normal(mean.shape, dtype=np.float32)
        z = z.transpose(1, 0, 2, 3)                                   # [C, T', h, w]
        t, h, w = self.geometry.latent_size(T, H, W)
        C, t0, h0, w0 = z.shape
        if C != self.latent_channels:
            raise CorruptSampleError(path, f"{C} latent channels, the model takes {self.latent_channels}")
        if t0 < t or h0 < h or w0 < w:
            raise CorruptSampleError(path, f"cached latent {t0}x{h0}x{w0} is smaller than the bucket's "
                                           f"{t}x{h}x{w} (T={T}, {H}x{W})")
        start = int(self._rng(step, g, 2).integers(0, t0 - t, endpoint=True))
        top, left = (h0 - h) // 2, (w0 - w) // 2
        z = z[:, start:start + t, top:top + h, left:left + w]
        src_fps = row.get("fps") if row.get("fps") is not None else fps
        return np.ascontiguousarray(z), (src_fps or 24.0) // self.dataset.frame_interval

    def cached_text(self, row):
        import numpy as np

        from opensora_dual.data import CorruptSampleError

        path = os.path.join(self.text_cache, cache_name(row["path"]))
        if not os.path.isfile(path):
            raise CorruptSampleError(path, "text embedding cache file missing")
        try:
            with np.load(path) as f:
                emb = np.asarray(f["text_emb"], np.float32)
                mask = np.asarray(f["y_vec"] if self.family == "mmdit" else f["mask"])
        except Exception as e:
            raise CorruptSampleError(path, f"unreadable text embedding cache ({one_line(e)})") from None
        if self.family == "mmdit":   # 2.0: (T5 [L, D], CLIP pooled [D'])
            if emb.shape != (self.text_len, self.caption_channels) or mask.shape != (self.vec_channels,):
                raise UserError(f"{path}: text_emb {emb.shape} / y_vec {mask.shape} do not fit the model (needs "
                                f"{(self.text_len, self.caption_channels)} / ({self.vec_channels},))")
            return emb, mask.astype(np.float32)
        want = (self.text_len, self.caption_channels)
        if emb.shape != want or mask.shape != (self.text_len,):
            raise UserError(f"{path}: text_emb {emb.shape} / mask {mask.shape} do not fit the model (needs "
                            f"text_emb {want}, mask ({self.text_len},)): embed with the model's text encoder and "
                            f"max length")
        return emb, mask

    def encode_videos(self, x, gs, step):
        """VAE encode with the posterior sampled (upstream trains on samples, not the mean); the noise of each
        sample is drawn from its own (seed, step, index) generator."""
        import mindspore as ms
        import numpy as np

        B, _, T, H, W = x.shape
        dt = np.float16 if self.dtype == "fp16" else np.float32
        if not hasattr(self.vae, "spatial_vae"):    # 1.0/1.1: the 2D VAE frame by frame, posterior sampled
            f = self.vae.patch_size[1]
            noise = np.stack([self._rng(step, g, 1).standard_normal((self.latent_channels, T, H // f, W // f),
                                                                    dtype=np.float32) for g in gs])
            z = self.vae.encode(ms.Tensor(x.astype(dt)), noise=ms.Tensor(noise.astype(dt)))
            return z.astype(ms.float32).asnumpy()
        sp = self.vae.spatial_vae
        cs = int(sp.out_channels)
        f = sp.patch_size[1]
        t, h, w = (int(v) for v in self.vae.get_latent_size([T, H, W]))
        sn, tn = [], []
        for g in gs:
            rng = self._rng(step, g, 1)
            sn.append(rng.standard_normal((cs, T, H // f, W // f), dtype=np.float32))
            tn.append(rng.standard_normal((self.latent_channels, t, h, w), dtype=np.float32))
        z = self.vae.encode(ms.Tensor(x.astype(dt)), spatial_noise=np.stack(sn).astype(dt),
                            temporal_noise=np.stack(tn).astype(dt))
        return z.astype(ms.float32).asnumpy()

    def draw_noise(self, batch, step):
        import numpy as np

        from opensora_dual.training import TrainBatchNoise, iddpm_noise

        parts = []
        x0 = batch["x0"]
        if self.objective == "flow_matching":
            from opensora_dual.training import FlowMatchingBatchNoise

            fm = self.objective_kwargs
            for g in batch["_g"]:
                parts.append(FlowMatchingBatchNoise.draw(self._rng(step, g, 0), (1,) + x0.shape[1:],
                                                         self.model.patch_size, fm["condition_config"],
                                                         fm["is_causal_vae"], fm["time_compression"]))
            return FlowMatchingBatchNoise(t=np.concatenate([p.t for p in parts]),
                                          x1=np.concatenate([p.x1 for p in parts]),
                                          u_t5=np.concatenate([p.u_t5 for p in parts]),
                                          u_clip=np.concatenate([p.u_clip for p in parts]),
                                          cond_types=sum((p.cond_types for p in parts), []))
        for j, g in enumerate(batch["_g"]):
            sl = slice(j, j + 1)
            if self.objective == "iddpm":
                parts.append(iddpm_noise(self._rng(step, g, 0), (1,) + x0.shape[1:],
                                         caption_drop_prob=self.trainer.caption_drop_prob,
                                         mask_ratios=self.mask_ratios, **self.noise_kw))
                continue
            parts.append(TrainBatchNoise.draw(self._rng(step, g, 0), (1,) + x0.shape[1:], batch["height"][sl],
                                              batch["width"][sl], batch["num_frames"][sl],
                                              caption_drop_prob=self.trainer.caption_drop_prob,
                                              mask_ratios=self.mask_ratios, **self.noise_kw))
        xm = None if parts[0].x_mask is None else np.concatenate([p.x_mask for p in parts])
        return TrainBatchNoise(t=np.concatenate([p.t for p in parts]), noise=np.concatenate([p.noise for p in parts]),
                               drop_ids=np.concatenate([p.drop_ids for p in parts]), x_mask=xm,
                               num_timesteps=self.noise_kw["num_timesteps"])

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    @staticmethod
    def trainer_state(ts):
        """state.json's ``trainer`` entry from ``TrainStep.state_dict()``: counters and the loss scaler."""
        return dict(**ts["counters"], scaler=ts["loss_scale"])

    def save_checkpoint(self, step, epoch, last_loss):
        import mindspore as ms

        import converters
        from converters.atomic import atomic_dir, current_umask
        from opensora_dual import registry

        in_sync = self.replicas_in_sync() if self.world > 1 else True
        if self.rank != 0:
            return None
        if not in_sync:
            raise RuntimeError(f"step {step}: the ranks' weights differ (data-parallel replicas out of sync)")
        name = f"epoch{epoch}-global_step{step}"
        final = os.path.join(self.run_dir, name)
        fam = registry.get_family(self.family)
        release_cfg = fam.config_to_json(dict(self.model_kwargs_full))
        t = self.trainer
        weights = converters.model_tensors(self.model, self.backend)
        ema = dict(weights)
        ema.update(t.ema_state() if t.ema_decay is not None else {})
        hook = os.environ.get(HOOK_CKPT_SLEEP)
        t0 = time.time()
        with atomic_dir(final) as tmp:
            def save_ckpt(items, path):   # mindspore writes 0400 files: give them the modes other outputs get
                ms.save_checkpoint(items, path)
                os.chmod(path, 0o666 & ~current_umask())

            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(release_cfg, f, indent=2)
            save_ckpt([{"name": k, "data": ms.Tensor(v)} for k, v in weights.items()],
                      os.path.join(tmp, "model.ckpt"))
            if hook and int(hook.split(":")[0]) == step:
                print(f"[test hook] sleeping {hook.split(':')[1]} s inside the checkpoint write of step {step}",
                      flush=True)
                time.sleep(float(hook.split(":")[1]))
            os.makedirs(os.path.join(tmp, "ema"))
            with open(os.path.join(tmp, "ema", "config.json"), "w") as f:
                json.dump(release_cfg, f, indent=2)
            save_ckpt([{"name": k, "data": ms.Tensor(v)} for k, v in ema.items()],
                      os.path.join(tmp, "ema", "model.ckpt"))
            ts = t.state_dict()
            opt = []
            for name in ts["exp_avg"]:
                opt += [{"name": "exp_avg." + name, "data": ms.Tensor(ts["exp_avg"][name])},
                        {"name": "exp_avg_sq." + name, "data": ms.Tensor(ts["exp_avg_sq"][name])}]
            save_ckpt(opt, os.path.join(tmp, "optimizer.ckpt"))
            state = dict(step=step, epoch=epoch, sampler=self.sampler.state_dict(), world_size=self.world,
                         trainer=self.trainer_state(ts), rng=dict(train_step=ts["rng"]),
                         last_loss=last_loss, model_preset=(self.cfg.get("model") or {}).get("type"),
                         model_kwargs=release_cfg, skipped_samples=len(self.skipped), time=time.time(),
                         config={k: v for k, v in self.cfg.items() if not k.startswith("_")})
            with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1, default=str)
        removed = prune_checkpoints(self.run_dir, self.keep_last)
        plot_loss(self.log_path, os.path.join(self.run_dir, "loss.png"))
        self.log(dict(event="checkpoint", step=step, epoch=epoch, path=final, seconds=round(time.time() - t0, 3),
                      removed=[os.path.basename(r) for r in removed]))
        self.say(f"checkpoint {final} ({time.time() - t0:.1f} s)" +
                 (f"; removed {', '.join(os.path.basename(r) for r in removed)}" if removed else ""))
        self.last_ckpt = final
        return final

    def restore(self, path):
        """Weights, EMA, optimizer moments, counters and the sampler position of a checkpoint."""
        import mindspore as ms

        with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        t = self.trainer
        from ms_impl.training.train_step import load_weights_inplace

        weights = ms.load_checkpoint(os.path.join(path, "model.ckpt"))
        if self.backend == "pt":
            import torch

            with torch.no_grad():
                for n, p in list(self.model.named_parameters()) + list(self.model.named_buffers()):
                    if n in weights:
                        p.copy_(torch.from_numpy(weights[n].asnumpy()))
        else:
            load_weights_inplace(self.model, {k: v.asnumpy() for k, v in weights.items()}, strict=True)
        opt = ms.load_checkpoint(os.path.join(path, "optimizer.ckpt"))
        ema = ms.load_checkpoint(os.path.join(path, "ema", "model.ckpt"))
        tracked = set(t.ema_state())
        ts = state["trainer"]
        t.load_state_dict(dict(
            exp_avg={n: opt["exp_avg." + n].asnumpy() for n in t.parameters()},
            exp_avg_sq={n: opt["exp_avg_sq." + n].asnumpy() for n in t.parameters()},
            ema={n: ema[n].asnumpy() for n in tracked},
            counters={k: ts[k] for k in ("update_count", "global_step", "skipped_steps")},
            loss_scale=ts.get("scaler"), rng=(state.get("rng") or {}).get("train_step")))
        self.sampler.load_state_dict(state["sampler"])
        old = state.get("config") or {}
        differ = sorted(k for k in ("seed", "bucket_config", "lr", "warmup_steps", "mask_ratios", "dtype", "model",
                                    "scheduler", "adam_eps", "grad_clip", "ema_decay")
                        if k in old and json.dumps(old[k], sort_keys=True, default=str) !=
                        json.dumps(self.cfg.get(k), sort_keys=True, default=str))
        if differ:
            self.say(f"note: resuming with other settings than the checkpoint's for {', '.join(differ)} "
                     f"(the run is then not a continuation of the same curve)")
        return state

    # ---- the loop -------------------------------------------------------------------------------------------------
    def setup(self):
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE)
        self.setup_parallel()
        self.settings()
        ms.set_seed(self.seed)
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
            gone = remove_stale(self.run_dir)
            if gone:
                self.say(f"removed interrupted checkpoint writes: {', '.join(gone)}")
        self.barrier()
        if _bool(self.cfg, "build_random_components"):
            self.build_random_components()
        resume = find_resume(self.cfg.get("resume"), self.run_dir)
        if self.cfg.get("resume") and resume is None:
            self.say(f"--resume {self.cfg['resume']}: no checkpoint in {self.run_dir}, starting from scratch")
        if resume is None and list_checkpoints(self.run_dir):
            raise UserError(f"the run folder {self.run_dir} already holds checkpoints (last: "
                            f"{os.path.basename(list_checkpoints(self.run_dir)[-1][1])}): pass --resume to continue "
                            f"it, or another --run_name")
        self.resume_path = resume
        self.build_data()
        from ms_impl.training.train_step import TrainStep

        ms.set_seed(self.seed)       # the same random init whether or not components were built first
        self.model = self.build_model()
        if self.family == "mmdit":
            self.text_len = self.fm_text_len()
            self.caption_channels = int(self.model.txt_in.weight.shape[1])
            self.vec_channels = int(self.model.vector_in.in_layer.weight.shape[1])
            self.latent_channels = int(self.model.in_channels) // int(self.model.patch_size) ** 2
        else:
            self.text_len = int(self.model.model_max_length)
            self.caption_channels = int(self.model.y_embedder.y_embedding.shape[1])
            self.latent_channels = int(self.model.in_channels)
        tl = (self.cfg.get("text_encoder") or {}).get("model_max_length")
        if self.family == "mmdit":
            tl = None
            self.geometry = FlowMatchingGeometry(self.latent_channels)
            self.null_txt, self.null_vec = self.read_null_text()
        if tl is not None and int(tl) != self.text_len:
            raise UserError(f"text_encoder.model_max_length {tl} != the model's model_max_length {self.text_len}")
        if self.family == "mmdit":
            self.vae = None
        elif self.latent_cache is None:
            self.vae = self.build_vae()
            self.geometry = None
            if int(self.vae.out_channels) != self.latent_channels:
                raise UserError(f"the VAE gives {self.vae.out_channels} latent channels, the model takes "
                                f"{self.latent_channels}")
        else:
            self.vae = None
            self.geometry = self.vae_geometry()
        self.text = None if self.text_cache is not None else self.build_text()
        if self.backend == "pt":
            from pt_reference.training.train_step import TrainStep as PtTrainStep

            self.trainer = PtTrainStep(self.model, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps,
                                       betas=self.betas, grad_clip=self.grad_clip, warmup_steps=self.warmup,
                                       ema_decay=self.ema_decay, grad_accum=self.grad_accum,
                                       recompute=_bool(self.cfg, "grad_checkpoint"), seed=self.seed,
                                       objective=self.objective, objective_kwargs=self.objective_kwargs)
            return
        if self.world > 1:
            self.sync_from_rank0(self.model)
            for net in (self.vae, getattr(self.text, "net", None)):
                if net is not None:
                    self.sync_from_rank0(net)
        self.trainer = TrainStep(self.model, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, betas=self.betas,
                            grad_clip=self.grad_clip, warmup_steps=self.warmup, ema_decay=self.ema_decay,
                            grad_accum=self.grad_accum, recompute=_bool(self.cfg, "grad_checkpoint"),
                            compute_dtype=self.dtype if self.dtype != "bf16" else ms.bfloat16,
                            loss_scale=self.cfg.get("loss_scale"), jit=self.jit, jit_update=self.jit_update,
                            seed=self.seed, objective=self.objective, objective_kwargs=self.objective_kwargs)
        if self.world > 1:
            self.trainer.set_grad_reducer(dp_grad_reducer(self.trainer.params, self.world))

    def run(self):
        import numpy as np

        from opensora_dual.training import TrainingDivergedError

        self.setup()
        self.skipped = []
        self.last_ckpt = None
        step, epoch = 0, 0
        if self.resume_path is not None:
            state = self.restore(self.resume_path)
            step, epoch = int(state["step"]), int(state["epoch"])
            self.last_ckpt = self.resume_path
            if self.rank == 0:
                truncate_log(self.log_path, step)
            self.say(f"resumed from {self.resume_path}: step {step}, epoch {epoch}")
        elif self.rank == 0 and os.path.exists(self.log_path):
            os.replace(self.log_path, self.log_path + ".previous")   # a fresh run in a folder without checkpoints
        if self.rank == 0:
            import yaml

            with open(os.path.join(self.run_dir, "config.yaml"), "w", encoding="utf-8") as f:
                yaml.safe_dump({k: v for k, v in self.cfg.items() if not k.startswith("_")}, f, sort_keys=False)
        nparams = sum(int(np.prod(p.shape)) for p in self.trainer.parameters().values())
        self.say(f"{PROG}: {self.cfg['model'].get('type')} ({nparams / 1e6:.2f}M trainable, {self.init_note}), "
                 f"{len(self.dataset)} rows, {self.world} rank(s), dtype {self.dtype}, lr {self.lr:g} "
                 f"(warm-up {self.warmup}), run folder {self.run_dir}")
        for n in self.notes:
            self.say(f"note: {n}")
        self.log(dict(event="resume" if self.resume_path else "start", step=step, epoch=epoch, world_size=self.world,
                      resume_from=self.resume_path, time=time.time()))
        if self.max_steps is not None and step >= self.max_steps:
            self.say(f"nothing to do: step {step} >= max_steps {self.max_steps}")
            return 0
        nan_step = int(os.environ[HOOK_NAN_STEP]) if os.environ.get(HOOK_NAN_STEP) else None
        dump = os.environ.get(HOOK_DUMP_GRADS) or None
        window, last_loss, saved_at = [], None, (step if self.resume_path else None)
        stop = False
        while epoch < self.epochs and not stop:
            self.sampler.set_epoch(epoch)
            skipped_epoch = 0
            for keys in self.sampler:
                t_start = time.time()
                batch, skipped = self.read_batch(keys, step)
                for path, reason in skipped:
                    self.skipped.append((path, reason))
                    self.say(f"skipped sample {path}: {reason}", all_ranks=True)
                have, local_b, nskip = (1 if batch is not None else 0), (0 if batch is None else len(batch["_g"])), \
                    len(skipped)
                tot = self.allreduce_sum([have, local_b, nskip])
                skipped_epoch += int(tot[2])
                if int(tot[0]) < self.world:       # a rank has no sample: every rank skips this batch
                    self.log(dict(event="empty_batch", step=step, epoch=epoch, skipped_samples=int(tot[2]),
                                  skipped=[f"{p}: {r}" for p, r in skipped]))
                    continue
                t_data = time.time() - t_start
                if nan_step is not None and step + 1 == nan_step:
                    batch["x0"] = np.full_like(batch["x0"], np.nan)
                noise = self.draw_noise(batch, step)
                try:
                    res = self.trainer.step({k: v for k, v in batch.items() if k != "_g"}, noise,
                                            keep_grads=dump is not None)
                except TrainingDivergedError as e:
                    self.diverged(step + 1, epoch, e)
                if dump is not None and self.rank == 0:
                    np.savez(f"{dump}{step + 1}.npz", **res.pop("grads"))
                step += 1
                dt = time.time() - t_start
                last_loss = res["loss"]
                window.append(res["loss"])
                rec = dict(step=step, epoch=epoch, loss=res["loss"], lr=res["lr"], grad_norm=res["grad_norm"],
                           step_time=round(dt, 4), data_time=round(t_data, 4),
                           samples_per_s=round(int(tot[1]) / dt, 4), global_batch=int(tot[1]),
                           skipped_samples=int(tot[2]), overflow=bool(res["skipped"]),
                           loss_scale=res.get("loss_scale", 1.0))
                if skipped:
                    rec["skipped"] = [f"{p}: {r}" for p, r in skipped]
                self.log(rec)
                if step % self.log_every == 0:
                    self.say(f"step {step} | epoch {epoch} | loss {res['loss']:.5f} (avg {np.mean(window):.5f}) | "
                             f"lr {res['lr']:.3e} | grad_norm {res['grad_norm']:.4f} | {dt:.2f} s/step | "
                             f"{int(tot[1]) / dt:.2f} samples/s" + (" | overflow, skipped" if res["skipped"] else ""))
                    window = []
                done = self.max_steps is not None and step >= self.max_steps
                if (self.ckpt_every and step % self.ckpt_every == 0) or done:
                    self.save_checkpoint(step, epoch, last_loss)
                    saved_at = step
                if done:
                    stop = True
                    break
            else:
                self.log(dict(event="epoch_end", step=step, epoch=epoch, skipped_samples=skipped_epoch))
                if skipped_epoch:
                    self.say(f"epoch {epoch}: {skipped_epoch} sample(s) skipped")
                epoch += 1
        if saved_at != step and step > 0:
            self.save_checkpoint(step, epoch, last_loss)
        self.log(dict(event="end", step=step, epoch=epoch, skipped_samples=len(self.skipped), time=time.time()))
        if self.skipped:
            counts = {}
            for p, r in self.skipped:
                counts[(p, r)] = counts.get((p, r), 0) + 1
            self.say(f"{len(self.skipped)} sample(s) skipped in this run:")
            for (p, r), n in counts.items():
                self.say(f"  {p}: {r}" + (f" (x{n})" if n > 1 else ""))
        self.say(f"done: step {step}, epoch {epoch}; last checkpoint {self.last_ckpt}")
        return 0

    def diverged(self, step, epoch, err):
        last = self.last_ckpt
        where = (f"the last good checkpoint is {last} (left as it is); resume from it with --resume {last}, e.g. with "
                 f"a lower --lr") if last else "no checkpoint was written before it"
        self.log(dict(event="diverged", step=step, epoch=epoch, loss=str(getattr(err, "loss", "nan")),
                      last_checkpoint=last))
        raise Diverged(f"training diverged at step {step} (epoch {epoch}): the loss is {getattr(err, 'loss', 'nan')};"
                       f" no update was applied for it; {where}")


def dp_grad_reducer(params, world):
    """``TrainStep.set_grad_reducer`` hook for data parallel: each micro-batch's gradients (and loss) averaged
    over the ranks with ``nn.DistributedGradReducer(mean=True)`` (AllReduce) right after its forward+backward,
    so the global norm, the clipping, the skip decisions and the update see the mean gradient on every rank."""
    import mindspore as ms
    from mindspore import nn, ops

    reducer = nn.DistributedGradReducer(params, mean=True, degree=world)
    loss_reduce = ops.AllReduce()
    inv_world = ms.Tensor(1.0 / world, ms.float32)

    def reduce(loss, grads):
        return loss_reduce(loss) * inv_world, reducer(grads)

    return reduce


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg, cli, show = effective_config(argv)
        if show:
            import yaml

            print(yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}, sort_keys=False), end="")
            return 0
        import mindspore  # noqa: F401  (before anything can import decord; shared/mindspore_cpu_notes.md)

        from converters import ConversionError
        from opensora_dual.data import DataError

        try:
            return Trainer(cfg, cli).run()
        except (ConversionError, DataError) as e:
            raise UserError(one_line(e)) from None
    except (UserError, ConfigError) as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_USER
    except Diverged as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
