"""VAE benchmark: encode and decode time, MindSpore vs PyTorch (ratio), and peak memory with and without
micro-batching, for the Open-Sora 1.2 video VAE (full-size ``OpenSoraVAE_V1_2``, random weights); with ``--vae
hunyuan|dc_ae`` the Open-Sora 2.0 autoencoders (HunyuanVideo causal 3D VAE, Video DC-AE) with tiling off / on.

    python benchmarks/bench_vae.py [--frames 17] [--size 32] [--model OpenSoraVAE_V1_2] [--repeat 1]
                                   [--micro-batch 4 none 1] [--chunk-batch 1] [--out outputs/bench/vae.json]
    python benchmarks/bench_vae.py --vae hunyuan [--model HunyuanVAE] [--frames 17] [--size 64]
                                   [--tiling off on] [--tile-size 32] [--tile-frames 8]
    python benchmarks/bench_vae.py --vae dc_ae [--model DC-AE-f32t4c128] [--frames 16] [--size 64] ...

``--vae hunyuan|dc_ae``: "off" builds the preset with spatial and temporal tiling off; "on" with both on and tiles
smaller than the clip so the tiling paths actually run (the release tiles, 256 px / 64 or 32 frames, are larger
than a small CPU clip): ``--tile-size`` px (default size / 2) and ``--tile-frames`` (default: HunyuanVAE (frames
- 1) / 2, i.e. tiles of that + 1 frames; DC-AE frames / 2), overlap the preset's 0.25. HunyuanVAE encodes with
``sample_posterior=False`` (the mean: no random draw); DC-AE runs its inference ``encode`` / ``decode``.

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
DEFAULT_OUT = os.path.join(ROOT, "outputs", "bench", "vae.json")


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


def _hwm_mb():
    """This process's peak resident memory (VmHWM), imports and weights included."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def tiling_overrides(args, on):
    """Constructor overrides of the 2.0 VAEs: tiling off, or on with tiles smaller than the clip."""
    tile = args.tile_size or args.size // 2
    if args.vae == "hunyuan":
        tframes = args.tile_frames or max(1, (args.frames - 1) // 2)
        return dict(use_spatial_tiling=on, use_temporal_tiling=on,
                    **(dict(sample_size=tile, sample_tsize=tframes) if on else {}))
    tframes = args.tile_frames or max(4, args.frames // 2)
    return dict(use_spatial_tiling=on, use_temporal_tiling=on,
                **(dict(spatial_tile_size=tile, temporal_tile_size=tframes) if on else {}))


def child(args):
    """One configuration; prints a JSON line."""
    import numpy as np

    if args.backend == "ms":
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
        if args.compile_cache:
            sys.path.insert(0, ROOT)
            from ms_impl.perf import enable_compile_cache

            enable_compile_cache(args.compile_cache)
    import torch

    sys.path.insert(0, ROOT)
    from opensora_dual.registry import build

    torch.manual_seed(0)
    t0 = time.perf_counter()
    if args.vae == "opensora":
        vae = build(args.model, args.backend)
        mb = None if args.micro_batch == "none" else int(args.micro_batch)
        vae.spatial_vae.micro_batch_size = mb
        if args.backend == "ms":
            vae.temporal_chunk_batch = args.chunk_batch
            if args.jit:
                vae.set_jit(True)
            if args.conv_impl:
                vae.set_conv_impl(args.conv_impl)
    else:
        vae = build(args.model, args.backend, **tiling_overrides(args, args.micro_batch == "on"))
    if args.backend == "ms":
        vae.set_train(False)
    else:
        vae.eval()
    build_s = time.perf_counter() - t0
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.frames, args.size, args.size)).astype(np.float32)

    enc_kw = dict(sample_posterior=False) if args.vae == "hunyuan" else {}
    dec_kw = dict(num_frames=args.frames) if args.vae == "opensora" else {}
    if args.backend == "pt":
        xt = torch.from_numpy(x)

        def enc():
            with torch.no_grad():
                return vae.encode(xt, **enc_kw)

        def dec(z):
            with torch.no_grad():
                return vae.decode(z, **dec_kw)

        def sync(t):
            return t
    else:
        xt = ms.Tensor(x)

        def enc():
            return vae.encode(xt, **enc_kw)

        def dec(z):
            return vae.decode(z, **dec_kw)

        def sync(t):
            t.asnumpy()
            return t

    t0 = time.perf_counter()
    with PeakRSS() as mem:
        z = sync(enc())
        sync(dec(z))          # warm-up (also the memory peak of one encode+decode)
    warmup_s = time.perf_counter() - t0
    te, td = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        z = sync(enc())
        te.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sync(dec(z))
        td.append(time.perf_counter() - t0)
    params = sum(int(np.prod(p.shape)) for p in (vae.parameters() if args.backend == "pt"
                                                  else vae.get_parameters()))
    print(json.dumps(dict(backend=args.backend, micro_batch=args.micro_batch, chunk_batch=args.chunk_batch,
                          build_s=build_s, warmup_s=warmup_s, jit=bool(args.jit), params=params, latent=list(z.shape), peak_rss_mb=_hwm_mb(), encode_s=min(te), decode_s=min(td),
                          peak_act_mb=(mem.peak - mem.base) / 2 ** 20, rss_after_build_mb=mem.base / 2 ** 20)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae", choices=("opensora", "hunyuan", "dc_ae"), default="opensora",
                    help="opensora: OpenSoraVAE_V1_2 micro-batching; hunyuan / dc_ae: Open-Sora 2.0 VAEs, --tiling")
    ap.add_argument("--model", default=None, help="preset (default: OpenSoraVAE_V1_2 / HunyuanVAE / "
                    "DC-AE-f32t4c128 by --vae)")
    ap.add_argument("--frames", type=int, default=None, help="default 17 (16 for dc_ae)")
    ap.add_argument("--size", type=int, default=None, help="default 32 (64 for hunyuan / dc_ae)")
    ap.add_argument("--tiling", nargs="+", default=["off", "on"], choices=("off", "on"),
                    help="--vae hunyuan/dc_ae: tiling settings to try")
    ap.add_argument("--tile-size", type=int, default=None, help="spatial tile in px when tiling is on (size / 2)")
    ap.add_argument("--tile-frames", type=int, default=None, help="temporal tile in frames when tiling is on")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--micro-batch", nargs="+", default=["4", "none", "1"],
                    help="spatial micro-batch sizes to try ('none' = all frames in one call)")
    ap.add_argument("--chunk-batch", type=int, default=1, help="MindSpore temporal_chunk_batch")
    ap.add_argument("--backends", nargs="+", default=["pt", "ms"])
    ap.add_argument("--jit", action="store_true", help="MindSpore: compile the encoder/decoder networks (set_jit); "
                    "the compile is paid in the warm-up, reported as build + warm-up")
    ap.add_argument("--conv-impl", default=None, help="MindSpore set_conv_impl value (default: the CPU defaults)")
    ap.add_argument("--compile-cache", default=None, metavar="DIR", help="MindSpore compile cache folder "
                    "(ms_impl.perf.enable_compile_cache), with --jit")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    args.model = args.model or {"opensora": "OpenSoraVAE_V1_2", "hunyuan": "HunyuanVAE",
                                "dc_ae": "DC-AE-f32t4c128"}[args.vae]
    args.frames = args.frames or (16 if args.vae == "dc_ae" else 17)
    args.size = args.size or (32 if args.vae == "opensora" else 64)
    if args.vae != "opensora" and not args.child:
        args.micro_batch = args.tiling   # the per-process switch travels in --micro-batch
    if args.child:
        args.micro_batch = args.micro_batch[0]
        return child(args)

    rows = []
    switch = "micro_batch" if args.vae == "opensora" else "tiling"
    env = dict(os.environ, GLOG_v="3", HF_HUB_OFFLINE="1", PYTHONPATH=ROOT)
    for mb in args.micro_batch:
        for be in args.backends:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--backend", be, "--model", args.model,
                   "--frames", str(args.frames), "--size", str(args.size), "--repeat", str(args.repeat),
                   "--micro-batch", mb, "--chunk-batch", str(args.chunk_batch), "--vae", args.vae]
            cmd += ["--jit"] if args.jit else []
            cmd += ["--conv-impl", args.conv_impl] if args.conv_impl else []
            cmd += ["--compile-cache", args.compile_cache] if args.compile_cache else []
            cmd += ["--tile-size", str(args.tile_size)] if args.tile_size else []
            cmd += ["--tile-frames", str(args.tile_frames)] if args.tile_frames else []
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if res.returncode or not line:
                print(f"{be} micro_batch={mb}: FAILED\n{res.stderr[-2000:]}")
                continue
            rows.append(json.loads(line[-1]))
            r = rows[-1]
            print(f"{be} {switch}={mb:>4}: encode {r['encode_s']:.2f}s decode {r['decode_s']:.2f}s "
                  f"peak act. {r['peak_act_mb']:.0f} MB, process peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    if args.vae != "opensora":
        return report_tiling(args, rows)
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
    print_targets(args, rows)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(model=args.model, frames=args.frames, size=args.size, rows=rows), f, indent=1)
    print(f"written {args.out}")


