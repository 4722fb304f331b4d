"""Sampling benchmark: seconds per sampler step (CFG batched: the model runs on batch 2B), MindSpore graph (the
scheduler's ``ms.jit`` CFG denoiser) vs PyTorch eager, for the rectified flow (RFLOW + STDiT3, Open-Sora 1.2),
IDDPM v1.1 (+ STDiT2, 1.1), IDDPM v1.0 and DPM-Solver (+ STDiT, 1.0); and one whole small pipeline run per backend
(text encode / denoise / VAE decode, peak RSS). Prints numbers and MS/PT ratios, never pass/fail. The machine is
noisy (2 shared cores): read the ratios, measured in the same run.

    .venv/bin/python benchmarks/bench_sampling.py [--part steps|pipeline|all] [--steps 5] [--mid-steps 4]
        [--repeat 1] [--configs small,mid] [--samplers rflow,iddpm_v1_1,iddpm_v1_0,dpm_solver,flow_matching]
        [--no-pynative]
        [--pipeline-steps 10] [--frames 17] [--size 32x48]

--part steps: the schedulers' ``sample`` (B = 1, cfg_scale 7, timestep transform on) with ``--steps`` steps
(``--mid-steps`` at the mid config), ``--repeat`` times (runs interleaved across implementations), each ``step``
call timed (wrapped, output synced; nothing subtracted). "first step" is step 0 of
the first run: for MindSpore graph that is the compile plus one step (the scheduler's ``compile_seconds`` is
shown too); "median" is the median of all the other steps. Configs are bench_dit's ``small`` (the family's S/2
preset, latent 3x16x16, 192 tokens) and ``mid`` (the XL/2 preset at depth 4 / hidden 576, ~46M parameters for
STDiT3, latent 8x32x32, 2048 tokens, 120 caption tokens); for ``flow_matching`` (Open-Sora 2.0) bench_dit's MMDiT
table (``MMDiT-S`` on a 2x8x8 latent / ``OpenSora-v2-MMDiT`` at 2+2 blocks, hidden 768, 8 heads on 8x32x32 =
2048 tokens, 120 text tokens), CFG batch 3 ([prompt; neg; neg], cond [c; c; 0]); random weights (zero-init layers filled) copied
PT -> MS. The caption mask marks half the tokens valid, like a real prompt (the reference packs the valid
tokens, the port attends over the padded length with a mask). MindSpore PyNative (``graph=False``) runs at the
small config only. ``--samplers`` (default: the four 1.x samplers): ``rflow`` (STDiT3, cfg 7, timestep transform), ``iddpm_v1_1``
(STDiT2, v1.1 inference settings: cfg 7 on ``cfg_channel`` 3, float32 schedule, v1.1 size conditioning),
``iddpm_v1_0`` (STDiT, cfg 7, float64 schedule), ``dpm_solver`` (STDiT, cfg 4, multistep order 2) and
``flow_matching`` (MMDiT, method i2v, guidance 7.5 / image 3.0 with oscillation and temporal ramp, cond type
i2v_head with one reference latent frame, shifted schedule: the 256px.py defaults); IDDPM's
random draws come from ``NumpyNoise`` (the same stream for every implementation); no conditioning mask. Each
(sampler, config) runs in its own process (a compiled mid graph holds ~3.5 GB until its process ends), so the
peak RSS column is that process's alone.

--part pipeline: a random small pipeline (STDiT3-S/2 + OpenSoraVAE_V1_2-S + T5-S, toy tokenizer; made once by
the PyTorch twin, zero-init layers filled, saved with ``save_pretrained``) loaded with ``from_pretrained`` by each
backend in its own fresh process, one prompt, ``--frames`` at ``--size``, ``--pipeline-steps`` steps. The first
run is cold (MindSpore compiles the T5 forward and the denoiser in it); with ``--repeat`` > 1 the later (warm) runs
are reported too. Peak RSS is the child process's VmHWM (imports and build included; not ``ru_maxrss``, which a
child inherits from its parent's peak on Linux); "RSS before run" is its resident memory after the build. The
steps part's tables also show the (sampler, config) process's cumulative peak RSS after each implementation's
first run.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a cat walking in the snow"


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _hwm_mb():
    """This process's peak resident memory (VmHWM: per address space, so a child started by a big parent does not
    inherit the parent's peak, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


