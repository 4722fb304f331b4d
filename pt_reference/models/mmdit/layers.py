"""MMDiT (Open-Sora 2.0, BFL Flux) layers, the reference. Mirrors ``main:opensora/models/mmdit/{layers,math}.py``.

Attribute names are BFL Flux's (``img_attn.qkv`` / ``q_proj``, ``norm.query_norm.scale``, ``linear1``, ...), so
``Open_Sora_v2.safetensors`` (separate q/k/v) and Flux-dev files (fused ``qkv`` / ``linear1``) load strictly.
Differences from upstream, none of which changes a number:
- Liger kernels (``LigerRMSNormFunction`` "llama" mode, ``LigerRopeFunction``) and flash-attn are written out:
  RMSNorm statistics in fp32, cast back, times ``scale``; rotate-half RoPE in fp32 (the kernel casts q/k to
  the cos/sin dtype); attention through ``pt_reference.layers.attention`` (math path: fp32 softmax), with
  flash-attn's default scale head_dim**-0.5 and no mask;
- "fp32" upcasts are ``promote(x, fp32)``: identical for fp16/bf16/fp32, and an fp64 run (the parity suite's
  noise-floor reference) is not rounded through fp32;
- the processor objects (``DoubleStreamBlockProcessor``...) are folded into the blocks' ``forward``.
"""
import math

import torch
from torch import nn

from pt_reference.layers.attention import scaled_dot_product_attention
from pt_reference.layers.basic import GELU, LayerNorm, Linear, SiLU


def _up(x):
    """x in at least fp32 (upstream's ``.float()``; fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ---------------------------------------------------------------------------------------------- RoPE
def rope(pos, dim, theta):
    """Flux's adjacent-pair table: [..., n, dim/2, 2, 2] rotation matrices, computed in fp64, returned fp32."""
    assert dim % 2 == 0
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    out = pos.to(torch.float64)[..., None] * omega                                     # [..., n, dim/2]
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return out.reshape(*out.shape[:-1], 2, 2).float()


def liger_rope(pos, dim, theta):
    """The liger table: cos, sin [..., n, dim/2] in fp32 (upstream's ``math.liger_rope``)."""
    assert dim % 2 == 0
    scale = torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    out = pos.to(torch.float32)[..., None] * omega
    return out.cos(), out.sin()


def apply_rope(xq, xk, freqs_cis):
    """Adjacent pairs (2i, 2i+1) rotated by ``freqs_cis`` [B, 1, L, D/2, 2, 2]; fp32 compute, cast back."""
    xq_ = _up(xq).reshape(*xq.shape[:-1], -1, 1, 2)
    xk_ = _up(xk).reshape(*xk.shape[:-1], -1, 1, 2)
    xq_out = freqs_cis[..., 0] * xq_[..., 0] + freqs_cis[..., 1] * xq_[..., 1]
    xk_out = freqs_cis[..., 0] * xk_[..., 0] + freqs_cis[..., 1] * xk_[..., 1]
    return xq_out.reshape(*xq.shape).type_as(xq), xk_out.reshape(*xk.shape).type_as(xk)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_liger_rope(xq, xk, cos, sin):
    """``LigerRopeFunction``: pairs (j, j + D/2), q/k cast to the fp32 cos/sin dtype, result cast back.
    q, k [B, H, L, D]; cos, sin [B or 1, L, D]."""
    cos, sin = cos[:, None], sin[:, None]
    q32, k32 = _up(xq), _up(xk)
    q = q32 * cos + rotate_half(q32) * sin
    k = k32 * cos + rotate_half(k32) * sin
    return q.type_as(xq), k.type_as(xk)


def rearrange_tensor(tensor):
    """Flux pairing -> liger pairing of the last dim D: new[d] = old[2d], new[D/2 + d] = old[2d + 1]."""
    D = tensor.shape[-1]
    idx = torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)]).to(tensor.device)
    return tensor.index_select(-1, idx)


