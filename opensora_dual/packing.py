"""Latents <-> MMDiT tokens, and the RoPE position ids (Open-Sora 2.0, ``main:opensora/utils/sampling.py``).

Framework-free numpy, used by both twins' callers (sampling, tests, example inputs):
- ``pack``:   "b c t (h ph) (w pw) -> b (t h w) (c ph pw)"
- ``unpack``: the inverse, given the latent's (t, h, w)
- ``img_ids``: the (t, h, w) integer grid of the packed latent, [B, t*h*w, 3] float32 (row-major t, h, w);
- ``txt_ids``: zeros [B, L, 3] (text tokens are not rotated).
"""
import numpy as np


def pack(x: np.ndarray, patch_size: int = 2) -> np.ndarray:
    b, c, t, H, W = x.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"latent height/width {H}x{W} must be multiples of the patch size {p}")
    h, w = H // p, W // p
    x = x.reshape(b, c, t, h, p, w, p).transpose(0, 2, 3, 5, 1, 4, 6)     # b t h w c ph pw
    return np.ascontiguousarray(x.reshape(b, t * h * w, c * p * p))


def unpack(tokens: np.ndarray, t: int, H: int, W: int, patch_size: int = 2) -> np.ndarray:
    """tokens [b, t*h*w, c*p*p] -> latent [b, c, t, H, W] (H, W: the latent's size, multiples of p)."""
    p = patch_size
    h, w = H // p, W // p
    b, n, d = tokens.shape
    if n != t * h * w or d % (p * p):
        raise ValueError(f"{tokens.shape[1:]} tokens do not unpack to t={t}, H={H}, W={W}, patch {p}")
    c = d // (p * p)
    x = tokens.reshape(b, t, h, w, c, p, p).transpose(0, 4, 1, 2, 5, 3, 6)  # b c t h ph w pw
    return np.ascontiguousarray(x.reshape(b, c, t, H, W))


def img_ids(batch: int, t: int, h: int, w: int) -> np.ndarray:
    """Position ids of the packed tokens: (t, h, w) grid of the *packed* latent (h, w already divided by p)."""
    ids = np.zeros((t, h, w, 3), np.float32)
    ids[..., 0] = np.arange(t)[:, None, None]
    ids[..., 1] = np.arange(h)[None, :, None]
    ids[..., 2] = np.arange(w)[None, None, :]
    return np.ascontiguousarray(np.broadcast_to(ids.reshape(1, t * h * w, 3), (batch, t * h * w, 3)))


def txt_ids(batch: int, length: int) -> np.ndarray:
    return np.zeros((batch, length, 3), np.float32)
