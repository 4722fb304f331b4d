"""Attention core with a backend switch, so the parity suite can force the plain math path.

``backend="math"`` is written out (q*scale, matmul, fp32 softmax, cast back), the way upstream's
non-flash path computes it; ``backend="sdpa"`` is PyTorch's fused SDPA. ``mask`` is boolean,
True = attend, broadcastable to [B, H, Nq, Nk].
"""
import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, mask=None, scale=None, backend="math"):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if backend != "math":
        raise ValueError(f"unknown attention backend {backend!r} (expected 'math' or 'sdpa')")
    dtype = q.dtype
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn.to(torch.float32)
    if mask is not None:
        attn = attn.masked_fill(~mask, float("-inf"))
    attn = attn.softmax(dim=-1).to(dtype)
    return attn @ v
