"""Analytic cost model (``opensora_dual.cost_model``): predicted vs published step times, a per-preset summary, one
case's breakdown, and this machine's CPU check. Prints numbers; the model and its documented misses are in
``docs/cost_model.md``.

    .venv/bin/python benchmarks/cost_model.py                         # calibration table + per-preset summary
    .venv/bin/python benchmarks/cost_model.py --device cpu [--measure] # CPU: measured matmul peak, docs' step times
    .venv/bin/python benchmarks/cost_model.py --preset STDiT3-XL/2 --frames 51 --height 720 --width 1280 \\
        --batch 1 --device ascend                                      # one case: ops by module group
"""
import argparse
import sys
import time

sys.path.insert(0, ".")
from opensora_dual import cost_model as cm  # noqa: E402
from opensora_dual.registry import preset_names  # noqa: E402


def calibration():
    u = cm.calibrate()
    print(f"\n== Predicted vs published (calibrated on {cm.CALIBRATION_ROW}: utilisation {u:.3f} of peak; "
          f"attention at {cm.ATTENTION_EFFICIENCY} of the linear rate; fp32 at half the bf16 peak) ==")
    print(f"{'row':62s} {'unit':>6s} {'published':>10s} {'predicted':>10s} {'ratio':>6s}  within 25%?")
    unit = {"infer_step": "s/step", "infer_total": "s/vid", "train_step": "s/step", "train_sample": "s/smp"}
    rows = cm.calibration_table()
    for r in rows:
        mark = "calibration" if r["calibration"] else ("yes" if r["within"] else "NO (known miss)"
                                                       if r["known_miss"] else "NO (UNEXPECTED)")
        print(f"{r['label']:62s} {unit[r['kind']]:>6s} {r['published']:10.3f} {r['predicted']:10.3f} "
              f"{r['ratio']:6.2f}  {mark}")
    n_in = sum(r["within"] for r in rows)
    print(f"{n_in} of {len(rows)} rows within 25% (calibration row included). Misses and why:")
    for r in rows:
        if not r["within"]:
            print(f"  - {r['key']}: {r['known_miss'] or 'not a known miss'}")


def summary():
    print("\n== Per-preset summary (forward at the family's default case, batch 1, bf16; activations of one "
          "training forward) ==")
    print(f"{'preset':32s} {'params':>15s} {'case':>22s} {'tokens':>7s} {'GFLOPs/fwd':>12s} {'act GB':>8s} "
          f"{'act GB rc':>9s}")
    for name in preset_names():
        r = cm.summary(name)
        if "params" not in r:
            print(f"{name:32s} {'-':>15s}  {r['note']}")
            continue
        print(f"{name:32s} {r['params']:15,d} {r['case']:>22s} {r.get('tokens', ''):>7} {r['gflops']:12.1f} "
              f"{r.get('act_gb', float('nan')):8.2f} {r.get('act_rc_gb', float('nan')):9.2f}")


def one_case(args):
    fam, _ = cm._family(args.preset)
    case = cm.Case(args.batch, args.frames, args.height, args.width, args.text_len, args.cfg, args.dtype)
    if fam in cm.DIT_FAMILIES:
        t = cm.inference_step(args.preset, case)
        what = f"one sampler step ({cm.cfg_passes(args.preset, case)} CFG passes, batch {args.batch})"
    elif fam in ("t5", "clip_text"):
        t = cm.text_ops(args.preset, args.batch, args.text_len)
        what = "one encode"
    else:
        t = cm.vae_ops(args.preset, args.vae_mode, args.batch, args.frames, args.height, args.width)
        what = f"VAE {args.vae_mode}"
    print(f"\n== {args.preset}: {what}, {args.frames}x{args.height}x{args.width}, {args.dtype} ==")
    groups = {}
    for o in t.ops:
        parts = o.name.split(".")
        g = ".".join(p for p in parts[:3] if not p.isdigit()) if len(parts) > 2 else o.name
        d = groups.setdefault((g, o.kind), [0.0, 0.0])
        d[0] += o.flops
        d[1] += o.act_elems
    print(f"{'module group':50s} {'kind':>10s} {'GFLOPs':>12s} {'saved MB':>10s}")
    for (g, k), (f, a) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{g:50s} {k:>10s} {f / 1e9:12.1f} {a * cm.DTYPE_BYTES[args.dtype] / 1e6:10.1f}")
    kinds = t.by_kind()
    print("total GFLOPs by kind: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in kinds.items()))
    print(f"parameters: {t.param_total():,d}")
    if fam in cm.DIT_FAMILIES:
        fwd = cm.dit_forward(args.preset, case)
        print(f"train step (bs {args.batch}): {sum(cm.train_flops(fwd, False).values()) / 1e12:.1f} TFLOPs, "
              f"{sum(cm.train_flops(fwd, True).values()) / 1e12:.1f} with recompute; activations "
              f"{fwd.activation_bytes(args.dtype) / 1e9:.2f} GB, {fwd.activation_bytes(args.dtype, True) / 1e9:.2f} GB "
              f"with recompute (estimate)")
    if args.device != "cpu":
        print(f"predicted on {cm.DEVICES[args.device].name}: {cm.seconds(kinds, args.device, args.dtype):.3f} s")
    else:
        peak = measure_cpu_peak()
        print(f"predicted on this CPU ({peak / 1e9:.1f} GFLOP/s fp32): "
              f"{cm.seconds(kinds, 'cpu', 'fp32', cpu_peak=peak):.3f} s")


def measure_cpu_peak():
    """This machine's fp32 matmul rate (torch), the best of a bench_dit-sized and a larger product."""
    import torch

    best = 0.0
    for m, k, n in ((2048, 576, 2304), (2048, 2048, 2048)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            a @ b
            reps += 1
        best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - t0))
    return best


