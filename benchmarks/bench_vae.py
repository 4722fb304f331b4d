"""VAE benchmark: encode and decode time, MindSpore vs PyTorch (ratio), and peak memory with and without
micro-batching, for the Open-Sora 1.2 video VAE (full-size ``OpenSoraVAE_V1_2``, random weights).

    python benchmarks/bench_vae.py [--frames 17] [--size 32] [--model OpenSoraVAE_V1_2] [--repeat 1]
                                   [--micro-batch 4 none 1] [--chunk-batch 1] [--out outputs/bench/vae.json]

Each configuration runs in a fresh process (so peak memory is its own): build, one warm-up encode+decode,
then ``--repeat`` timed encode / decode. "peak act." is the peak resident memory *during* encode+decode above
the resident memory after the build (a 5 ms sampler thread over /proc/self/statm), i.e. activations and
workspace, not weights. The MindSpore side runs in PyNative mode with the im2col conv path (CPU default).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    def __init__(self):
        self.base, self.peak, self._stop = _rss(), 0, False

    def __enter__(self):
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *a):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss())


def child(args):
    """One configuration; prints a JSON line."""
    import numpy as np

    if args.backend == "ms":
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    import torch

    sys.path.insert(0, ROOT)
    from opensora_dual.registry import build

    torch.manual_seed(0)
    t0 = time.perf_counter()
    vae = build(args.model, args.backend)
    mb = None if args.micro_batch == "none" else int(args.micro_batch)
    vae.spatial_vae.micro_batch_size = mb
    if args.backend == "ms":
        vae.temporal_chunk_batch = args.chunk_batch
        vae.set_train(False)
    else:
        vae.eval()
    build_s = time.perf_counter() - t0
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.frames, args.size, args.size)).astype(np.float32)

    if args.backend == "pt":
        xt = torch.from_numpy(x)

        def enc():
            with torch.no_grad():
                return vae.encode(xt)

        def dec(z):
            with torch.no_grad():
                return vae.decode(z, num_frames=args.frames)

        def sync(t):
            return t
    else:
        xt = ms.Tensor(x)

        def enc():
            return vae.encode(xt)

        def dec(z):
            return vae.decode(z, num_frames=args.frames)

        def sync(t):
            t.asnumpy()
            return t

    with PeakRSS() as mem:
        z = sync(enc())
        sync(dec(z))          # warm-up (also the memory peak of one encode+decode)
    te, td = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        z = sync(enc())
        te.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sync(dec(z))
        td.append(time.perf_counter() - t0)
    print(json.dumps(dict(backend=args.backend, micro_batch=args.micro_batch, chunk_batch=args.chunk_batch,
                          build_s=build_s, encode_s=min(te), decode_s=min(td),
                          peak_act_mb=(mem.peak - mem.base) / 2 ** 20, rss_after_build_mb=mem.base / 2 ** 20)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="OpenSoraVAE_V1_2")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--micro-batch", nargs="+", default=["4", "none", "1"],
                    help="spatial micro-batch sizes to try ('none' = all frames in one call)")
    ap.add_argument("--chunk-batch", type=int, default=1, help="MindSpore temporal_chunk_batch")
    ap.add_argument("--backends", nargs="+", default=["pt", "ms"])
    ap.add_argument("--out", default=os.path.join(ROOT, "outputs", "bench", "vae.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.child:
        args.micro_batch = args.micro_batch[0]
        return child(args)

    rows = []
    env = dict(os.environ, GLOG_v="3", HF_HUB_OFFLINE="1", PYTHONPATH=ROOT)
    for mb in args.micro_batch:
        for be in args.backends:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--backend", be, "--model", args.model,
                   "--frames", str(args.frames), "--size", str(args.size), "--repeat", str(args.repeat),
                   "--micro-batch", mb, "--chunk-batch", str(args.chunk_batch)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if res.returncode or not line:
                print(f"{be} micro_batch={mb}: FAILED\n{res.stderr[-2000:]}")
                continue
            rows.append(json.loads(line[-1]))
            r = rows[-1]
            print(f"{be} micro_batch={mb:>4}: encode {r['encode_s']:.2f}s decode {r['decode_s']:.2f}s "
                  f"peak act. {r['peak_act_mb']:.0f} MB", flush=True)
    print(f"\n{args.model}, video 1x3x{args.frames}x{args.size}x{args.size}, fp32, CPU "
          f"({os.cpu_count()} cores), best of {args.repeat}")
    print("| micro_batch | PT encode s | MS encode s | MS/PT | PT decode s | MS decode s | MS/PT | PT peak act. MB "
          "| MS peak act. MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mb in args.micro_batch:
        pt = next((r for r in rows if r["backend"] == "pt" and r["micro_batch"] == mb), None)
        ms_ = next((r for r in rows if r["backend"] == "ms" and r["micro_batch"] == mb), None)
        if not (pt and ms_):
            continue
        print(f"| {mb} | {pt['encode_s']:.2f} | {ms_['encode_s']:.2f} | {ms_['encode_s'] / pt['encode_s']:.2f} "
              f"| {pt['decode_s']:.2f} | {ms_['decode_s']:.2f} | {ms_['decode_s'] / pt['decode_s']:.2f} "
              f"| {pt['peak_act_mb']:.0f} | {ms_['peak_act_mb']:.0f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(model=args.model, frames=args.frames, size=args.size, rows=rows), f, indent=1)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