def target_line(name, value, limit, unit="MS/PT", fmt="{:.2f}"):
    """``target <name>: MS/PT = X.XX (target <= Y) PASS|MISS`` (the same line as bench_dit.target_line)."""
    return f"target {name}: {unit} = {fmt.format(value)} (target \u2264 {limit:g}) {'PASS' if value <= limit else 'MISS'}"


VAE_TARGET = 3.0   # issue 11: encode and decode <= 3x PyTorch at 17x32x32 and 17x64x64


def print_targets(args, rows):
    """One line per target (the upstream micro_batch 4 row, else the first one measured on both backends)."""
    pairs = [(mb, next((r for r in rows if r["backend"] == "pt" and r["micro_batch"] == mb), None),
              next((r for r in rows if r["backend"] == "ms" and r["micro_batch"] == mb), None))
             for mb in args.micro_batch]
    pairs = [p for p in pairs if p[1] and p[2]]
    if not pairs:
        return
    mb, pt, ms_ = next((p for p in pairs if p[0] == "4"), pairs[0])
    tag = f"VAE {args.frames}x{args.size}x{args.size} micro_batch {mb}{' jit' if args.jit else ''}"
    print(target_line(f"{tag} encode", ms_["encode_s"] / pt["encode_s"], VAE_TARGET))
    print(target_line(f"{tag} decode", ms_["decode_s"] / pt["decode_s"], VAE_TARGET))
    print(f"  (MindSpore peak act. {ms_['peak_act_mb']:.0f} MB, process peak RSS {ms_['peak_rss_mb']:.0f} MB; "
          f"build + warm-up {ms_['build_s'] + ms_.get('warmup_s', 0):.1f} s)")