def measure_small_forward():
    """One live PyTorch forward of bench_dit's small STDiT3 config (median of 3)."""
    import numpy as np
    import torch

    from opensora_dual.registry import build, get_family, resolve

    _, kw = resolve("STDiT3-S/2")
    inputs = get_family("stdit3").extra["example_inputs"](kw, np.random.default_rng(0), batch=1, frames=3,
                                                           height=16, width=16, text_len=16)
    model = build("STDiT3-S/2", "pt").eval()
    pt_in = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
    times = []
    with torch.no_grad():
        model(**pt_in)
        for _ in range(3):
            t0 = time.perf_counter()
            model(**pt_in)
            times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def cpu(args):
    import torch

    peak = measure_cpu_peak()
    print(f"\n== This CPU: fp32 matmul rate {peak / 1e9:.1f} GFLOP/s (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), utilisation 1 vs that rate, attention at "
          f"{cm.ATTENTION_EFFICIENCY} (math path) ==")
    print(f"{'config':48s} {'measured s':>11s} {'predicted s':>12s} {'ratio':>6s}  source")
    for row in cm.MEASURED_CPU:
        pred = cm.cpu_predict(row, peak)
        print(f"{row.label:48s} {row.measured:11.3f} {pred:12.3f} {pred / row.measured:6.2f}  {row.source}")
    if args.measure:
        row = cm.CpuRow("live", "STDiT3-S/2 small forward (live)", "STDiT3-S/2", {}, (3, 16, 16), 16, 1, "forward",
                        measure_small_forward(), "measured now")
        pred = cm.cpu_predict(row, peak)
        print(f"{row.label:48s} {row.measured:11.3f} {pred:12.3f} {pred / row.measured:6.2f}  {row.source}")
    mem = cm.train_memory("STDiT3-XL/2", cm.Case(batch=2, text_len=120, dtype="fp32"), latent=(8, 32, 32),
                          flash=False, **cm._MID)
    print(f"\nmid train config (STDiT3 depth 4 / hidden 576, batch 2, fp32): activations "
          f"{mem['activations'] / 1e9:.2f} GB, {mem['activations_recompute'] / 1e9:.2f} GB with recompute; model state "
          f"{mem['state'] / 1e9:.2f} GB (20 B/param). Measured process peaks (docs/training.md): "
          f"{cm.MEASURED_TRAIN_PEAK_GB['no recompute']} GB / {cm.MEASURED_TRAIN_PEAK_GB['recompute']} GB "
          f"(they include the Python/torch runtime and allocator slack).")
    print("Small configs are per-op overhead (Python, kernel launches), not FLOPs: the model predicts milliseconds.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset")
    ap.add_argument("--frames", type=int, default=51)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--text-len", type=int, default=None)
    ap.add_argument("--cfg", type=int, default=None, help="forward passes per sampler step (default: the release's)")
    ap.add_argument("--dtype", default="bf16", choices=sorted(cm.DTYPE_BYTES))
    ap.add_argument("--device", default=None, choices=sorted(cm.DEVICES))
    ap.add_argument("--vae-mode", default="decode", choices=("encode", "decode", "both"))
    ap.add_argument("--top", type=int, default=25, help="module groups to print for --preset")
    ap.add_argument("--measure", action="store_true", help="--device cpu: also time one small forward live")
    args = ap.parse_args()
    if args.preset:
        args.device = args.device or "ascend"
        one_case(args)
        return
    if args.device == "cpu":
        cpu(args)
        return
    calibration()
    summary()


if __name__ == "__main__":
    main()
