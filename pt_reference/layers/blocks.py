"""DiT building blocks shared by STDiT/STDiT2/STDiT3 (upstream ``v1.2.0:opensora/models/layers/blocks.py``).

The reference keeps upstream's module and attribute names so that released checkpoints load with
``strict=True``. Differences from upstream, none of which change a number:
- xformers' packed block-diagonal cross-attention is written as a loop over samples, each query block
  attending to its own slice of the packed text (the same mathematics, no xformers dependency);
- ``rotary_embedding_torch.RotaryEmbedding`` is reproduced in a few lines (``RotaryEmbedding`` below);
- timm's ``Mlp`` is reduced to ``fc1, act, fc2`` (its dropouts are p=0 and its norm is Identity: no keys).
"""
import functools
import math

import torch
from torch import nn
import torch.nn.functional as F

from pt_reference.layers.attention import scaled_dot_product_attention
from pt_reference.layers.basic import GELU, Conv3d, Identity, LayerNorm, Linear, RMSNorm, SiLU


def approx_gelu():
    return GELU(approximate="tanh")


def t2i_modulate(x, shift, scale):
    return x * (1 + scale) + shift


def t_mask_select(x_mask, x, masked_x, T, S):
    """Per frame: x where x_mask[b, t] is True (frame being generated), masked_x where False (condition frame)."""
    B = x.shape[0]
    x = x.reshape(B, T, S, -1)
    masked_x = masked_x.reshape(B, T, S, -1)
    x = torch.where(x_mask[:, :, None, None], x, masked_x)
    return x.reshape(B, T * S, -1)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=approx_gelu, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RotaryEmbedding(nn.Module):
    """``rotary_embedding_torch==0.5.3`` ``RotaryEmbedding(dim)`` as STDiT2/3 use it.

    ``freqs`` is a Parameter (state-dict key ``rope.freqs``, requires_grad False) and is cast with the model,
    so under bf16 inference the angles are computed in bf16 (upstream behaviour). Pairs are interleaved:
    the angle of pair i is applied to dims (2i, 2i+1).
    """

    def __init__(self, dim, theta=10000):
        super().__init__()
        # on the CPU even under a meta-device context: the op on meta imports torch's prims (1.4 s per process,
        # most of a cold conversion's overhead); nn.Parameter then follows the context's device
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, device="cpu")[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(freqs.to(torch.get_default_device()), requires_grad=False)

    @staticmethod
    def rotate_half(x):
        x = x.reshape(*x.shape[:-1], -1, 2)
        x1, x2 = x.unbind(dim=-1)
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    def rotate_queries_or_keys(self, t, seq_dim=-2):
        seq_len = t.shape[seq_dim]
        seq = torch.arange(seq_len, device=t.device, dtype=t.dtype)
        freqs = torch.einsum("..., f -> ... f", seq.type(self.freqs.dtype), self.freqs)
        freqs = freqs.repeat_interleave(2, dim=-1)  # "... n -> ... (n r)", r=2
        return t * freqs.cos() + self.rotate_half(t) * freqs.sin()


class Attention(nn.Module):
    """Self-attention with fused qkv, optional qk RMSNorm and RoPE (``rope`` is a callable on q/k).

    ``qk_norm_legacy=True`` (v1.1 configs) applies RoPE before the q/k norm; otherwise norm then RoPE.
    ``enable_flash_attn`` selects PyTorch SDPA; otherwise the written-out math path of upstream.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_norm=False, enable_flash_attn=False, rope=None,
                 qk_norm_legacy=False):
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.enable_flash_attn = enable_flash_attn
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else Identity()
        self.qk_norm_legacy = qk_norm_legacy
        self.proj = Linear(dim, dim)
        self.rope = rope is not None
        self.rotary_emb = rope

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.qk_norm_legacy:
            if self.rope:
                q, k = self.rotary_emb(q), self.rotary_emb(k)
            q, k = self.q_norm(q), self.k_norm(k)
        else:
            q, k = self.q_norm(q), self.k_norm(k)
            if self.rope:
                q, k = self.rotary_emb(q), self.rotary_emb(k)
        backend = "sdpa" if self.enable_flash_attn else "math"
        x = scaled_dot_product_attention(q, k, v, scale=self.scale, backend=backend)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class MultiHeadCrossAttention(nn.Module):
    """Cross-attention from video tokens to text tokens.

    ``cond`` is the packed text [1, sum(y_lens), C] and ``y_lens`` the valid length per sample, as upstream's
    ``encode_text`` produces them; sample b's N queries attend only to its own y_lens[b] tokens (xformers
    ``BlockDiagonalMask.from_seqlens([N] * B, y_lens)`` upstream).
    """

    def __init__(self, d_model, num_heads):
        super().__init__()
        assert d_model % num_heads == 0, "d_model must be divisible by num_heads"
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim = d_model // num_heads
        self.q_linear = Linear(d_model, d_model)
        self.kv_linear = Linear(d_model, d_model * 2)
        self.proj = Linear(d_model, d_model)

    def forward(self, x, cond, y_lens):
        B, N, C = x.shape
        q = self.q_linear(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_linear(cond).view(-1, 2, self.num_heads, self.head_dim)
        k_all, v_all = kv.unbind(1)  # [sum(y_lens), H, D]
        outs, start = [], 0
        for b, length in enumerate(y_lens):
            k = k_all[start:start + length].transpose(0, 1)[None]
            v = v_all[start:start + length].transpose(0, 1)[None]
            outs.append(scaled_dot_product_attention(q[b:b + 1], k, v, backend="math"))
            start += length
        x = torch.cat(outs, dim=0).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class PatchEmbed3D(nn.Module):
    """Video to patch tokens: zero-pad T/H/W at the end up to patch multiples, Conv3d(kernel=stride=patch)."""

    def __init__(self, patch_size=(2, 4, 4), in_chans=3, embed_dim=96, flatten=True):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.flatten = flatten
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.proj = Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x):
        _, _, D, H, W = x.size()
        pt, ph, pw = self.patch_size
        if W % pw != 0:
            x = F.pad(x, (0, pw - W % pw))
        if H % ph != 0:
            x = F.pad(x, (0, 0, 0, ph - H % ph))
        if D % pt != 0:
            x = F.pad(x, (0, 0, 0, 0, 0, pt - D % pt))
        x = self.proj(x)  # B C T H W
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # B (T H W) C
        return x


class TimestepEmbedder(nn.Module):
    """Sinusoid (cos first, max_period 1e4, dim 256) -> Linear, SiLU, Linear."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(Linear(frequency_embedding_size, hidden_size), SiLU(), Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None].to(t.device)
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t, dtype):
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size).to(dtype)
        return self.mlp(t_freq)


