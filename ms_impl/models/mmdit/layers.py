"""MMDiT (Open-Sora 2.0, BFL Flux) layers, MindSpore port of ``pt_reference/models/mmdit/layers.py``.

Same class, attribute and parameter names as the reference. Precision: Linear cells follow the model's
compute dtype (``ms_impl.layers.set_compute_dtype``); LayerNorm, the QK RMSNorm statistics, RoPE (tables and
rotation) and the attention softmax run in fp32 (RoPE tables of the Flux pairing in fp64, as upstream) and
cast back. Attention backend per block: ``attn_backend`` "math" (CPU/Ascend) or "flash" (Ascend only).

Sequence parallelism (MindSpore only; ``MMDiTModel.set_sequence_parallel``): the blocks hold this rank's image
tokens and the whole text; each joint attention gathers the image q/k/v of every rank, keeps num_heads/sp
heads, attends over [txt; all img], then gathers the heads back and keeps the text and the rank's own image
tokens (Ulysses' exchange written with AllGather: MindSpore 2.10 has no AlltoAll on CPU).
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import initializer

from ms_impl.layers.attention import scaled_dot_product_attention
from ms_impl.layers.basic import GELU, LayerNorm, Linear, SiLU, unbind


_TRIG_DTYPE = ms.float32 if ms.get_context("device_target") == "Ascend" else ms.float64


def _up(x):
    return x if x.dtype in (ms.float32, ms.float64) else x.astype(ms.float32)


# ---------------------------------------------------------------------------------------------- RoPE
def _omega(dim, theta, dtype):
    scale = np.arange(0, dim, 2, dtype=dtype) / dtype(dim)
    return (dtype(1.0) / (dtype(theta) ** scale)).astype(dtype)


def rope(pos, dim, theta):
    """Flux's adjacent-pair table [..., n, dim/2, 2, 2], computed in fp64 (fp32 on Ascend), returned fp32."""
    omega = Tensor(_omega(dim, theta, np.float64)).astype(_TRIG_DTYPE)
    out = pos.astype(_TRIG_DTYPE).expand_dims(-1) * omega
    cos, sin = ops.cos(out), ops.sin(out)
    out = ops.stack([cos, -sin, sin, cos], axis=-1)
    return out.reshape(out.shape[:-1] + (2, 2)).astype(ms.float32)


def liger_rope(pos, dim, theta):
    omega = Tensor(_omega(dim, theta, np.float32))
    out = pos.astype(ms.float32).expand_dims(-1) * omega
    return ops.cos(out), ops.sin(out)


def apply_rope(xq, xk, freqs_cis):
    xq_ = _up(xq).reshape(xq.shape[:-1] + (-1, 1, 2))
    xk_ = _up(xk).reshape(xk.shape[:-1] + (-1, 1, 2))
    # unbind, not [..., 0]: an index is a slow gather in graph mode on CPU
    f0, f1 = unbind(freqs_cis, -1)
    q0, q1 = unbind(xq_, -1)
    k0, k1 = unbind(xk_, -1)
    xq_out = f0 * q0 + f1 * q1
    xk_out = f0 * k0 + f1 * k1
    return xq_out.reshape(xq.shape).astype(xq.dtype), xk_out.reshape(xk.shape).astype(xk.dtype)


def rotate_half(x):
    x1, x2 = mint.chunk(x, 2, -1)
    return mint.cat((-x2, x1), dim=-1)


def apply_liger_rope(xq, xk, cos, sin):
    cos, sin = cos.expand_dims(1), sin.expand_dims(1)
    q32, k32 = _up(xq), _up(xk)
    q = q32 * cos + rotate_half(q32) * sin
    k = k32 * cos + rotate_half(k32) * sin
    return q.astype(xq.dtype), k.astype(xk.dtype)


