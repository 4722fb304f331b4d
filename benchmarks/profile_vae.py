"""Where the Open-Sora 1.2 VAE's time goes: each stage (spatial 2D encode, temporal encode, temporal decode,
spatial 2D decode) timed on both twins, and the MindSpore side per conv implementation and with the stages
compiled (``jit``). Best of ``--repeat`` after a warm-up, seconds.

    .venv/bin/python benchmarks/profile_vae.py [--frames 17] [--size 32] [--impls im2col,unfold] [--jit off,on]
"""
import argparse
import sys
import time

import numpy as np
import mindspore as ms
import torch

sys.path.insert(0, ".")
from opensora_dual.registry import build  # noqa: E402
from _timing import best_ms  # noqa: E402


def stages_pt(vae, x):
    with torch.no_grad():
        xz = vae.spatial_vae.encode(x)
        post = vae.temporal_vae.encode(xz)
        z = post.mode()
        xz2 = vae.temporal_vae.decode(z, num_frames=x.shape[2])
    return dict(
        spatial_encode=lambda: vae.spatial_vae.encode(x),
        temporal_encode=lambda: vae.temporal_vae.encode(xz).mode(),
        temporal_decode=lambda: vae.temporal_vae.decode(z, num_frames=x.shape[2]),
        spatial_decode=lambda: vae.spatial_vae.decode(xz2))


def stages_ms(vae, x):
    xz = vae.spatial_vae.encode(x)
    z = vae.temporal_vae.encode(xz).mode()
    xz2 = vae.temporal_vae.decode(z, num_frames=x.shape[2])
    return dict(
        spatial_encode=lambda: vae.spatial_vae.encode(x).asnumpy(),
        temporal_encode=lambda: vae.temporal_vae.encode(xz).mode().asnumpy(),
        temporal_decode=lambda: vae.temporal_vae.decode(z, num_frames=x.shape[2]).asnumpy(),
        spatial_decode=lambda: vae.spatial_vae.decode(xz2).asnumpy())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--model", default="OpenSoraVAE_V1_2")
    ap.add_argument("--impls", default="im2col,unfold")
    ap.add_argument("--jit", default="off,on")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    pt = build(args.model, "pt").eval()
    port = build(args.model, "ms")
    port.set_train(False)
    import converters

    converters.pt_to_ms(pt, port)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.frames, args.size, args.size)).astype(np.float32)
    cols = {"PyTorch": {k: best_ms(f, args.repeat) / 1e3 for k, f in stages_pt(pt, torch.from_numpy(x)).items()}}
    for impl in args.impls.split(","):
        for jit in args.jit.split(","):
            port.set_conv_impl(impl)
            if hasattr(port, "set_jit"):
                port.set_jit(jit == "on")
            elif jit == "on":
                continue
            t0 = time.perf_counter()
            fns = stages_ms(port, ms.Tensor(x))
            first = time.perf_counter() - t0
            cols[f"MS {impl} jit={jit}"] = dict({k: best_ms(f, args.repeat) / 1e3 for k, f in fns.items()}, first_call=first)
            print(f"done {impl} jit={jit} (first calls {first:.1f}s)", flush=True)
    names = list(cols)
    print(f"\n{args.model} 1x3x{args.frames}x{args.size}x{args.size}, fp32, best of {args.repeat}, seconds (MS/PT)")
    print("| stage | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for stage in ("spatial_encode", "temporal_encode", "temporal_decode", "spatial_decode", "first_call"):
        row = f"| {stage} |"
        for n in names:
            v = cols[n].get(stage)
            base = cols["PyTorch"].get(stage)
            row += " - |" if v is None else (f" {v:.3f} ({v / base:.1f}x) |" if base else f" {v:.1f} |")
        print(row)


if __name__ == "__main__":
    main()
