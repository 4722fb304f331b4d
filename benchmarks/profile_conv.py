"""Conv microbenchmark at the VAE's conv shapes: torch conv2d/conv3d vs the port's conv variants (im2col, the
channels-last im2col, the sum over kernel offsets), each in PyNative and compiled (ms.jit). Prints the best-of-repeat ms per call.

    .venv/bin/python benchmarks/profile_conv.py [--repeat 5] [--impls im2col,im2col_cl,offsets]
"""
import argparse
import sys

import numpy as np
import mindspore as ms
import torch

sys.path.insert(0, ".")
from ms_impl.layers.basic import Conv2d, Conv3d, set_conv_impl, CONV_IMPLS  # noqa: E402
from _timing import best_ms as med  # noqa: E402

SHAPES = [  # (label, nd, B, Cin, Cout, spatial, k)
    ("2d 128->128 4x32x32", 2, 4, 128, 128, (32, 32), 3),
    ("2d 512->512 4x8x8", 2, 4, 512, 512, (8, 8), 3),
    ("2d 128->128 4x64x64", 2, 4, 128, 128, (64, 64), 3),
    ("2d 256->256 4x32x32", 2, 4, 256, 256, (32, 32), 3),
    ("3d 128->128 1x4x8x8 (temporal 32px)", 3, 1, 128, 128, (6, 4, 4), 3),
    ("3d 512->512 1x2x4x4", 3, 1, 512, 512, (4, 4, 4), 3),
    ("3d 128->128 1x18x16x16 (temporal 64px... 128ch)", 3, 1, 128, 128, (18, 8, 8), 3),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--impls", default=",".join(i for i in CONV_IMPLS if i != "native"))
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    impls = args.impls.split(",")
    print(f"{'shape':46s} {'torch':>8s} " + " ".join(f"{i + ' P':>12s} {i + ' J':>12s}" for i in impls))
    for label, nd, b, ci, co, sp, k in SHAPES:
        if args.only and args.only not in label:
            continue
        x = np.random.default_rng(0).standard_normal((b, ci) + sp).astype(np.float32)
        tconv = (torch.nn.Conv2d if nd == 2 else torch.nn.Conv3d)(ci, co, k, padding=1)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            ref = tconv(xt).numpy()
            t_ms = med(lambda: tconv(xt), args.repeat)
        cell = (Conv2d if nd == 2 else Conv3d)(ci, co, k, padding=1)
        cell.weight.set_data(ms.Tensor(tconv.weight.detach().numpy()))
        cell.bias.set_data(ms.Tensor(tconv.bias.detach().numpy()))
        xm = ms.Tensor(x)
        row = f"{label:46s} {t_ms:8.1f} "
        for impl in impls:
            set_conv_impl(cell, impl)
            out = cell(xm).asnumpy()
            err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
            p = med(lambda: cell(xm).asnumpy(), args.repeat)
            j = ms.jit(cell.construct)
            jt = med(lambda: j(xm).asnumpy(), args.repeat)
            row += f"{p:12.1f} {jt:12.1f}"
            row += "" if err < 1e-5 else f" (ERR {err:.1e})"
        print(row, flush=True)


if __name__ == "__main__":
    main()
