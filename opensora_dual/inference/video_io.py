"""Writing and reading samples: upstream ``save_sample`` (``opensora/datasets/utils.py``) without torch.

* ``to_uint8_frames``: float [C, T, H, W] in [-1, 1] -> uint8 [T, H, W, C] with upstream's arithmetic, in
  float32: clamp to [-1, 1], (x + 1) / 2, x * 255 + 0.5, clamp to [0, 255], truncate. (Upstream runs it in the
  decoder's dtype, bf16 in the release config, which can move values by a level; float32 here.)
* ``save_sample``: T == 1 -> PNG, else H.264 mp4 (libx264, yuv420p, libx264's default quality, as
  torchvision's ``write_video`` which upstream calls).
* ``read_video``: frames and fps with PyAV (rgb24).

PyAV and PIL are imported inside the functions.
"""
import os
import secrets
from fractions import Fraction
from numbers import Integral, Real

import numpy as np

from opensora_dual.inference.errors import InferenceInputError
from opensora_dual.inference.references import decode_video_rgb


def to_uint8_frames(video):
    """float [C, T, H, W] (values in [-1, 1]; outside is clamped) -> uint8 [T, H, W, C], upstream's rounding
    (``floor(255 * (x + 1) / 2 + 0.5)`` evaluated in float32). NaN raises ``InferenceInputError``."""
    x = np.asarray(video)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.number):
        raise InferenceInputError(f"video must be a numeric array [C, T, H, W], got shape {x.shape} {x.dtype}")
    x = x.astype(np.float32)
    if np.isnan(x).any():
        raise InferenceInputError("video contains NaN values")
    x = np.clip(x, np.float32(-1.0), np.float32(1.0))
    x = (x + np.float32(1.0)) / np.float32(2.0)
    x = np.clip(x * np.float32(255.0) + np.float32(0.5), np.float32(0.0), np.float32(255.0))
    return np.ascontiguousarray(x.astype(np.uint8).transpose(1, 2, 3, 0))


def _check_frames(frames, name="frames"):
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InferenceInputError(
            f"{name} must be uint8 [T>=1, H, W, 3], got shape {frames.shape} dtype {frames.dtype}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise InferenceInputError(f"{name} have an empty frame size {frames.shape[1]}x{frames.shape[2]}")
    return frames


def _frame_rate(fps):
    if isinstance(fps, bool) or not isinstance(fps, Real) or not (np.isfinite(float(fps)) and fps > 0):
        raise InferenceInputError(f"fps must be a positive number, got {fps!r}")
    if isinstance(fps, Integral):
        return Fraction(int(fps))
    return Fraction(float(fps)).limit_denominator(1001)


def _write_atomically(path, write):
    """Run ``write(fileobj)`` on a temporary sibling of ``path``, then ``os.replace`` it into place. The file is
    created with mode 0o666 minus the umask (what ``open()`` gives), not ``mkstemp``'s 0o600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ext = os.path.splitext(path)[1]
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(6)}{ext}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _write_png(frame, f):
    from PIL import Image

    Image.fromarray(frame, mode="RGB").save(f, format="PNG")


def _write_mp4(frames, rate, f):
    import av

    t, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:  # yuv420p needs even sizes: replicate the last row / column
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = w + pad_w
        stream.height = h + pad_h
        stream.pix_fmt = "yuv420p"
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def save_sample(frames_uint8, fps, save_path_without_ext):
    """Write uint8 frames [T, H, W, 3]: ``{path}.png`` when T == 1, else ``{path}.mp4`` (H.264 via libx264,
    yuv420p so that common players read it, at ``fps``). Returns the path written.

    The file appears atomically (written to a temporary sibling, then ``os.replace``), with permissions from the
    umask; missing parent directories are created. yuv420p needs even sizes, so an odd height or width is padded
    by one edge-replicated row / column for the encoder: the mp4 is then (H+1) x W or H x (W+1) (upstream's
    torchvision/libx264 call fails on odd sizes). Non-integer fps is kept as a fraction (torchvision rounds it).
    """
    frames = _check_frames(frames_uint8)
    save_path_without_ext = os.fspath(save_path_without_ext)
    if frames.shape[0] == 1:
        path = save_path_without_ext + ".png"
        return _write_atomically(path, lambda f: _write_png(frames[0], f))
    rate = _frame_rate(fps)
    path = save_path_without_ext + ".mp4"
    return _write_atomically(path, lambda f: _write_mp4(frames, rate, f))


def read_video(path):
    """``(frames uint8 [T, H, W, 3], fps)`` of a video file (PyAV, rgb24, first video stream). A missing or
    unreadable file raises ``InferenceInputError``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InferenceInputError(f"video not found: {path}")
    return decode_video_rgb(path)


def write_side_by_side(left_frames, right_frames, path, fps):
    """Write two uint8 clips [T, H, W, 3] (same T and H) next to each other (left | right) with ``save_sample``.
    ``path`` may end in ``.mp4`` / ``.png`` or have no extension; the written path is returned (PNG when T == 1)."""
    left = _check_frames(left_frames, "left frames")
    right = _check_frames(right_frames, "right frames")
    if left.shape[:2] != right.shape[:2]:
        raise InferenceInputError(
            f"side by side needs the same frame count and height, got {left.shape[:3]} and {right.shape[:3]}")
    base, ext = os.path.splitext(os.fspath(path))
    if ext.lower() not in (".mp4", ".png"):
        base = os.fspath(path)
    return save_sample(np.concatenate([left, right], axis=2), fps, base)