class EmbedND(nn.Cell):
    def __init__(self, dim, theta, axes_dim):
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, tuple(axes_dim)

    def construct(self, ids):
        embs = ()
        for i in range(len(self.axes_dim)):
            embs += (rope(ids[..., i], self.axes_dim[i], self.theta),)
        return mint.cat(embs, dim=-3).expand_dims(1)


class LigerEmbedND(nn.Cell):
    def __init__(self, dim, theta, axes_dim):
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, tuple(axes_dim)

    def construct(self, ids):
        coss, sins = (), ()
        for i in range(len(self.axes_dim)):
            cos, sin = liger_rope(ids[..., i], self.axes_dim[i], self.theta)
            coss += (cos,)
            sins += (sin,)
        cos_emb, sin_emb = mint.cat(coss, dim=-1), mint.cat(sins, dim=-1)
        return mint.cat((cos_emb, cos_emb), dim=-1), mint.cat((sin_emb, sin_emb), dim=-1)


def attention(q, k, v, pe, backend="math"):
    if isinstance(pe, tuple):
        q, k = apply_liger_rope(q, k, pe[0], pe[1])
    else:
        q, k = apply_rope(q, k, pe)
    x = scaled_dot_product_attention(q, k, v, backend=backend)
    B, H, L, D = x.shape
    return mint.transpose(x, 1, 2).reshape(B, L, H * D)


# ---------------------------------------------------------------------------------------------- sequence parallel
def sp_split(n, size):
    """The image-token split over ``size`` ranks: (sizes, starts), balanced (the first n % size ranks hold one
    token more). Any n >= size is accepted."""
    if n < size:
        raise ValueError(f"sequence parallelism over {size} ranks needs at least {size} image tokens, got {n}")
    base, extra = n // size, n % size
    sizes = tuple(base + 1 if r < extra else base for r in range(size))
    starts = tuple(sum(sizes[:r]) for r in range(size))
    return sizes, starts


def sp_gather_tokens(all_gather, x, axis, sizes):
    """Concatenate every rank's ``x`` along token ``axis`` (rank order), where rank r holds ``sizes[r]`` tokens.

    MindSpore's AllGather needs the same shape on every rank and stacks on axis 0, so a shorter shard is
    zero-padded to max(sizes) for the exchange and the padding is dropped after it."""
    size, chunk, n = len(sizes), max(sizes), x.shape[axis]
    if n < chunk:
        pad_shape = x.shape[:axis] + (chunk - n,) + x.shape[axis + 1:]
        x = mint.cat((x, mint.zeros(pad_shape, dtype=x.dtype)), dim=axis)
    g = all_gather(x).reshape((size,) + x.shape)
    if min(sizes) == chunk:  # equal shards: one reshape
        g = mint.permute(g, tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, x.ndim + 1)))
        return g.reshape(x.shape[:axis] + (size * chunk,) + x.shape[axis + 1:])
    parts = ()
    for r in range(size):
        parts += (ops.narrow(g[r], axis, 0, sizes[r]),)
    return mint.cat(parts, dim=axis)


def _pe_len(pe):
    """Length of the joint [txt; img] sequence the RoPE tables cover (liger (cos, sin) [B, L, D]; Flux
    [B, 1, L, D/2, 2, 2])."""
    if isinstance(pe, tuple):
        return pe[0].shape[1]
    return pe.shape[2]