class SizeEmbedder(TimestepEmbedder):
    """Embeds scalar conditions (fps, sizes): each of the ``dims`` values through the timestep embedding."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__(hidden_size=hidden_size, frequency_embedding_size=frequency_embedding_size)
        self.outdim = hidden_size

    def forward(self, s, bs):
        if s.ndim == 1:
            s = s[:, None]
        assert s.ndim == 2
        if s.shape[0] != bs:
            s = s.repeat(bs // s.shape[0], 1)
            assert s.shape[0] == bs
        b, dims = s.shape[0], s.shape[1]
        s_freq = self.timestep_embedding(s.reshape(b * dims), self.frequency_embedding_size).to(self.dtype)
        s_emb = self.mlp(s_freq)
        return s_emb.reshape(b, dims * self.outdim)

    @property
    def dtype(self):
        return next(self.parameters()).dtype


class CaptionEmbedder(nn.Module):
    """T5 features -> hidden: Mlp(caption_channels -> C -> C, GELU-tanh); ``y_embedding`` is the null caption."""

    def __init__(self, in_channels, hidden_size, uncond_prob, act_layer=approx_gelu, token_num=120):
        super().__init__()
        self.y_proj = Mlp(in_features=in_channels, hidden_features=hidden_size, out_features=hidden_size,
                          act_layer=act_layer)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels).div_(in_channels ** 0.5))
        self.uncond_prob = uncond_prob

    def token_drop(self, caption, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = torch.rand(caption.shape[0], device=caption.device) < self.uncond_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids[:, None, None, None], self.y_embedding, caption)

    def forward(self, caption, train, force_drop_ids=None):
        if train:
            assert caption.shape[2:] == self.y_embedding.shape
        if (train and self.uncond_prob > 0) or force_drop_ids is not None:
            caption = self.token_drop(caption, force_drop_ids)
        return self.y_proj(caption)


class PositionEmbedding2D(nn.Module):
    """Sin-cos 2D embedding computed on the fly; first half encodes the column (w) coordinate (MAE convention)."""

    def __init__(self, dim):
        super().__init__()
        assert dim % 4 == 0, "dim must be divisible by 4"
        self.dim = dim
        half_dim = dim // 2
        # Built on the CPU even under a meta-device context (converter shape oracles): the op on meta pulls in
        # torch._dynamo (1.6 s); the buffer is non-persistent, so this changes no key.
        inv_freq = 1.0 / (10000 ** (torch.arange(0, half_dim, 2, device="cpu").float() / half_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _get_sin_cos_emb(self, t):
        out = torch.einsum("i,d->id", t, self.inv_freq)
        return torch.cat((torch.sin(out), torch.cos(out)), dim=-1)

    @functools.lru_cache(maxsize=512)
    def _get_cached_emb(self, device, dtype, h, w, scale=1.0, base_size=None):
        grid_h = torch.arange(h, device=device) / scale
        grid_w = torch.arange(w, device=device) / scale
        if base_size is not None:
            grid_h *= base_size / h
            grid_w *= base_size / w
        grid_h, grid_w = torch.meshgrid(grid_w, grid_h, indexing="ij")  # here w goes first (upstream)
        grid_h = grid_h.t().reshape(-1)
        grid_w = grid_w.t().reshape(-1)
        emb_h = self._get_sin_cos_emb(grid_h)
        emb_w = self._get_sin_cos_emb(grid_w)
        return torch.concat([emb_h, emb_w], dim=-1).unsqueeze(0).to(dtype)

    def forward(self, x, h, w, scale=1.0, base_size=None):
        return self._get_cached_emb(x.device, x.dtype, h, w, scale, base_size)


class T2IFinalLayer(nn.Module):
    """LN (no affine) + modulate with ``scale_shift_table`` [2, C] + t, then Linear to patch pixels.

    Upstream quirk kept: in the x_mask branch the t0 variant is computed from ``norm_final`` of the already
    modulated x (``x`` is reassigned before ``x_zero`` is computed), not from the block output.
    """

    def __init__(self, hidden_size, num_patch, out_channels, d_t=None, d_s=None):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(hidden_size, num_patch * out_channels, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size).div_(hidden_size ** 0.5))
        self.out_channels = out_channels
        self.d_t, self.d_s = d_t, d_s

    def forward(self, x, t, x_mask=None, t0=None, T=None, S=None):
        T = self.d_t if T is None else T
        S = self.d_s if S is None else S
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x = t2i_modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            shift_zero, scale_zero = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            x_zero = t2i_modulate(self.norm_final(x), shift_zero, scale_zero)
            x = t_mask_select(x_mask, x, x_zero, T, S)
        return self.linear(x)
