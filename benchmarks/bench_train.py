"""Training benchmark (prints numbers and ratios, never pass/fail).

1. Seconds per train step (forward + backward + AdamW + EMA), MindSpore ``TrainStep`` (compiled loss+grad) vs the
   PyTorch reference ``TrainStep``, at the small and mid configs of ``bench_dit.py`` (STDiT3); the first MindSpore step
   (compile) reported apart from the median of the later ones.
2. Peak memory (VmHWM of the process) of each backend with recompute off and on: every measurement runs in its own
   process, so a peak is that run's alone.
3. Data-loader throughput: videos/s of ``VariableVideoTextDataset`` reading the synthetic 144p dataset (PyAV
   decode, temporal crop, resize-crop), against the step time.

    .venv/bin/python benchmarks/bench_train.py [--configs small,mid] [--steps 4] [--batch 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vm_hwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_step(args):
    """One backend, one config, recompute on/off: per-step times and this process's peak memory (JSON line)."""
    if args.backend == "ms":
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import torch
    from bench_dit import CONFIGS  # STDiT3's small / mid configs

    import converters
    from opensora_dual.registry import build
    from opensora_dual.training import TrainBatchNoise
    from pt_reference.init_utils import fill_zero_parameters

    preset, overrides, (T, H, W), L = CONFIGS[args.config]
    torch.manual_seed(0)
    pt = build(preset, "pt", **overrides)
    fill_zero_parameters(pt)
    if args.backend == "pt":
        from pt_reference.training.train_step import TrainStep

        model = pt
    else:
        from ms_impl.training.train_step import TrainStep

        model = build(preset, "ms", **overrides)
        converters.pt_to_ms(pt, model)
        del pt
    step = TrainStep(model, 1e-4, recompute=args.recompute)
    rng = np.random.default_rng(0)
    B, cap = args.batch, model.y_embedder.y_embedding.shape[1]
    Lm = model.y_embedder.y_embedding.shape[0]
    batch = dict(x0=rng.standard_normal((B, 4, T, H, W)).astype(np.float32),
                 y=rng.standard_normal((B, 1, Lm, cap)).astype(np.float32),
                 mask=(np.arange(Lm)[None] < np.full((B, 1), max(1, L // 2))).astype(np.int64),
                 fps=np.full(B, 24.0, np.float32), height=np.full(B, H * 8.0, np.float32),
                 width=np.full(B, W * 8.0, np.float32), num_frames=np.full(B, 51.0, np.float32))
    times = []
    for i in range(args.steps):
        noise = TrainBatchNoise.draw(rng, batch["x0"].shape, batch["height"], batch["width"], batch["num_frames"])
        t0 = time.perf_counter()
        out = step.step(batch, noise)
        float(out["loss"])
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(first=times[0], median=float(np.median(times[1:])) if len(times) > 1 else times[0],
                          peak_mb=vm_hwm_mb(), loss=float(out["loss"]))), flush=True)


def child_loader(args):
    sys.path.insert(0, ROOT)
    from opensora_dual.data import VariableVideoTextDataset, make_synthetic_dataset, read_table

    with tempfile.TemporaryDirectory() as d:
        csv = make_synthetic_dataset(d, n_videos=args.videos, n_images=0, sizes=((144, 256),), num_frames=(60,))
        ds = VariableVideoTextDataset(read_table(csv))
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds.get(i, 51, 144, 256, rng=rng)
        dt = time.perf_counter() - t0
    print(json.dumps(dict(videos=len(ds), seconds=dt, per_s=len(ds) / dt)), flush=True)


def run_child(extra):
    env = dict(os.environ, GLOG_v="3", HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, os.path.abspath(__file__), *extra], capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,mid")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--child", choices=["step", "loader"])
    ap.add_argument("--backend", choices=["pt", "ms"])
    ap.add_argument("--config")
    ap.add_argument("--recompute", action="store_true")
    args = ap.parse_args()
    if args.child == "step":
        return child_step(args)
    if args.child == "loader":
        return child_loader(args)
    t_all = time.time()
    print(f"== train step (fwd + bwd + AdamW + EMA), batch {args.batch}, {args.steps} steps, fp32, "
          f"load average {os.getloadavg()[0]:.1f} ==")
    print(f"{'config':<7} {'recompute':<9} {'PT median s':>11} {'MS median s':>11} {'MS/PT':>6} "
          f"{'MS first s':>10} {'PT peak MB':>10} {'MS peak MB':>10}")
    medians = {}
    for name in args.configs.split(","):
        for rc in (False, True):
            res = {}
            for backend in ("pt", "ms"):
                extra = ["--child", "step", "--backend", backend, "--config", name, "--steps", str(args.steps),
                         "--batch", str(args.batch)] + (["--recompute"] if rc else [])
                res[backend] = run_child(extra)
            if any("error" in r for r in res.values()):
                print(f"{name:<7} {str(rc):<9} error: {res}")
                continue
            pt, ms_ = res["pt"], res["ms"]
            medians[(name, rc)] = ms_["median"]
            print(f"{name:<7} {str(rc):<9} {pt['median']:>11.3f} {ms_['median']:>11.3f} "
                  f"{ms_['median'] / pt['median']:>6.2f} {ms_['first']:>10.1f} {pt['peak_mb']:>10.0f} "
                  f"{ms_['peak_mb']:>10.0f}")
    print("\n== data loader: synthetic 144p videos, 51 frames each (PyAV decode, crop, resize-crop) ==")
    ld = run_child(["--child", "loader", "--videos", str(args.videos)])
    if "error" in ld:
        print(f"error: {ld['error']}")
    else:
        print(f"{ld['videos']} videos in {ld['seconds']:.2f} s: {ld['per_s']:.2f} videos/s")
        for (name, rc), m in medians.items():
            need = args.batch / m
            print(f"  {name} (recompute {rc}): a MindSpore step consumes {need:.2f} videos/s -> the loader is "
                  f"{ld['per_s'] / need:.1f}x what the step needs (one process, no workers)")
    print(f"\nbench_train wall time {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
