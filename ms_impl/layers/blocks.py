"""DiT building blocks, MindSpore port of ``pt_reference/layers/blocks.py`` (same classes and attributes).

Written for both PyNative and graph mode (``ms.jit``): static shapes only, no lambdas, ``mint.transpose``
for two axes. Port-specific choices (all parity-tested against the reference):
- text conditioning stays padded [B, L, C] with a boolean mask instead of upstream's packed sequence: each
  sample's queries see exactly its own valid tokens, which is what the packed block-diagonal mask means, and
  the shapes stay static for graph mode;
- RoPE angles are computed once per forward in fp32 and handed to the temporal attentions (the reference,
  like upstream, recomputes them in each attention in the parameter dtype);
- ``PatchEmbed3D.use_linear`` computes the non-overlapping patch Conv3d as reshape + matmul (Conv3d is slow on
  Ascend, mindone's ``patchify_conv3d_replace``); the weights keep the Conv3d layout and key.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops

from ms_impl.layers.attention import scaled_dot_product_attention
from ms_impl.layers.basic import GELU, Conv3d, Identity, LayerNorm, Linear, RMSNorm, SiLU, unbind
from ms_impl.device import on_ascend


def approx_gelu():
    return GELU(approximate="tanh")


def t2i_modulate(x, shift, scale):
    return x * (1 + scale) + shift


def t_mask_select(x_mask, x, masked_x, T, S):
    B = x.shape[0]
    x = x.reshape(B, T, S, -1)
    masked_x = masked_x.reshape(B, T, S, -1)
    x = mint.where(x_mask.reshape(B, T, 1, 1), x, masked_x)
    return x.reshape(B, T * S, -1)


class Mlp(nn.Cell):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=approx_gelu, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RotaryEmbedding(nn.Cell):
    """Interleaved-pair RoPE with the persisted ``freqs`` parameter (key ``rope.freqs``)."""

    def __init__(self, dim, theta=10000):
        super().__init__()
        freqs = 1.0 / (theta ** (np.arange(0, dim, 2)[: dim // 2].astype(np.float32) / dim))
        self.freqs = Parameter(Tensor(freqs.astype(np.float32)), name="freqs", requires_grad=False)

    def cos_sin(self, seq_len):
        """cos and sin of the angles [seq_len, dim], each angle repeated for its (2i, 2i+1) pair, fp32."""
        seq = ops.arange(0, seq_len, dtype=ms.float32)
        angles = ops.outer(seq, self.freqs.astype(ms.float32))
        angles = ops.stack((angles, angles), -1).reshape(seq_len, -1)
        return mint.cos(angles), mint.sin(angles)


def rotate_half(x):
    shape = x.shape
    # unbind, not x[..., 0]: a graph-mode index is a slow gather on CPU (see ``unbind``)
    x1, x2 = unbind(x.reshape(shape[:-1] + (shape[-1] // 2, 2)), -1)
    return ops.stack((-x2, x1), -1).reshape(shape)


def apply_rope(t, cos, sin):
    return t * cos.astype(t.dtype) + rotate_half(t) * sin.astype(t.dtype)


class Attention(nn.Cell):
    """Self-attention (fused qkv, optional qk RMSNorm, RoPE when ``rope`` is given).

    ``rope`` only says whether this attention rotates q/k; the angles arrive in ``construct`` (computed once
    by the model from the shared ``rope.freqs``), so no block holds a second copy of the parameter.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_norm=False, enable_flash_attn=False, rope=None,
                 qk_norm_legacy=False):
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_backend = "flash" if (enable_flash_attn and on_ascend()) else "math"
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else Identity()
        self.qk_norm_legacy = qk_norm_legacy
        self.proj = Linear(dim, dim)
        self.rope = rope is not None
        self.sp_size, self.sp_rank = 1, 0  # sequence parallelism: set by the model's switch

    def set_sequence_parallel(self, size, rank):
        """Ulysses-style: each rank holds 1/size of the sequence; attention runs on the whole sequence for
        num_heads/size heads. Ascend would use AlltoAll; MindSpore 2.10 has none on CPU ("Unsupported op
        [AlltoAll] on CPU"), so this gathers the sequence (AllGather) and keeps the rank's heads, which is
        the same exchange with more traffic."""
        if self.num_heads % size:
            raise ValueError(f"sequence parallelism over {size} ranks needs num_heads ({self.num_heads}) divisible by it")
        self.sp_size, self.sp_rank = size, rank
        self.all_gather = ops.AllGather()

    def _gather(self, x, axis):
        """AllGather along ``axis`` (MindSpore's AllGather concatenates on axis 0)."""
        g = self.all_gather(x).reshape((self.sp_size,) + x.shape)
        g = mint.permute(g, tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, x.ndim + 1)))
        return g.reshape(x.shape[:axis] + (self.sp_size * x.shape[axis],) + x.shape[axis + 1:])

    def construct(self, x, rope_cos=None, rope_sin=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        if self.sp_size > 1:  # gather the sequence, keep this rank's heads
            heads = self.num_heads // self.sp_size
            qkv = self._gather(qkv, 1)[:, :, :, self.sp_rank * heads:(self.sp_rank + 1) * heads]
        qkv = mint.permute(qkv, (2, 0, 3, 1, 4))
        q, k, v = unbind(qkv, 0)  # not qkv[0]: a gather in graph mode (``unbind``)
        if self.qk_norm_legacy:
            if self.rope:
                q, k = apply_rope(q, rope_cos, rope_sin), apply_rope(k, rope_cos, rope_sin)
            q, k = self.q_norm(q), self.k_norm(k)
        else:
            q, k = self.q_norm(q), self.k_norm(k)
            if self.rope:
                q, k = apply_rope(q, rope_cos, rope_sin), apply_rope(k, rope_cos, rope_sin)
        x = scaled_dot_product_attention(q, k, v, None, self.scale, self.attn_backend)
        if self.sp_size > 1:  # gather the heads, keep this rank's part of the sequence
            x = self._gather(x, 1)[:, :, self.sp_rank * N:(self.sp_rank + 1) * N]
        x = mint.transpose(x, 1, 2).reshape(B, N, C)
        return self.proj(x)


class MultiHeadCrossAttention(nn.Cell):
    """Video tokens attend to text tokens; ``cond`` is padded [B, L, C], ``mask`` [B, L] bool (True = valid)."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        assert d_model % num_heads == 0, "d_model must be divisible by num_heads"
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim = d_model // num_heads
        self.q_linear = Linear(d_model, d_model)
        self.kv_linear = Linear(d_model, d_model * 2)
        self.proj = Linear(d_model, d_model)
        self.attn_backend = "math"

    def construct(self, x, cond, mask=None):
        B, N, C = x.shape
        L = cond.shape[1]
        q = mint.transpose(self.q_linear(x).reshape(B, N, self.num_heads, self.head_dim), 1, 2)
        kv = mint.permute(self.kv_linear(cond).reshape(B, L, 2, self.num_heads, self.head_dim), (2, 0, 3, 1, 4))
        attn_mask = None if mask is None else mask.reshape(B, 1, 1, L)
        k, v = unbind(kv, 0)
        x = scaled_dot_product_attention(q, k, v, attn_mask, None, self.attn_backend)
        x = mint.transpose(x, 1, 2).reshape(B, N, C)
        return self.proj(x)


class PatchEmbed3D(nn.Cell):
    def __init__(self, patch_size=(2, 4, 4), in_chans=3, embed_dim=96, flatten=True):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.flatten = flatten
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.proj = Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.use_linear = False  # switch: patchify as reshape + matmul instead of Conv3d

    def construct(self, x):
        B, C, D, H, W = x.shape
        pt, ph, pw = self.patch_size
        pad_t, pad_h, pad_w = (pt - D % pt) % pt, (ph - H % ph) % ph, (pw - W % pw) % pw
        if pad_t + pad_h + pad_w > 0:
            x = ops.pad(x, (0, pad_w, 0, pad_h, 0, pad_t))
        if self.use_linear:
            Tn, Hn, Wn = (D + pad_t) // pt, (H + pad_h) // ph, (W + pad_w) // pw
            x = x.reshape(B, C, Tn, pt, Hn, ph, Wn, pw)
            x = mint.permute(x, (0, 2, 4, 6, 1, 3, 5, 7)).reshape(B, Tn * Hn * Wn, C * pt * ph * pw)
            w = self.proj.weight.reshape(self.embed_dim, -1)
            dt = self.proj.compute_dtype
            return mint.nn.functional.linear(x.astype(dt), w.astype(dt), self.proj.bias.astype(dt))
        x = self.proj(x)
        if self.flatten:
            x = mint.transpose(x.reshape(B, self.embed_dim, -1), 1, 2)
        return x


class TimestepEmbedder(nn.Cell):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.SequentialCell([Linear(frequency_embedding_size, hidden_size), SiLU(),
                                      Linear(hidden_size, hidden_size)])
        self.frequency_embedding_size = frequency_embedding_size
        half = frequency_embedding_size // 2
        # exp(-ln(max_period) * k / half) with the argument in float32 as torch computes it (a python float times a
        # float32 arange, then / half), the exp correctly rounded: 2 of 128 entries differ from torch's float32 exp
        # by one ulp (a float64 argument differed in 85 of 128)
        arg = (np.float32(-math.log(10000)) * np.arange(half, dtype=np.float32)) / np.float32(half)
        self._freqs = Tensor(np.exp(arg.astype(np.float64)).astype(np.float32))
        self.compute_dtype = ms.float32

    def timestep_embedding(self, t):
        args = t.reshape(-1, 1).astype(ms.float32) * self._freqs.reshape(1, -1)
        emb = mint.cat((mint.cos(args), mint.sin(args)), dim=-1)
        if self.frequency_embedding_size % 2:
            emb = mint.cat((emb, ops.zeros_like(emb[:, :1])), dim=-1)
        return emb

    def construct(self, t, dtype=None):
        return self.mlp(self.timestep_embedding(t).astype(self.compute_dtype))


class SizeEmbedder(TimestepEmbedder):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__(hidden_size=hidden_size, frequency_embedding_size=frequency_embedding_size)
        self.outdim = hidden_size

    def construct(self, s, bs):
        if s.ndim == 1:
            s = s.reshape(-1, 1)
        if s.shape[0] != bs:
            s = ops.tile(s, (bs // s.shape[0], 1))
        b, dims = s.shape[0], s.shape[1]
        s_emb = self.mlp(self.timestep_embedding(s.reshape(b * dims)).astype(self.compute_dtype))
        return s_emb.reshape(b, dims * self.outdim)


class CaptionEmbedder(nn.Cell):
    def __init__(self, in_channels, hidden_size, uncond_prob, act_layer=approx_gelu, token_num=120):
        super().__init__()
        self.y_proj = Mlp(in_features=in_channels, hidden_features=hidden_size, out_features=hidden_size,
                          act_layer=act_layer)
        init = np.random.default_rng(0).standard_normal((token_num, in_channels)) / in_channels ** 0.5
        self.y_embedding = Parameter(Tensor(init.astype(np.float32)), name="y_embedding", requires_grad=False)
        self.uncond_prob = uncond_prob

    def token_drop(self, caption, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = ops.uniform((caption.shape[0],), Tensor(0.0), Tensor(1.0)) < self.uncond_prob
        else:
            drop_ids = force_drop_ids == 1
        null = self.y_embedding.astype(caption.dtype).reshape((1, 1) + self.y_embedding.shape)
        return mint.where(drop_ids.reshape(-1, 1, 1, 1), null, caption)

    def construct(self, caption, train, force_drop_ids=None):
        if (train and self.uncond_prob > 0) or force_drop_ids is not None:
            caption = self.token_drop(caption, force_drop_ids)
        return self.y_proj(caption)


class PositionEmbedding2D(nn.Cell):
    """Same numbers as the reference; ``scale`` may be a Tensor so graph mode needs no ``.item()``."""

    def __init__(self, dim):
        super().__init__()
        assert dim % 4 == 0, "dim must be divisible by 4"
        self.dim = dim
        half_dim = dim // 2
        # Non-persistent in the reference (no checkpoint key): a constant here, not a Parameter.
        self.inv_freq = Tensor((1.0 / (10000 ** (np.arange(0, half_dim, 2).astype(np.float32) / half_dim)))
                               .astype(np.float32))

    def _get_sin_cos_emb(self, t):
        out = ops.outer(t, self.inv_freq)
        return mint.cat((mint.sin(out), mint.cos(out)), dim=-1)

    def construct(self, x, h, w, scale=1.0, base_size=None):
        grid_h = ops.arange(0, h, dtype=ms.float32) / scale
        grid_w = ops.arange(0, w, dtype=ms.float32) / scale
        if base_size is not None:
            grid_h = grid_h * (base_size / h)
            grid_w = grid_w * (base_size / w)
        # token (i, j) of the row-major h x w grid: first half from the column j, second half from the row i
        col = ops.broadcast_to(grid_w.reshape(1, w), (h, w)).reshape(-1)
        row = ops.broadcast_to(grid_h.reshape(h, 1), (h, w)).reshape(-1)
        emb = mint.cat((self._get_sin_cos_emb(col), self._get_sin_cos_emb(row)), dim=-1)
        return emb.reshape(1, h * w, self.dim).astype(x.dtype)


class T2IFinalLayer(nn.Cell):
    """Same quirk as the reference: the t0 variant normalises the already modulated x."""

    def __init__(self, hidden_size, num_patch, out_channels, d_t=None, d_s=None):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(hidden_size, num_patch * out_channels, bias=True)
        init = np.random.default_rng(0).standard_normal((2, hidden_size)) / hidden_size ** 0.5
        self.scale_shift_table = Parameter(Tensor(init.astype(np.float32)), name="scale_shift_table")
        self.out_channels = out_channels
        self.d_t, self.d_s = d_t, d_s

    def construct(self, x, t, x_mask=None, t0=None, T=None, S=None):
        T = self.d_t if T is None else T
        S = self.d_s if S is None else S
        table = self.scale_shift_table.astype(x.dtype).reshape(1, 2, -1)
        shift, scale = mint.chunk(table + t.reshape(t.shape[0], 1, -1), 2, dim=1)
        x = t2i_modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            zero = mint.chunk(table + t0.reshape(t0.shape[0], 1, -1), 2, dim=1)
            x = t_mask_select(x_mask, x, t2i_modulate(self.norm_final(x), zero[0], zero[1]), T, S)
        return self.linear(x)
