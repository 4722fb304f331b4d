"""Where the STDiT3 forward's time goes at bench_dit's ``mid`` config (XL/2 at depth 4 / hidden 576 / 8 heads,
latent 8x32x32 -> T=8 frames x S=256 tokens, 120 caption tokens, batch 1, fp32): each op class of one block,
timed alone in PyTorch and compiled in MindSpore (``ms.jit``), then one whole spatial and temporal block.

    .venv/bin/python benchmarks/profile_stdit3.py [--repeat 5]

Prints the best-of-repeat ms per call, MS/PT, and the per-block count of each op, so the sum shows which op
classes the block's time is made of. Issue 11 (docs/performance.md).
"""
import argparse
import sys

import numpy as np
import mindspore as ms
import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
from _timing import best_ms  # noqa: E402
from ms_impl.layers.attention import scaled_dot_product_attention  # noqa: E402
from ms_impl.layers.basic import GELU, LayerNorm, unbind  # noqa: E402
from mindspore import mint, nn  # noqa: E402

T, S, C, H, L = 8, 256, 576, 8, 120
D = C // H
N = T * S


class _Linear(nn.Cell):
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = ms.Tensor(w), ms.Tensor(b)

    def construct(self, x):
        return mint.nn.functional.linear(x, self.w, self.b)


class _Attn(nn.Cell):
    def construct(self, q, k, v, mask=None):
        return scaled_dot_product_attention(q, k, v, mask)


class _Cell(nn.Cell):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def construct(self, x):
        return self.cell(x)


class _QkvSplit(nn.Cell):
    """The qkv reshape + permute to [3, B, H, N, D] (one copy of the 3C-wide activations)."""

    def construct(self, qkv):
        q, k, v = unbind(mint.permute(qkv.reshape(T, S, 3, H, D), (2, 0, 3, 1, 4)), 0)
        return q + k + v


class _Temporal(nn.Cell):
    """The temporal block's two transposes [B, T, S, C] <-> [B, S, T, C]."""

    def construct(self, x):
        y = mint.transpose(x.reshape(1, T, S, C), 1, 2).reshape(S, T, C)
        return mint.transpose(y.reshape(1, S, T, C), 1, 2).reshape(1, N, C)


class _Modulate(nn.Cell):
    def construct(self, x, shift, scale, gate):
        return x + gate * (x * (1 + scale) + shift)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    rows = []  # (label, count per block pair, torch ms, ms ms)

    def row(label, count, pt_fn, ms_cell, *ms_args):
        with torch.no_grad():
            tp = best_ms(pt_fn, args.repeat)
        j = ms.jit(ms_cell.construct)
        tm = best_ms(lambda: j(*ms_args).asnumpy(), args.repeat)
        rows.append((label, count, tp, tm))
        print(f"  {label:44s} x{count:<3d} PT {tp:8.2f} ms  MS {tm:8.2f} ms  {tm / tp:5.2f}x", flush=True)

    x = r(1, N, C)
    xt, xm = torch.from_numpy(x), ms.Tensor(x)
    print(f"STDiT3 mid block shapes: T={T} S={S} C={C} heads={H} caption {L}; one spatial + one temporal block")
    for name, cin, cout, n_in, count in (("qkv linear 576->1728", C, 3 * C, N, 2), ("proj / q linear 576->576", C, C, N, 6),
                                         ("fc1 576->2304", C, 4 * C, N, 2), ("fc2 2304->576", 4 * C, C, N, 2),
                                         ("cross kv linear 576->1152 (120 tok)", C, 2 * C, L, 2)):
        w, b, a = r(cout, cin), r(cout), r(1, n_in, cin)
        wt, bt, at = torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(a)
        row(name, count, lambda: F.linear(at, wt, bt), _Linear(w, b), ms.Tensor(a))
    for name, shape, kv, count, masked in (("spatial attention core 8x8x256x256", (T, H, S, D), (T, H, S, D), 1, False),
                                           ("temporal attention core 256x8x8x8", (S, H, T, D), (S, H, T, D), 1, False),
                                           ("cross attention core 8x2048x120", (1, H, N, D), (1, H, L, D), 2, True)):
        q, k, v = r(*shape), r(*kv), r(*kv)
        mask = np.ones((1, 1, 1, kv[2]), bool)
        mask[..., L // 2:] = masked is False
        qt, kt, vt = (torch.from_numpy(a) for a in (q, k, v))
        mt = torch.from_numpy(mask)
        ms_args = [ms.Tensor(q), ms.Tensor(k), ms.Tensor(v)] + ([ms.Tensor(mask)] if masked else [])

        def pt_attn(qt=qt, kt=kt, vt=vt, mt=mt if masked else None):
            a = (qt * D ** -0.5) @ kt.transpose(-2, -1)
            if mt is not None:
                a = a.masked_fill(~mt, float("-inf"))
            return a.softmax(-1) @ vt
        row(name, count, pt_attn, _Attn(), *ms_args)
    ln_pt = torch.nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
    row("LayerNorm (no affine)", 4, lambda: ln_pt(xt), _Cell(LayerNorm(C, eps=1e-6, elementwise_affine=False)), xm)
    h = r(1, N, 4 * C)
    row("GELU tanh on 2048x2304", 2, lambda: F.gelu(torch.from_numpy(h), approximate="tanh"),
        _Cell(GELU(approximate="tanh")), ms.Tensor(h))
    sh, sc, g = r(1, 1, C), r(1, 1, C), r(1, 1, C)
    row("modulate + gate + residual", 4, lambda: xt + torch.from_numpy(g) * (xt * (1 + torch.from_numpy(sc)) + torch.from_numpy(sh)),
        _Modulate(), xm, ms.Tensor(sh), ms.Tensor(sc), ms.Tensor(g))
    qkv = r(1, N, 3 * C)
    qkvt = torch.from_numpy(qkv)

    def pt_split():
        q = qkvt.view(T, S, 3, H, D).permute(2, 0, 3, 1, 4)
        return q[0] + q[1] + q[2]
    row("qkv permute to [3,B,H,N,D], unbind (+2 adds)", 2, pt_split, _QkvSplit(), ms.Tensor(qkv))
    row("temporal transposes BTSC <-> BSTC", 1,
        lambda: xt.reshape(1, T, S, C).transpose(1, 2).reshape(S, T, C).reshape(1, S, T, C).transpose(1, 2).reshape(1, N, C).contiguous(),
        _Temporal(), xm)
    tp = sum(c * a for _, c, a, _ in rows)
    tm = sum(c * b for _, c, _, b in rows)
    print(f"  {'sum of the op classes above (x count)':44s}      PT {tp:8.2f} ms  MS {tm:8.2f} ms  {tm / tp:5.2f}x")
    print("  share of the MS sum: " + ", ".join(f"{lab.split(' ')[0]} {c * b / tm:.0%}" for lab, c, _, b in rows))


if __name__ == "__main__":
    main()
