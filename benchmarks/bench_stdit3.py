"""STDiT3 forward time: PyTorch eager vs MindSpore PyNative vs MindSpore graph (ms.jit), with MS/PT ratios.

Prints numbers, never pass/fail. Medians over ``--repeat`` runs after ``--warmup`` runs; the first graph-mode
call (compile) is reported separately. The machine is noisy (2 shared cores): read the ratios.

    .venv/bin/python benchmarks/bench_stdit3.py [--repeat 5] [--configs small,mid]
"""
import argparse
import statistics
import sys
import time

import numpy as np
import mindspore as ms  # before anything that could import decord
import torch

sys.path.insert(0, ".")
from opensora_dual.registry import build, get_family, resolve  # noqa: E402

CONFIGS = {
    # name: (preset, overrides, latent T x H x W, caption tokens)
    "small": ("STDiT3-S/2", {}, (3, 16, 16), 16),
    "mid": ("STDiT3-XL/2", dict(depth=4, hidden_size=576, num_heads=8, caption_channels=1024,
                                model_max_length=120), (8, 32, 32), 120),
}


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


def bench(name, warmup, repeat):
    preset, overrides, (T, H, W), L = CONFIGS[name]
    _, kw = resolve(preset)
    kw.update(overrides)
    fam = get_family("stdit3")
    inputs = fam.extra["example_inputs"](kw, np.random.default_rng(0), batch=1, frames=T, height=H, width=W,
                                         text_len=L)
    torch.manual_seed(0)
    pt = build(preset, "pt", **overrides).eval()
    port = build(preset, "ms", **overrides)
    import converters

    converters.pt_to_ms(pt, port)
    pt_in = {k: torch.from_numpy(v) for k, v in inputs.items()}
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,mid")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for name in args.configs.split(","):
        bench(name, args.warmup, args.repeat)


if __name__ == "__main__":
    main()
