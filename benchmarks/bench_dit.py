"""DiT forward time (STDiT3, STDiT2, STDiT, Open-Sora 2.0 MMDiT): PyTorch eager vs MindSpore PyNative vs MindSpore graph (ms.jit), with
MS/PT ratios.

Prints numbers, never pass/fail. Medians over ``--repeat`` runs after ``--warmup`` runs; the first graph-mode
call (compile) is reported separately. The machine is noisy (2 shared cores): read the ratios.

    .venv/bin/python benchmarks/bench_dit.py [--models stdit3,stdit2,stdit,mmdit] [--configs small,mid] [--repeat 5]

Configs, the same for every model (``config(family, name)``; ``bench_sampling.py`` and ``bench_train.py`` use
them too): ``small`` = the family's S/2 preset on a 3x16x16 latent with 16 caption tokens; ``mid`` = the XL/2
preset at depth 4 / hidden 576 / 8 heads / 1024 caption channels / 120 tokens on an 8x32x32 latent. STDiT
(Open-Sora 1.0) has a fixed ``input_size``: it is set to the latent. STDiT2 gets v1.1's size conditioning
(num_frames, height, width, ar, fps) and an x_mask; STDiT3 its fps/height/width and x_mask (the families'
``example_inputs``, batch 1, every caption token but the last valid).

MMDiT (``mmdit``, Open-Sora 2.0) has its own table (``FAMILY_MID`` / ``FAMILY_LATENTS``): ``small`` = ``MMDiT-S``
on a packed 2x8x8 latent (32 tokens) with 16 text tokens; ``mid`` = ``OpenSora-v2-MMDiT`` (release layout:
separate q/k/v, liger RoPE, cond_in, T5 4096 / CLIP 768 inputs) at 2 double + 2 single blocks, hidden 768,
8 heads (head_dim 96, axes_dim 16/40/40) on an 8x32x32 latent (HunyuanVideo VAE, 16 channels packed 2x2:
2048 image tokens, a 256px-like clip of 29 frames) with 120 text tokens; i2v ``cond`` on (the family's
``example_inputs``: first latent frame given), batch 1.
"""
import argparse
import inspect
import statistics
import sys
import time

import numpy as np
import mindspore as ms  # before anything that could import decord
import torch

sys.path.insert(0, ".")
from opensora_dual.registry import build, get_family, resolve  # noqa: E402

PRESETS = {  # family: (small preset, mid preset)
    "stdit3": ("STDiT3-S/2", "STDiT3-XL/2"),
    "stdit2": ("STDiT2-S/2", "STDiT2-XL/2"),
    "stdit": ("STDiT-S/2", "STDiT-XL/2"),
    "mmdit": ("MMDiT-S", "OpenSora-v2-MMDiT"),
}
MID = dict(depth=4, hidden_size=576, num_heads=8, caption_channels=1024, model_max_length=120)
LATENTS = {"small": ((3, 16, 16), 16), "mid": ((8, 32, 32), 120)}   # latent T x H x W, caption tokens
# families that differ from the STDiT table: mid overrides, latents (unpacked T x H x W, text tokens)
FAMILY_MID = {"mmdit": dict(depth=2, depth_single_blocks=2, hidden_size=768, num_heads=8, axes_dim=(16, 40, 40))}
FAMILY_LATENTS = {"mmdit": {"small": ((2, 8, 8), 16), "mid": ((8, 32, 32), 120)}}
PACKED = ("mmdit",)   # example_inputs takes the packed token grid (latent / patch_size)


def config(family, name):
    """-> (preset, constructor overrides, latent (T, H, W), caption tokens) of config ``name`` for ``family``."""
    (T, H, W), L = FAMILY_LATENTS.get(family, LATENTS)[name]
    preset = PRESETS[family][0 if name == "small" else 1]
    overrides = dict(FAMILY_MID.get(family, MID)) if name == "mid" else {}
    if family == "stdit":   # fixed input size: the latent
        overrides["input_size"] = (T, H, W)
    return preset, overrides, (T, H, W), L


# STDiT3's table, as before (bench_train.py imports it)
CONFIGS = {name: config("stdit3", name) for name in LATENTS}


def example_inputs(family, kwargs, T, H, W, L, batch=1, seed=0):
    """The family's ``example_inputs`` at this latent (numpy)."""
    fn = get_family(family).extra["example_inputs"]
    params = inspect.signature(fn).parameters
    kw = dict(batch=batch, text_len=L)
    if family in PACKED:   # the token grid of the packed latent
        p = kwargs.get("patch_size", 2)
        H, W = H // p, W // p
    kw.update({k: v for k, v in dict(frames=T, height=H, width=W).items() if k in params})
    return fn(kwargs, np.random.default_rng(seed), **kw)