# ----------------------------------------------------------------------------------------------- steps
class TimedSampler:
    """Wraps a scheduler: ``run(...)`` calls its ``sample`` once with every ``step`` call timed (output synced);
    ``runs`` holds the per-run step times, ``compile_seconds`` the scheduler's value after the first run."""

    def __init__(self, sched, sync):
        self.sched, self.sync, self.runs, self.compile_seconds = sched, sync, [], None
        self._orig = sched.step
        sched.step = self._step

    def _step(self, model, z, i, state, noise=None):
        t0 = time.perf_counter()
        out = self._orig(model, z, i, state, noise)
        self.sync(out)
        self.runs[-1].append(time.perf_counter() - t0)
        return out

    def run(self, *args, **kw):
        self.runs.append([])
        self.sched.sample(*args, progress=False, **kw)
        if len(self.runs) == 1:
            self.compile_seconds = getattr(self.sched, "compile_seconds", None)


# sampler: (model family, label, scheduler module under pt_reference/ms_impl, class, kwargs(steps),
#           size conditioning (frames for prepare_multi_resolution_info, or None), draws noise)
SAMPLERS = {
    "rflow": ("stdit3", "RFLOW", "schedulers.rf", "RFLOW",
              lambda n: dict(num_sampling_steps=n, num_timesteps=1000, cfg_scale=7.0, use_timestep_transform=True),
              lambda T: 17, False),
    "iddpm_v1_1": ("stdit2", "IDDPM v1.1 (STDiT2)", "schedulers.iddpm", "IDDPM",
                   lambda n: dict(num_sampling_steps=n, cfg_scale=7.0, cfg_channel=3, version="v1.1"),
                   lambda T: T, True),
    "iddpm_v1_0": ("stdit", "IDDPM v1.0 (STDiT)", "schedulers.iddpm", "IDDPM",
                   lambda n: dict(num_sampling_steps=n, cfg_scale=7.0, version="v1.0"), None, True),
    "dpm_solver": ("stdit", "DPM-Solver (STDiT)", "schedulers.dpm_solver", "DPM_SOLVER",
                   lambda n: dict(num_sampling_steps=n, cfg_scale=4.0), None, False),
    # Open-Sora 2.0: method i2v (one forward over [prompt; neg; neg], guidance 7.5 / image 3.0, oscillations and
    # the temporal ramp on, shift on: the 256px.py defaults), cond type i2v_head with a reference frame
    "flow_matching": ("mmdit", "Flow matching (MMDiT, i2v)", "schedulers.flow_matching", "FlowMatching",
                      lambda n: dict(num_sampling_steps=n, guidance=7.5, guidance_img=3.0), None, False),
}