def reverse_rearrange_tensor(tensor):
    """Liger pairing -> Flux pairing: new[2d] = old[d], new[2d + 1] = old[D/2 + d]."""
    D = tensor.shape[-1]
    idx = torch.stack([torch.arange(D // 2), torch.arange(D // 2, D)], dim=-1).reshape(D).to(tensor.device)
    return tensor.index_select(-1, idx)


class EmbedND(nn.Module):
    """Flux's N-axis RoPE: ids [B, L, n_axes] -> [B, 1, L, D/2, 2, 2] (axis blocks concatenated)."""

    def __init__(self, dim, theta, axes_dim):
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, list(axes_dim)

    def forward(self, ids):
        n_axes = ids.shape[-1]
        emb = torch.cat([rope(ids[..., i], self.axes_dim[i], self.theta) for i in range(n_axes)], dim=-3)
        return emb.unsqueeze(1)


class LigerEmbedND(nn.Module):
    """Open-Sora 2.0's liger RoPE: ids -> (cos, sin) [B, L, D], the D/2 axis angles repeated twice."""

    def __init__(self, dim, theta, axes_dim):
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, list(axes_dim)

    def forward(self, ids):
        n_axes = ids.shape[-1]
        cos_list, sin_list = [], []
        for i in range(n_axes):
            cos, sin = liger_rope(ids[..., i], self.axes_dim[i], self.theta)
            cos_list.append(cos)
            sin_list.append(sin)
        cos_emb = torch.cat(cos_list, dim=-1).repeat(1, 1, 2).contiguous()
        sin_emb = torch.cat(sin_list, dim=-1).repeat(1, 1, 2).contiguous()
        return cos_emb, sin_emb


def attention(q, k, v, pe, backend="math"):
    """RoPE (a tensor = Flux pairing, a (cos, sin) pair = liger pairing), then joint attention without a mask.
    q, k, v [B, H, L, D] -> [B, L, H*D]."""
    if isinstance(pe, torch.Tensor):
        q, k = apply_rope(q, k, pe)
    else:
        q, k = apply_liger_rope(q, k, pe[0], pe[1])
    x = scaled_dot_product_attention(q, k, v, backend=backend)     # flash-attn default scale D**-0.5
    B, H, L, D = x.shape
    return x.transpose(1, 2).reshape(B, L, H * D)


# ---------------------------------------------------------------------------------------------- embedders
def timestep_embedding(t, dim, max_period=10000, time_factor=1000.0):
    """[cos, sin] of (t * 1000) * exp(-ln(max_period) * i / half), fp32 angles, cast to t's dtype."""
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
    args = _up(t)[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    if torch.is_floating_point(t):
        embedding = embedding.to(t)
    return embedding


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim, hidden_dim):
        super().__init__()
        self.in_layer = Linear(in_dim, hidden_dim, bias=True)
        self.silu = SiLU()
        self.out_layer = Linear(hidden_dim, hidden_dim, bias=True)

    def forward(self, x):
        return self.out_layer(self.silu(self.in_layer(x)))


# ---------------------------------------------------------------------------------------------- norms
class RMSNorm(nn.Module):
    """Flux's RMSNorm (parameter ``scale``), eps 1e-6, statistics in fp32, cast back, then ``* scale``
    (what LigerRMSNormFunction's "llama" casting mode computes)."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x_dtype = x.dtype
        x = _up(x)
        rrms = torch.rsqrt(torch.mean(x ** 2, dim=-1, keepdim=True) + 1e-6)
        return (x * rrms).to(dtype=x_dtype) * self.scale.to(x_dtype)


class QKNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q, k, v):
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    """Holds the projections of one stream (``qkv`` fused, or ``q_proj``/``k_proj``/``v_proj``), the QK norm and
    the output ``proj``; the double block drives them (joint attention over both streams)."""

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
        """x [B, L, C] -> q, k, v [B, H, L, D], q/k RMS-normalised (before RoPE, as upstream)."""
        B, L, _ = x.shape
        H, D = self.num_heads, self.head_dim
        if self.fused_qkv:
            q, k, v = self.qkv(x).reshape(B, L, 3, H, D).permute(2, 0, 3, 1, 4)     # B L (K H D) -> K B H L D
        else:
            q = self.q_proj(x).reshape(B, L, H, D)
            k = self.k_proj(x).reshape(B, L, H, D)
            v = self.v_proj(x).reshape(B, L, H, D)
        q, k = self.norm(q, k, v)
        if not self.fused_qkv:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        return q, k, v


class Modulation(nn.Module):
    """lin(silu(vec)) -> (shift, scale, gate) [, (shift2, scale2, gate2)], each [B, 1, C]."""

    def __init__(self, dim, double):
        super().__init__()
        self.is_double = double
        self.multiplier = 6 if double else 3
        self.lin = Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec):
        out = self.lin(nn.functional.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        return tuple(out[:3]), (tuple(out[3:]) if self.is_double else None)


def _modulate(x, shift, scale):
    return (1 + scale) * x + shift


# ---------------------------------------------------------------------------------------------- blocks
class DoubleStreamBlock(nn.Module):
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
        self.img_mlp = nn.Sequential(Linear(hidden_size, mlp_hidden_dim, bias=True), GELU(approximate="tanh"),
                                     Linear(mlp_hidden_dim, hidden_size, bias=True))

        self.txt_mod = Modulation(hidden_size, double=True)
        self.txt_norm1 = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias, fused_qkv=fused_qkv)
        self.txt_norm2 = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = nn.Sequential(Linear(hidden_size, mlp_hidden_dim, bias=True), GELU(approximate="tanh"),
                                     Linear(mlp_hidden_dim, hidden_size, bias=True))

    def forward(self, img, txt, vec, pe):
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)

        img_q, img_k, img_v = self.img_attn.qkv_heads(_modulate(self.img_norm1(img), img_mod1[0], img_mod1[1]))
        txt_q, txt_k, txt_v = self.txt_attn.qkv_heads(_modulate(self.txt_norm1(txt), txt_mod1[0], txt_mod1[1]))

        # joint attention over [txt, img]
        q = torch.cat((txt_q, img_q), dim=2)
        k = torch.cat((txt_k, img_k), dim=2)
        v = torch.cat((txt_v, img_v), dim=2)
        attn1 = attention(q, k, v, pe, self.attn_backend)
        n_txt = txt_q.shape[2]
        txt_attn, img_attn = attn1[:, :n_txt], attn1[:, n_txt:]

        img = img + img_mod1[2] * self.img_attn.proj(img_attn)
        img = img + img_mod2[2] * self.img_mlp(_modulate(self.img_norm2(img), img_mod2[0], img_mod2[1]))
        txt = txt + txt_mod1[2] * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2[2] * self.txt_mlp(_modulate(self.txt_norm2(txt), txt_mod2[0], txt_mod2[1]))
        return img, txt


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP (ViT-22B style) on the concatenated [txt, img] sequence."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, qk_scale=None, fused_qkv=True):
        super().__init__()
        self.hidden_dim = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5   # upstream keeps it but flash-attn uses its default
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

    def forward(self, x, vec, pe):
        (shift, scale, gate), _ = self.modulation(vec)
        x_mod = _modulate(self.pre_norm(x), shift, scale)
        B, L, _ = x.shape
        H, D = self.num_heads, self.head_dim
        if self.fused_qkv:
            qkv, mlp = torch.split(self.linear1(x_mod), [3 * self.hidden_size, self.mlp_hidden_dim], dim=-1)
            q, k, v = qkv.reshape(B, L, 3, H, D).permute(2, 0, 3, 1, 4)
        else:
            q = self.q_proj(x_mod).reshape(B, L, H, D)
            k = self.k_proj(x_mod).reshape(B, L, H, D)
            v, mlp = torch.split(self.v_mlp(x_mod), [self.hidden_size, self.mlp_hidden_dim], dim=-1)
            v = v.reshape(B, L, H, D)
        q, k = self.norm(q, k, v)
        if not self.fused_qkv:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attn_1 = attention(q, k, v, pe, self.attn_backend)
        output = self.linear2(torch.cat((attn_1, self.mlp_act(mlp)), 2))
        return x + gate * output


class LastLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(SiLU(), Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        x = (1 + scale[:, None, :]) * self.norm_final(x) + shift[:, None, :]
        return self.linear(x)