def report_tiling(args, rows):
    """The --vae hunyuan / dc_ae table (tiling off / on) and the JSON file."""
    r0 = rows[0] if rows else {}
    tile = args.tile_size or args.size // 2
    tf = args.tile_frames or (max(1, (args.frames - 1) // 2) if args.vae == "hunyuan" else max(4, args.frames // 2))
    print(f"\n{args.model} ({r0.get('params', 0) / 1e6:.1f}M params, random weights), video "
          f"1x3x{args.frames}x{args.size}x{args.size} -> latent {'x'.join(map(str, r0.get('latent', [])))}, fp32, "
          f"CPU ({os.cpu_count()} cores), best of {args.repeat}; tiling on = spatial {tile} px + temporal "
          f"{tf}{' + 1' if args.vae == 'hunyuan' else ''} frame tiles, overlap 0.25")
    print("| tiling | PT encode s | MS encode s | MS/PT | PT decode s | MS decode s | MS/PT | PT peak act. MB "
          "| MS peak act. MB | PT process peak RSS MB | MS process peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mb in args.micro_batch:
        pt = next((r for r in rows if r["backend"] == "pt" and r["micro_batch"] == mb), None)
        ms_ = next((r for r in rows if r["backend"] == "ms" and r["micro_batch"] == mb), None)
        if not (pt and ms_):
            continue
        print(f"| {mb} | {pt['encode_s']:.2f} | {ms_['encode_s']:.2f} | {ms_['encode_s'] / pt['encode_s']:.2f} "
              f"| {pt['decode_s']:.2f} | {ms_['decode_s']:.2f} | {ms_['decode_s'] / pt['decode_s']:.2f} "
              f"| {pt['peak_act_mb']:.0f} | {ms_['peak_act_mb']:.0f} | {pt['peak_rss_mb']:.0f} "
              f"| {ms_['peak_rss_mb']:.0f} |")
    out = args.out if args.out != DEFAULT_OUT else os.path.join(ROOT, "outputs", "bench", f"vae_{args.vae}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(model=args.model, frames=args.frames, size=args.size, tile_size=tile, tile_frames=tf,
                       rows=rows), f, indent=1)
    print(f"written {out}")


if __name__ == "__main__":
    main()
