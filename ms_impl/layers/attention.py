"""Attention core with a backend switch.

``math`` (CPU and Ascend): q*scale, matmul, fp32 softmax, cast back, as the reference's math path.
``flash`` (Ascend only): ``ops.flash_attention_score`` with BNSD layout. On CPU it raises instead of falling
back, so a config that asks for flash attention on CPU fails loudly (the suite proves the math path).
``mask`` is boolean, True = attend, broadcastable to [B, H, Nq, Nk].
"""
import mindspore as ms
from mindspore import mint, ops

from ms_impl.device import on_ascend, require_ascend

_NEG = -1e30  # finite: a fully masked row gives a uniform softmax rather than NaN in fp32
# The softmax runs in fp32 on Ascend. On CPU it runs in fp64: MindSpore's CPU fp32 exp is 2.8e-6 from fp64
# (torch: 1.7e-8), enough to miss op-level allclose; in fp64 the port measured 2.3e-8 from fp64.
_SOFTMAX_DTYPE = ms.float32 if on_ascend() else ms.float64


def scaled_dot_product_attention(q, k, v, mask=None, scale=None, backend="math", bias=None, scores_fp32=True):
    """softmax(q*scale @ k^T + bias, masked) @ v.

    ``bias`` is additive (T5's relative position bias). ``scores_fp32``: in low precision, q and k are widened
    to fp32 before their product, so the scores are not rounded to fp16 before the softmax (Ascend's flash
    kernel and torch's CPU SDPA accumulate them in fp32). Measured on the T5 attention fp16 case: noise-floor
    ratio 1.04 with fp32 scores, 1.17 with fp16-rounded ones (gate 1.2).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "flash":
        return _flash(q, k, v, mask, scale, bias)
    dtype = v.dtype
    if scores_fp32 and q.dtype != ms.float32:
        q, k = q.astype(ms.float32), k.astype(ms.float32)
    if scale != 1.0:
        q = q * scale
    attn = mint.matmul(q, mint.transpose(k, -2, -1))
    attn = attn.astype(_SOFTMAX_DTYPE)
    if bias is not None:
        attn = attn + bias.astype(_SOFTMAX_DTYPE)
    if mask is not None:
        attn = attn.masked_fill(mint.logical_not(mask), _NEG)
    attn = mint.softmax(attn, dim=-1).astype(dtype)
    return mint.matmul(attn, v)


def _flash(q, k, v, mask, scale, bias=None):  # pragma: no cover - Ascend only
    require_ascend("flash attention (ops.flash_attention_score)")
    head_num = q.shape[1]
    in_dtype = q.dtype
    if in_dtype == ms.float32:  # FlashAttentionScore takes fp16/bf16 only
        q, k, v = q.astype(ms.float16), k.astype(ms.float16), v.astype(ms.float16)
    # FlashAttentionScore's attn_mask marks positions to DROP (1 = masked), the opposite of ours.
    fa_mask = None if mask is None else mint.logical_not(mask).astype(ms.uint8)
    # an additive bias goes in as FlashAttentionScore's positional shift (real_shift / pse)
    shift = None if bias is None else bias.astype(q.dtype)
    out = ops.flash_attention_score(q, k, v, head_num, real_shift=shift, attn_mask=fa_mask, scalar_value=scale,
                                    input_layout="BNSD")
    return out.astype(in_dtype)