def _stdit_inputs(pt, B, T, H, W, frames, rng):
    """-> (latent channels, text tokens, valid text tokens, CFG batch, z, y, y_mask, additional_args) for STDiT*."""
    import numpy as np

    from opensora_dual.inference import prepare_multi_resolution_info
    from opensora_dual.sampling.noise import NumpyNoise

    L, C = (int(v) for v in pt.y_embedder.y_embedding.shape)
    z = NumpyNoise(0).randn((B, int(pt.in_channels), T, H, W))
    y = rng.standard_normal((B, 1, L, C)).astype(np.float32)
    y_mask = (np.arange(L)[None] < max(1, L // 2)).astype(np.int64).repeat(B, 0)
    add = None if frames is None else prepare_multi_resolution_info(B, (H * 8, W * 8), frames(T), 24)
    return int(pt.in_channels), L, L // 2, 2 * B, z, y, y_mask, add


def _mmdit_inputs(pt, B, T, H, W, L, rng):
    """The same for MMDiT + flow matching: noise [B, C, T, H, W] (C = in_channels / patch^2), T5-like text and
    CLIP-like pooled vectors for the prompt and the negative prompt, one reference latent frame (i2v_head)."""
    import numpy as np

    from opensora_dual.sampling.noise import NumpyNoise

    p = int(pt.patch_size) if hasattr(pt, "patch_size") else 2
    c = int(pt.in_channels) // (p * p)
    txt_dim, vec_dim = int(pt.txt_in.weight.shape[1]), int(pt.vector_in.in_layer.weight.shape[1])
    z = NumpyNoise(0).randn((B, c, T, H, W)).astype(np.float32)
    y = rng.standard_normal((B, L, txt_dim)).astype(np.float32)
    add = dict(y_vec=rng.standard_normal((B, vec_dim)).astype(np.float32),
               txt_null=rng.standard_normal((1, L, txt_dim)).astype(np.float32),
               y_vec_null=rng.standard_normal((1, vec_dim)).astype(np.float32), cond_type="i2v_head",
               ref=rng.standard_normal((B, 1, c, 1, H, W)).astype(np.float32))
    return c, L, L, 3 * B, z, y, None, add


def bench_steps(name, steps, repeat, pynative, sampler="rflow"):
    import numpy as np
    import mindspore as ms  # before anything that could import decord
    import torch

    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import importlib

    import converters
    from bench_dit import config  # the same small / mid configs as the forward benchmark
    from opensora_dual.registry import build
    from opensora_dual.sampling.noise import NumpyNoise
    from parity_tests.engine import fill_zero_parameters

    family, sampler_label, module, cls, sched_kw, frames, draws = SAMPLERS[sampler]
    PtSched = getattr(importlib.import_module("pt_reference." + module), cls)
    MsSched = getattr(importlib.import_module("ms_impl." + module), cls)
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    if family == "mmdit":   # a first mid run (no cap, other jobs running) failed to allocate a 0.9 GB softmax block
        ms.set_context(max_device_memory="6GB")   # of the joint attention; with the cap it ran. The process peak
        # RSS is still ~10.7 GB at mid (PT twin + compiled MS graph in one process)
    preset, overrides, (T, H, W), L = config(family, name)
    torch.manual_seed(0)
    pt = build(preset, "pt", **overrides).eval()
    fill_zero_parameters(pt)
    port = build(preset, "ms", **overrides)
    port.set_train(False)
    converters.pt_to_ms(pt, port)

    B = 1
    rng = np.random.default_rng(0)
    if family == "mmdit":
        C, L, L_valid, cfg_batch, z, y, y_mask, add = _mmdit_inputs(pt, B, T, H, W, L, rng)
    else:
        C, L, L_valid, cfg_batch, z, y, y_mask, add = _stdit_inputs(pt, B, T, H, W, frames, rng)
    sched_kw = sched_kw(steps)

    # runs interleaved (PT, MS graph, MS PyNative, PT, ...) so load drift on the shared machine hits all alike
    variants = [("PyTorch eager", TimedSampler(PtSched(**sched_kw), lambda out: out), pt,
                 (torch.from_numpy(z), torch.from_numpy(y)), False),
                ("MindSpore graph (ms.jit)", TimedSampler(MsSched(graph=True, **sched_kw), lambda o: o.asnumpy()),
                 port, (ms.Tensor(z), ms.Tensor(y)), True)]
    if pynative:
        variants.append(("MindSpore PyNative", TimedSampler(MsSched(graph=False, **sched_kw), lambda o: o.asnumpy()),
                         port, (ms.Tensor(z), ms.Tensor(y)), False))
    load0 = os.getloadavg()[0]
    hwm = {}
    for _ in range(repeat):
        for label, timer, model, (zz, yy), _ in variants:
            # the same noise stream for every implementation and run
            timer.run(model, zz, yy, y_mask, add, noise=NumpyNoise(1) if draws else None)
            hwm.setdefault(label, _hwm_mb())
    rows = [(label, timer.runs, timer.compile_seconds if graph else None) for label, timer, _, _, graph in variants]

    tokens = T * (H // 2) * (W // 2)
    params = sum(p.numel() for p in pt.parameters())
    cfg = f"{preset} {overrides}" if overrides else preset
    title = "" if sampler == "rflow" else f"{sampler_label}, "
    print(f"\n{title}{name}: {cfg}, params {params / 1e6:.1f}M, latent {B}x{C}x{T}x{H}x{W} "
          f"({tokens} tokens), caption {L} tokens ({L_valid} valid), CFG batch {cfg_batch}, {steps} steps x "
          f"{repeat} run(s), fp32, torch threads {torch.get_num_threads()}; load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  {'implementation':26s} {'first step':>11s} {'median step':>12s} {'MS/PT (median)':>15s} "
          f"{'first/median':>13s} {'process peak RSS after its 1st run':>35s}")
    base = None
    out = {}
    for label, runs, compile_s in rows:
        first = runs[0][0]
        later = runs[0][1:] + [t for r in runs[1:] for t in r]
        med = _med(later)
        base = med if base is None else base
        print(f"  {label:26s} {first:10.3f}s {med:11.3f}s {med / base:14.2f}x {first / med:12.1f}x "
              f"{hwm[label]:31.0f} MB")
        if compile_s is not None:
            print(f"  {'':26s} (first step = compile + one step; scheduler compile_seconds {compile_s:.3f}s)")
        out[label] = dict(first=first, median=med, compile_seconds=compile_s)
    pt_med, g = out["PyTorch eager"]["median"], out["MindSpore graph (ms.jit)"]
    saving = pt_med - g["median"]
    if saving > 0:
        extra = g["first"] - g["median"] - (out["PyTorch eager"]["first"] - pt_med)
        print(f"  graph vs eager: {pt_med / g['median']:.2f}x faster per step; the compile is paid back after "
              f"~{max(0.0, extra) / saving:.0f} steps")
    else:
        print(f"  graph vs eager: {g['median'] / pt_med:.2f}x slower per step (no break-even)")
    return out


def _steps_child(args, sampler, name):
    """One (sampler, config) of --part steps in its own process (a compiled mid graph keeps its memory for the
    life of the process: several in one process would add up); its tables pass through, -> its result dict."""
    env = dict(os.environ, GLOG_v="3", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=ROOT)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "steps", "--samplers", sampler, "--configs", name,
           "--steps", str(args.steps), "--mid-steps", str(args.mid_steps), "--repeat", str(args.repeat)]
    res = subprocess.run(cmd + (["--no-pynative"] if args.no_pynative else []), env=env, capture_output=True,
                         text=True, cwd=ROOT)
    lines = res.stdout.splitlines()
    print("\n".join(ln for ln in lines if not ln.startswith("@@RESULT ")), flush=True)
    result = [ln for ln in lines if ln.startswith("@@RESULT ")]
    if res.returncode or not result:
        print(f"{sampler} {name} FAILED (exit {res.returncode})\n{res.stderr[-3000:]}", flush=True)
        return None
    return json.loads(result[-1][len("@@RESULT "):])


# -------------------------------------------------------------------------------------------- pipeline
def save_pipeline(folder):
    """Build the random small pipeline in the PyTorch twin and write it as a pipeline folder (in this process)."""
    sys.path.insert(0, ROOT)
    from pt_reference.pipelines.opensora import write_random_pipeline

    write_random_pipeline(os.path.join(folder, "pipeline"))


def child_pipeline(args):
    """One backend: load the pipeline folder, run it ``--repeat`` times with per-stage timers; a JSON line."""
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    if args.backend == "ms":
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
        from ms_impl.pipelines.opensora import OpenSoraPipeline
    else:
        import torch  # noqa: F401

        from pt_reference.pipelines.opensora import OpenSoraPipeline
    rss_imported = _rss_mb()
    t0 = time.perf_counter()
    pipe = OpenSoraPipeline.from_pretrained(os.path.join(args.folder, "pipeline"),
                                            scheduler=dict(num_sampling_steps=args.pipeline_steps))
    build_s = time.perf_counter() - t0
    rss_built = _rss_mb()
    h, w = (int(v) for v in args.size.lower().split("x"))
    latent = pipe.latent_size(args.frames, (h, w))

    stage = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)           # every stage returns numpy: synced
            stage[name] = stage.get(name, 0.0) + time.perf_counter() - t
            return out
        return wrapper

    pipe.encode_text = timed("text", pipe.encode_text)
    pipe.sample = timed("denoise", pipe.sample)
    pipe.decode_latents = timed("decode", pipe.decode_latents)
    runs = []
    for _ in range(args.repeat):
        stage.clear()
        t = time.perf_counter()
        out = pipe([PROMPT], image_size=(h, w), num_frames=args.frames, fps=24, seed=0, progress=False)
        total = time.perf_counter() - t
        runs.append(dict(stage, total=total, other=total - sum(stage.values()),
                         first_step=getattr(pipe.scheduler, "compile_seconds", None)))
    print(json.dumps(dict(backend=args.backend, runs=runs, build_s=build_s, rss_imported_mb=rss_imported,
                          rss_built_mb=rss_built,
                          peak_rss_mb=_hwm_mb(),
                          video_shape=list(out.videos[0].shape), latent=[pipe.latent_channels, *latent],
                          process_s=time.perf_counter() - t_start, load=[load0, os.getloadavg()[0]],
                          frameworks=[m for m in ("torch", "mindspore") if m in sys.modules])))


def _run_child(args, *extra):
    env = dict(os.environ, GLOG_v="3", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=ROOT)
    cmd = [sys.executable, os.path.abspath(__file__), "--folder", args.folder, "--frames", str(args.frames),
           "--size", args.size, "--pipeline-steps", str(args.pipeline_steps), "--repeat", str(args.repeat), *extra]
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode or not line:
        print(f"child {' '.join(extra)} FAILED (exit {res.returncode})\n{res.stderr[-3000:]}")
        return None
    out = json.loads(line[-1])
    out["wall_s"] = wall
    return out


def bench_pipeline(args):
    args.folder = tempfile.mkdtemp(prefix="bench_sampling_")
    try:
        save_pipeline(args.folder)
        res = {be: _run_child(args, "--child", "run", "--backend", be) for be in ("pt", "ms")}
    finally:
        shutil.rmtree(args.folder, ignore_errors=True)
    pt, ms_ = res["pt"], res["ms"]
    if not (pt and ms_):
        return res
    c, t, lh, lw = pt["latent"]
    print(f"\npipeline: STDiT3-S/2 + OpenSoraVAE_V1_2-S + T5-S (random weights, from_pretrained), 1 prompt, "
          f"{args.frames} frames at {args.size} -> latent {c}x{t}x{lh}x{lw} ({t * (lh // 2) * (lw // 2)} tokens), "
          f"{args.pipeline_steps} steps, CFG 7.0 (batch 2), fp32, CPU ({os.cpu_count()} cores); output video "
          f"{'x'.join(map(str, pt['video_shape']))} uint8; each backend in its own process")

    def table(title, pick):
        p, m = pick(pt), pick(ms_)
        print(f"\n{title}")
        print("| stage | PT s | MS s | MS/PT |")
        print("|---|---|---|---|")
        for key, label in (("text", "text encode (T5-S)"), ("denoise", f"denoise ({args.pipeline_steps} steps)"),
                           ("decode", "VAE decode"), ("other", "other (prompts, noise, uint8)"),
                           ("total", "total")):
            print(f"| {label} | {p[key]:.3f} | {m[key]:.3f} | {m[key] / p[key]:.2f} |")
        if m.get("first_step") is not None:
            print(f"| of the MS denoise: first step (compile_seconds) | - | {m['first_step']:.3f} | |")

    table("cold run (the first call in a fresh process: MindSpore compiles the T5 forward and the denoiser here)",
          lambda r: r["runs"][0])
    if args.repeat > 1:
        table(f"warm runs (median of runs 2..{args.repeat}, same process)",
              lambda r: {k: _med([run[k] for run in r["runs"][1:]]) for k in r["runs"][1]
                         if k != "first_step"} | {"first_step": None})
    print("\n| process | PT | MS | MS/PT |")
    print("|---|---|---|---|")
    for key, label, fmt in (("peak_rss_mb", "peak RSS MB (VmHWM)", "{:.0f}"),
                            ("rss_built_mb", "RSS before run MB (after imports + build)", "{:.0f}"),
                            ("rss_imported_mb", "RSS after imports MB", "{:.0f}"),
                            ("build_s", "load (from_pretrained) s", "{:.2f}"),
                            ("wall_s", "process wall s (imports included)", "{:.1f}")):
        print(f"| {label} | {fmt.format(pt[key])} | {fmt.format(ms_[key])} | {ms_[key] / pt[key]:.2f} |")
    print(f"frameworks loaded: PT process {pt['frameworks']}, MS process {ms_['frameworks']}; load average "
          f"PT {pt['load'][0]:.1f} -> {pt['load'][1]:.1f}, MS {ms_['load'][0]:.1f} -> {ms_['load'][1]:.1f}")
    return res


STEP_TARGETS = {"rflow": 1.8}   # issue 11: a rectified-flow sampling step <= 1.8x PyTorch (docs/performance.md)


def target_line(name, value, limit, unit="MS/PT", fmt="{:.2f}"):
    """``target <name>: MS/PT = X.XX (target <= Y) PASS|MISS`` (the same line as bench_dit.target_line)."""
    return f"target {name}: {unit} = {fmt.format(value)} (target \u2264 {limit:g}) {'PASS' if value <= limit else 'MISS'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("steps", "pipeline", "all"), default="all")
    ap.add_argument("--steps", type=int, default=5, help="sampling steps per run in --part steps (small config)")
    ap.add_argument("--mid-steps", type=int, default=4,
                    help="sampling steps per run at the mid config (its compile alone takes ~1 min here)")
    ap.add_argument("--repeat", type=int, default=1, help="sample / pipeline runs per implementation")
    ap.add_argument("--configs", default="small,mid", help="--part steps configs (bench_dit's)")
    ap.add_argument("--samplers", default="rflow,iddpm_v1_1,iddpm_v1_0,dpm_solver",
                    help="--part steps samplers (each with its model family; default the 1.x ones): "
                    + ", ".join(SAMPLERS))
    ap.add_argument("--no-pynative", action="store_true", help="skip MindSpore PyNative at the small config")
    ap.add_argument("--pipeline-steps", type=int, default=10)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", default="32x48", help="HxW in pixels")
    ap.add_argument("--child", choices=("run", "steps"), help=argparse.SUPPRESS)
    ap.add_argument("--backend", choices=("pt", "ms"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    samplers = args.samplers.split(",")
    bad = [x for x in samplers if x not in SAMPLERS]
    if bad:
        ap.error(f"unknown sampler(s) {bad}; choose from {', '.join(SAMPLERS)}")
    if min(args.steps, args.mid_steps) < 2 or args.repeat < 1:
        ap.error("--steps / --mid-steps must be >= 2 (a first step and later ones) and --repeat >= 1")
    if args.child == "run":
        return child_pipeline(args)
    if args.child == "steps":
        name = args.configs
        out = bench_steps(name, args.mid_steps if name == "mid" else args.steps, args.repeat,
                          pynative=(name == "small" and not args.no_pynative), sampler=args.samplers)
        print("@@RESULT " + json.dumps(out))
        return None

    t0 = time.perf_counter()
    if args.part in ("steps", "all"):
        summary = []
        for sampler in samplers:
            label = SAMPLERS[sampler][1]
            print(f"\n== seconds per {label} sampling step (CFG batched), MS graph vs PT eager ==" if summary else
                  f"== seconds per {label} sampling step (CFG batched), MS graph vs PT eager ==")
            for name in args.configs.split(","):
                out = _steps_child(args, sampler, name)
                if out is not None:
                    summary.append((sampler, name, out))
        if len(summary) == 1 and summary[0][0] in STEP_TARGETS:
            sampler, name, out = summary[0]
            print(target_line(f"{SAMPLERS[sampler][1]} {name} sampling step (graph)",
                              out["MindSpore graph (ms.jit)"]["median"] / out["PyTorch eager"]["median"],
                              STEP_TARGETS[sampler]))
        if len(summary) > 1:
            sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
            from bench_dit import config

            print("\n| sampler | model | config | PT eager s/step | MS graph s/step | MS/PT | MS graph first step s "
                  "| MS PyNative s/step (MS/PT) |")
            print("|---|---|---|---|---|---|---|---|")
            for sampler, name, out in summary:
                pt_, g = out["PyTorch eager"], out["MindSpore graph (ms.jit)"]
                pn = out.get("MindSpore PyNative")
                pn = f"{pn['median']:.3f} ({pn['median'] / pt_['median']:.2f}x)" if pn else "-"
                print(f"| {SAMPLERS[sampler][1]} | {config(SAMPLERS[sampler][0], name)[0]} | {name} | "
                      f"{pt_['median']:.3f} | "
                      f"{g['median']:.3f} | {g['median'] / pt_['median']:.2f}x | {g['first']:.1f} | {pn} |")
        for sampler, name, out in summary:
            if sampler in STEP_TARGETS:
                pt_, g = out["PyTorch eager"], out["MindSpore graph (ms.jit)"]
                print(target_line(f"{SAMPLERS[sampler][1]} {name} sampling step (graph)",
                                  g["median"] / pt_["median"], STEP_TARGETS[sampler]))
    if args.part in ("pipeline", "all"):
        print("\n== one whole small pipeline run per backend (text / denoise / decode, peak RSS) ==")
        bench_pipeline(args)
    print(f"\nbench_sampling wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