def timed(fn, warmup, repeat):
    first = time.perf_counter()
    fn()
    first = time.perf_counter() - first
    for _ in range(max(0, warmup - 1)):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def bench(family, name, warmup, repeat):
    preset, overrides, (T, H, W), L = config(family, name)
    _, kw = resolve(preset)
    kw.update(overrides)
    inputs = example_inputs(family, kw, T, H, W, L)
    torch.manual_seed(0)
    pt = build(preset, "pt", **overrides).eval()
    port = build(preset, "ms", **overrides)
    port.set_train(False)
    import converters

    converters.pt_to_ms(pt, port)
    pt_in = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}   # writable copies
    ms_in = {k: ms.Tensor(v) for k, v in inputs.items()}

    def run_pt():
        with torch.no_grad():
            pt(**pt_in)

    def run_ms():
        port(**ms_in).asnumpy()

    jitted = ms.jit(port.construct)

    def run_graph():
        jitted(**ms_in).asnumpy()

    tokens = T * (H // 2) * (W // 2)
    params = sum(p.numel() for p in pt.parameters())
    rows = []
    for label, fn in (("PyTorch eager", run_pt), ("MindSpore PyNative", run_ms), ("MindSpore graph (ms.jit)", run_graph)):
        first, med = timed(fn, warmup, repeat)
        rows.append((label, first, med))
    print(f"\n{name}: {preset} {overrides or ''} params {params / 1e6:.1f}M, latent {T}x{H}x{W} "
          f"({tokens} tokens), caption {L} tokens, batch 1, fp32, torch threads {torch.get_num_threads()}")
    print(f"  {'implementation':28s} {'first call':>11s} {'median':>9s} {'MS/PT':>7s}")
    base = rows[0][2]
    for label, first, med in rows:
        print(f"  {label:28s} {first:10.3f}s {med:8.3f}s {med / base:6.2f}x")
    return dict(model=preset, config=name, params=params, tokens=tokens, rows=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="stdit3,stdit2,stdit", help="families, comma-separated: "
                    + ", ".join(PRESETS))
    ap.add_argument("--configs", default="small,mid")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile-cache", default=None, metavar="DIR",
                    help="turn MindSpore's compile cache on (ms_impl.perf.enable_compile_cache) with this folder")
    args = ap.parse_args()
    models = args.models.split(",")
    configs = args.configs.split(",")
    for m in models:
        if m not in PRESETS:
            ap.error(f"unknown model family {m!r} (choose from {', '.join(PRESETS)})")
    for c in configs:
        if c not in LATENTS:
            ap.error(f"unknown config {c!r} (choose from {', '.join(LATENTS)})")
    if args.compile_cache:
        from ms_impl.perf import enable_compile_cache

        print(f"MindSpore compile cache: {enable_compile_cache(args.compile_cache)}")
    results = [bench(m, c, args.warmup, args.repeat) for m in models for c in configs]
    if len(results) > 1:
        print("\n| model | config | params | tokens | PT eager s | MS PyNative s (MS/PT) | MS graph s (MS/PT) "
              "| graph first call s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            (_, _, pt), (_, _, pn), (_, gfirst, g) = r["rows"]
            print(f"| {r['model']} | {r['config']} | {r['params'] / 1e6:.1f}M | {r['tokens']} | {pt:.3f} | "
                  f"{pn:.3f} ({pn / pt:.2f}x) | {g:.3f} ({g / pt:.2f}x) | {gfirst:.1f} |")
    print_targets(results)


# issue 11's targets (docs/performance.md): graph-mode forward MS/PT per config, and the mid graph compile
TARGETS = {("STDiT3-S/2", "small"): 2.5, ("STDiT3-XL/2", "mid"): 1.8}
COMPILE_TARGET_S = {("STDiT3-XL/2", "mid"): 10.0}


def target_line(name, value, limit, unit="MS/PT", fmt="{:.2f}"):
    """The one format every benchmark prints a target in: ``target <name>: MS/PT = X.XX (target <= Y) PASS|MISS``."""
    verdict = "PASS" if value <= limit else "MISS"
    return f"target {name}: {unit} = {fmt.format(value)} (target \u2264 {limit:g}) {verdict}"


def print_targets(results):
    for r in results:
        key = (r["model"], r["config"])
        (_, _, pt), _, (_, gfirst, g) = r["rows"]
        if key in TARGETS:
            print(target_line(f"{r['model']} {r['config']} graph forward", g / pt, TARGETS[key]))
        if key in COMPILE_TARGET_S:
            # the first graph call = compile + one forward; the compile alone is that minus a warm forward
            print(target_line(f"{r['model']} {r['config']} graph compile", gfirst - g, COMPILE_TARGET_S[key],
                              unit="seconds", fmt="{:.1f}"))


if __name__ == "__main__":
    main()
