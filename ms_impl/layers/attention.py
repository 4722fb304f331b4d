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


def scaled_dot_product_attention(q, k, v, mask=None, scale=None, backend="math"):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "flash":
        return _flash(q, k, v, mask, scale)
    dtype = q.dtype
    attn = mint.matmul(q * scale, mint.transpose(k, -2, -1))
    attn = attn.astype(_SOFTMAX_DTYPE)
    if mask is not None:
        attn = attn.masked_fill(mint.logical_not(mask), _NEG)
    attn = mint.softmax(attn, dim=-1).astype(dtype)
    return mint.matmul(attn, v)


def _flash(q, k, v, mask, scale):  # pragma: no cover - Ascend only
    require_ascend("flash attention (ops.flash_attention_score)")
    head_num = q.shape[1]
    in_dtype = q.dtype
    if in_dtype == ms.float32:  # FlashAttentionScore takes fp16/bf16 only
        q, k, v = q.astype(ms.float16), k.astype(ms.float16), v.astype(ms.float16)
    # FlashAttentionScore's attn_mask marks positions to DROP (1 = masked), the opposite of ours.
    fa_mask = None if mask is None else mint.logical_not(mask).astype(ms.uint8)
    out = ops.flash_attention_score(q, k, v, head_num, attn_mask=fa_mask, scalar_value=scale, input_layout="BNSD")
    return out.astype(in_dtype)