class _SequenceParallel:
    """The exchange of one joint attention across the sequence-parallel ranks (mixed into the blocks)."""

    def _init_sp(self):
        self.sp_size, self.sp_rank = 1, 0

    def set_sequence_parallel(self, size, rank):
        if self.num_heads % size:
            raise ValueError(f"sequence parallelism over {size} ranks needs num_heads ({self.num_heads}) "
                             "divisible by it")
        self.sp_size, self.sp_rank = size, rank
        if size > 1:
            self.all_gather = ops.AllGather()

    def _sp_attention(self, txt_q, txt_k, txt_v, img_q, img_k, img_v, pe):
        """Joint attention when this rank holds the whole text ([B, H, L, D]) and its shard of the image tokens
        ([B, H, n, D]): returns [B, L + n, H*D] for the text and this rank's image tokens."""
        n_txt, n = txt_q.shape[2], img_q.shape[2]
        sizes, starts = sp_split(_pe_len(pe) - n_txt, self.sp_size)
        heads = self.num_heads // self.sp_size
        h0 = self.sp_rank * heads
        # gather the image sequence (q, k, v in one exchange), keep this rank's heads
        qkv = sp_gather_tokens(self.all_gather, ops.stack((img_q, img_k, img_v)), 3, sizes)[:, :, h0:h0 + heads]
        q = mint.cat((txt_q[:, h0:h0 + heads], qkv[0]), dim=2)
        k = mint.cat((txt_k[:, h0:h0 + heads], qkv[1]), dim=2)
        v = mint.cat((txt_v[:, h0:h0 + heads], qkv[2]), dim=2)
        x = attention(q, k, v, pe, self.attn_backend)  # [B, L + N, heads*D]: every token, this rank's heads
        # gather the heads (every rank sends all tokens: AllGather cannot address ranks), keep the text and
        # this rank's image tokens
        B, L, HD = x.shape
        g = self.all_gather(x).reshape((self.sp_size, B, L, HD))
        start = n_txt + starts[self.sp_rank]
        g = mint.cat((g[:, :, :n_txt], g[:, :, start:start + n]), dim=2)
        return mint.permute(g, (1, 2, 0, 3)).reshape(B, n_txt + n, self.sp_size * HD)


# ---------------------------------------------------------------------------------------------- embedders
def timestep_embedding(t, dim, max_period=10000, time_factor=1000.0):
    t = time_factor * t
    half = dim // 2
    # torch's float32 argument (a python float times a float32 arange, / half), exp correctly rounded (as
    # ms_impl.layers.blocks.TimestepEmbedder): numpy's float32 exp differs from torch's in 55 of 128 entries, this
    # in 2 (one ulp) -- which the angles t*1000*freq (up to ~5e3 rad for guidance 5) amplify
    arg = (np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)) / np.float32(half)
    freqs = Tensor(np.exp(arg.astype(np.float64)).astype(np.float32))
    args = _up(t).expand_dims(-1) * freqs.expand_dims(0)
    # The angles reach t*1000 (guidance*1000: ~5e3 rad); MindSpore's CPU fp32 cos/sin lose accuracy there
    # (2.6e-5 rel from torch on the guidance embedding), so on CPU they run in fp64 on the fp32 angles and are
    # rounded once -- the correctly rounded value torch's fp32 kernels give.
    if _TRIG_DTYPE != ms.float32:
        args = args.astype(_TRIG_DTYPE)
    embedding = mint.cat((ops.cos(args), ops.sin(args)), dim=-1).astype(ms.float32)
    if dim % 2:
        embedding = mint.cat((embedding, ops.zeros_like(embedding[:, :1])), dim=-1)
    return embedding.astype(t.dtype)


class MLPEmbedder(nn.Cell):
    def __init__(self, in_dim, hidden_dim):
        super().__init__()
        self.in_layer = Linear(in_dim, hidden_dim, bias=True)
        self.silu = SiLU()
        self.out_layer = Linear(hidden_dim, hidden_dim, bias=True)

    def construct(self, x):
        return self.out_layer(self.silu(self.in_layer(x)))


# ---------------------------------------------------------------------------------------------- norms
class RMSNorm(nn.Cell):
    def __init__(self, dim):
        super().__init__()
        self.scale = Parameter(initializer("ones", (dim,), ms.float32), name="scale")

    def construct(self, x):
        dtype = x.dtype
        x = _up(x)
        rrms = mint.rsqrt(mint.mean(x * x, -1, keepdim=True) + 1e-6)
        return (x * rrms).astype(dtype) * self.scale.astype(dtype)


