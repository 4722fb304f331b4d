"""Fixed sin-cos position tables (numpy, framework-free), as Open-Sora 1.0's STDiT builds its buffers.

Mirrors ``v1.0.0:opensora/models/layers/blocks.py`` (``get_2d_sincos_pos_embed``, ``get_1d_sincos_pos_embed``,
from MAE's ``util/pos_embed.py``). Both twins call these functions, so they hold the very same numbers.

Upstream's arithmetic, kept to the bit:
- spatial grid positions are float32 (``np.arange(n, dtype=float32) / scale``), temporal positions float64
  (``np.arange(n) / scale``); frequencies are float64 ``1 / 10000 ** (k / (D/2))``; sin/cos in float64; the
  model stores the result as float32;
- each 1D embedding is [sin | cos]; the 2D table's first half encodes the column (w) coordinate and the
  second half the row (h) coordinate (``np.meshgrid(grid_w, grid_h)``: "here w goes first").
"""
import numpy as np


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """[M] positions -> [M, embed_dim] float64: [sin(pos * w_k) | cos(pos * w_k)], w_k = 10000^(-k/(D/2))."""
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", np.asarray(pos).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, scale=1.0, base_size=None):
    """[gh * gw, embed_dim] float64 for a row-major gh x gw grid; token (i, j): [emb(j) | emb(i)]."""
    if not isinstance(grid_size, tuple):
        grid_size = (grid_size, grid_size)
    grid_h = np.arange(grid_size[0], dtype=np.float32) / scale
    grid_w = np.arange(grid_size[1], dtype=np.float32) / scale
    if base_size is not None:
        grid_h *= base_size / grid_size[0]
        grid_w *= base_size / grid_size[1]
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)      # here w goes first
    assert embed_dim % 2 == 0
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_w, emb_h], axis=1)


def get_1d_sincos_pos_embed(embed_dim, length, scale=1.0):
    """[length, embed_dim] float64 for positions 0..length-1 divided by ``scale`` (float64)."""
    pos = np.arange(0, length)[..., None] / scale
    return get_1d_sincos_pos_embed_from_grid(embed_dim, pos)


def stdit_pos_tables(hidden_size, grid, space_scale=1.0, time_scale=1.0):
    """STDiT's two buffers for a (T, H, W) token grid, float32: ``pos_embed`` [1, H*W, C] (grid positions
    divided by ``space_scale``) and ``pos_embed_temporal`` [1, T, C] (frame index divided by ``time_scale``)."""
    t, h, w = grid
    pos = get_2d_sincos_pos_embed(hidden_size, (h, w), scale=space_scale).astype(np.float32)[None]
    pos_t = get_1d_sincos_pos_embed(hidden_size, t, scale=time_scale).astype(np.float32)[None]
    return pos, pos_t