class QKNorm(nn.Cell):
    def __init__(self, dim):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def construct(self, q, k, v):
        return self.query_norm(q).astype(v.dtype), self.key_norm(k).astype(v.dtype)


class SelfAttention(nn.Cell):
    def __init__(self, dim, num_heads=8, qkv_bias=False, fused_qkv=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q_proj = Linear(dim, dim, bias=qkv_bias)
            self.k_proj = Linear(dim, dim, bias=qkv_bias)
            self.v_proj = Linear(dim, dim, bias=qkv_bias)
        self.norm = QKNorm(self.head_dim)
        self.proj = Linear(dim, dim)

    def qkv_heads(self, x):
        B, L, _ = x.shape
        H, D = self.num_heads, self.head_dim
        if self.fused_qkv:
            qkv = mint.permute(self.qkv(x).reshape(B, L, 3, H, D), (2, 0, 3, 1, 4))
            q, k, v = unbind(qkv, 0)
        else:
            q = self.q_proj(x).reshape(B, L, H, D)
            k = self.k_proj(x).reshape(B, L, H, D)
            v = self.v_proj(x).reshape(B, L, H, D)
        q, k = self.norm(q, k, v)
        if not self.fused_qkv:
            q, k, v = mint.transpose(q, 1, 2), mint.transpose(k, 1, 2), mint.transpose(v, 1, 2)
        return q, k, v


class Modulation(nn.Cell):
    def __init__(self, dim, double):
        super().__init__()
        self.is_double = double
        self.multiplier = 6 if double else 3
        self.lin = Linear(dim, self.multiplier * dim, bias=True)

    def construct(self, vec):
        out = mint.chunk(self.lin(_silu(vec)).expand_dims(1), self.multiplier, -1)
        if self.is_double:
            return (out[0], out[1], out[2]), (out[3], out[4], out[5])
        return (out[0], out[1], out[2]), None


def _silu(x):
    """Upstream calls ``nn.functional.silu`` here (no sub-module): fp32 compute, cast back."""
    return mint.nn.functional.silu(_up(x)).astype(x.dtype)


def _modulate(x, shift, scale):
    return (1 + scale) * x + shift


# ---------------------------------------------------------------------------------------------- blocks
class DoubleStreamBlock(nn.Cell, _SequenceParallel):
    def __init__(self, hidden_size, num_heads, mlp_ratio, qkv_bias=False, fused_qkv=True):
        super().__init__()
        mlp_hidden_dim = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.head_dim = hidden_size // num_heads
        self.attn_backend = "math"

        self.img_mod = Modulation(hidden_size, double=True)
        self.img_norm1 = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias, fused_qkv=fused_qkv)
        self.img_norm2 = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_mlp = nn.SequentialCell([Linear(hidden_size, mlp_hidden_dim, bias=True), GELU(approximate="tanh"),
                                          Linear(mlp_hidden_dim, hidden_size, bias=True)])

        self.txt_mod = Modulation(hidden_size, double=True)
        self.txt_norm1 = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias, fused_qkv=fused_qkv)
        self.txt_norm2 = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = nn.SequentialCell([Linear(hidden_size, mlp_hidden_dim, bias=True), GELU(approximate="tanh"),
                                          Linear(mlp_hidden_dim, hidden_size, bias=True)])
        self._init_sp()

    def construct(self, img, txt, vec, pe):
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)

        img_q, img_k, img_v = self.img_attn.qkv_heads(_modulate(self.img_norm1(img), img_mod1[0], img_mod1[1]))
        txt_q, txt_k, txt_v = self.txt_attn.qkv_heads(_modulate(self.txt_norm1(txt), txt_mod1[0], txt_mod1[1]))

        if self.sp_size > 1:
            attn1 = self._sp_attention(txt_q, txt_k, txt_v, img_q, img_k, img_v, pe)
        else:
            q = mint.cat((txt_q, img_q), dim=2)
            k = mint.cat((txt_k, img_k), dim=2)
            v = mint.cat((txt_v, img_v), dim=2)
            attn1 = attention(q, k, v, pe, self.attn_backend)
        n_txt = txt_q.shape[2]
        txt_attn, img_attn = attn1[:, :n_txt], attn1[:, n_txt:]

        img = img + img_mod1[2] * self.img_attn.proj(img_attn)
        img = img + img_mod2[2] * self.img_mlp(_modulate(self.img_norm2(img), img_mod2[0], img_mod2[1]))
        txt = txt + txt_mod1[2] * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2[2] * self.txt_mlp(_modulate(self.txt_norm2(txt), txt_mod2[0], txt_mod2[1]))
        return img, txt


class SingleStreamBlock(nn.Cell, _SequenceParallel):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, qk_scale=None, fused_qkv=True):
        super().__init__()
        self.hidden_dim = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.fused_qkv = fused_qkv
        self.attn_backend = "math"
        self.mlp_hidden_dim = int(hidden_size * mlp_ratio)
        if fused_qkv:
            self.linear1 = Linear(hidden_size, hidden_size * 3 + self.mlp_hidden_dim)
        else:
            self.q_proj = Linear(hidden_size, hidden_size)
            self.k_proj = Linear(hidden_size, hidden_size)
            self.v_mlp = Linear(hidden_size, hidden_size + self.mlp_hidden_dim)
        self.linear2 = Linear(hidden_size + self.mlp_hidden_dim, hidden_size)
        self.norm = QKNorm(self.head_dim)
        self.hidden_size = hidden_size
        self.pre_norm = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp_act = GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, double=False)
        self._init_sp()

    def construct(self, x, vec, pe, txt_len=None):
        """``txt_len``: the number of text tokens leading ``x``; needed (only) under sequence parallelism, where
        ``x`` holds the text and this rank's image tokens."""
        mod, _ = self.modulation(vec)
        x_mod = _modulate(self.pre_norm(x), mod[0], mod[1])
        B, L, _ = x.shape
        H, D, C = self.num_heads, self.head_dim, self.hidden_size
        if self.fused_qkv:
            h = self.linear1(x_mod)
            qkv, mlp = mint.split(h, [3 * C, h.shape[-1] - 3 * C], -1)
            qkv = mint.permute(qkv.reshape(B, L, 3, H, D), (2, 0, 3, 1, 4))
            q, k, v = unbind(qkv, 0)
        else:
            q = self.q_proj(x_mod).reshape(B, L, H, D)
            k = self.k_proj(x_mod).reshape(B, L, H, D)
            h = self.v_mlp(x_mod)
            v, mlp = h[..., :C].reshape(B, L, H, D), h[..., C:]
        q, k = self.norm(q, k, v)
        if not self.fused_qkv:
            q, k, v = mint.transpose(q, 1, 2), mint.transpose(k, 1, 2), mint.transpose(v, 1, 2)
        if self.sp_size > 1:
            if txt_len is None:
                raise ValueError("under sequence parallelism a single-stream block needs txt_len")
            attn_1 = self._sp_attention(q[:, :, :txt_len], k[:, :, :txt_len], v[:, :, :txt_len],
                                        q[:, :, txt_len:], k[:, :, txt_len:], v[:, :, txt_len:], pe)
        else:
            attn_1 = attention(q, k, v, pe, self.attn_backend)
        output = self.linear2(mint.cat((attn_1, self.mlp_act(mlp)), dim=2))
        return x + mod[2] * output


class LastLayer(nn.Cell):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.SequentialCell([SiLU(), Linear(hidden_size, 2 * hidden_size, bias=True)])

    def construct(self, x, vec):
        shift, scale = mint.chunk(self.adaLN_modulation(vec), 2, 1)
        x = (1 + scale.expand_dims(1)) * self.norm_final(x) + shift.expand_dims(1)
        return self.linear(x)
