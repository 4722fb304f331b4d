"""Reading reference images / videos for conditioning (upstream ``read_from_path(path, image_size,
transform_name="resize_crop")`` in ``opensora/datasets/utils.py`` and ``video_transforms.py``).

"resize_crop" scales the frame so that it covers ``image_size`` = (th, tw) (the larger of th/h and tw/w), then
crops the centre:

* images (one frame, PIL, converted to RGB): PIL bicubic resize of the uint8 image to (sw, sh) =
  (round(w*r), th) or (tw, round(h*r)) with Python's round, crop offset ``int(round((s - t) / 2))`` (round half to
  even), then /255 and (x - 0.5) / 0.5 in float32. Same library, same calls: bit-identical to upstream.
* videos (all frames, PyAV, rgb24 as torchvision's ``read_video`` decodes them): /255 in float32, bilinear resize
  as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing) re-implemented in
  numpy, crop offset ``int(round(s - t) / 2)`` (upstream's video code rounds before halving, so odd margins are
  truncated: 3 -> 1, where the image code gives 2), then (x - 0.5) / 0.5.
  The source positions and weights are torch's bit for bit (including its fused multiply-add for
  ``scale * (dst + 0.5) - 0.5``). Remaining difference: the rounding order of the four-tap blend, at most 1-2
  float32 ulps (~2e-7 before normalisation); torch itself picks different CPU kernels (generic vs channels-last,
  depending on the thread count) that disagree with each other by the same amount.

Output: float32 [C=3, T, H, W] in [-1, 1]. Upstream downloads http(s)/ftp URLs; this machine has no internet, so
a URL raises ``InferenceInputError`` (download the file first). Missing, unsupported and unreadable files also
raise ``InferenceInputError``.
"""
import os
import re

import numpy as np

from opensora_dual.inference.errors import InferenceInputError

VID_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
# torchvision's IMG_EXTENSIONS, which upstream accepts for images.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_URL = re.compile(r"^(?:http|ftp)s?://", re.IGNORECASE)


def collect_reference_paths(reference_path_string):
    """``"a.png;b.mp4"`` -> ``["a.png", "b.mp4"]``; ``""`` / None -> ``[]``. Paths are not stripped (upstream
    splits on ";" only); an empty entry (``"a.png;"``) raises ``InferenceInputError``."""
    if reference_path_string is None or reference_path_string == "":
        return []
    paths = reference_path_string.split(";")
    for p in paths:
        if p == "":
            raise InferenceInputError(f"empty path in reference list {reference_path_string!r}")
    return paths


def _check_size(image_size):
    try:
        th, tw = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise InferenceInputError(f"image size must be (height, width), got {image_size!r}") from None
    if th < 1 or tw < 1:
        raise InferenceInputError(f"image size must be positive, got {image_size!r}")
    return th, tw


def _cover_size(h, w, th, tw):
    """Upstream's resize-to-cover: (sh, sw, crop_columns). When th/h > tw/w the height fits exactly and columns
    are cropped, otherwise the width fits and rows are cropped; the other side is ``round()``-ed (Python)."""
    rh, rw = th / h, tw / w
    if rh > rw:
        return th, round(w * rh), True
    return round(h * rw), tw, False


def _normalize(x01):
    return (x01 - np.float32(0.5)) / np.float32(0.5)


def _read_image(path, th, tw):
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InferenceInputError(f"cannot read reference image {path}: {e}") from None
    w, h = img.size
    sh, sw, crop_columns = _cover_size(h, w, th, tw)
    img = img.resize((sw, sh), Image.BICUBIC)
    if crop_columns:  # image code: round((s - t) / 2), half to even
        i, j = 0, int(round((sw - tw) / 2.0))
    else:
        i, j = int(round((sh - th) / 2.0)), 0
    arr = np.asarray(img, dtype=np.uint8)[i:i + th, j:j + tw]
    x = arr.astype(np.float32) / np.float32(255.0)
    return _normalize(x.transpose(2, 0, 1)[:, None])  # [3, 1, th, tw]


def rescale_image(frame_uint8, height, width):
    """Open-Sora 2.0 t2i2v's ``rescale_image_by_path``: torchvision ``Resize((height, width))`` of the saved PIL
    image = PIL bilinear resize (PIL's own antialiasing), uint8 [H, W, 3] -> uint8 [height, width, 3]. Upstream
    calls it with its (height, width) parameters swapped twice, which cancels: the image ends up height x width."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(frame_uint8, dtype=np.uint8))
    return np.asarray(img.resize((int(width), int(height)), Image.BILINEAR), dtype=np.uint8)


def _linear_weights(in_size, out_size):
    """Source indices and weights of torch's bilinear (align_corners=False) along one axis, float32."""
    dst = np.arange(out_size, dtype=np.float32)
    if in_size == out_size:
        idx0 = np.arange(out_size)
        return idx0, idx0, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    # torch evaluates scale * (dst + 0.5) - 0.5 as one fused multiply-add (one rounding); float64 is exact here
    src = (np.float64(scale) * (dst.astype(np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    idx0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - idx0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    lam0 = (np.float32(1.0) - lam1).astype(np.float32)
    idx1 = idx0 + (idx0 < in_size - 1)
    return idx0, idx1, lam0, lam1


def resize_bilinear(x, out_h, out_w):
    """Bilinear resize of float32 [..., H, W] as torch's ``interpolate(mode="bilinear", align_corners=False,
    antialias=False)`` computes it: out = lh0 * (lw0 * x[h0, w0] + lw1 * x[h0, w1]) + lh1 * (... x[h1, ...])."""
    x = np.asarray(x, dtype=np.float32)
    h0, h1, lh0, lh1 = _linear_weights(x.shape[-2], out_h)
    w0, w1, lw0, lw1 = _linear_weights(x.shape[-1], out_w)

    def along_w(rows):
        return rows[..., w0] * lw0 + rows[..., w1] * lw1

    top = along_w(x[..., h0, :])
    bottom = along_w(x[..., h1, :])
    return (top * lh0[:, None] + bottom * lh1[:, None]).astype(np.float32)


def decode_video_rgb(path):
    """All frames of the first video stream as uint8 [T, H, W, 3] (PyAV, rgb24) and the stream's average fps.
    Errors (unreadable file, no video stream, no frame) raise ``InferenceInputError``."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InferenceInputError(f"no video stream in {path}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except InferenceInputError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InferenceInputError(f"cannot read video {path}: {e}") from None
    if not frames:
        raise InferenceInputError(f"video has no frame: {path}")
    return np.stack(frames), (float(rate) if rate else 0.0)


def _read_video(path, th, tw):
    frames, _ = decode_video_rgb(path)
    x = frames.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)  # [T, 3, H, W]
    h, w = x.shape[-2:]
    sh, sw, crop_columns = _cover_size(h, w, th, tw)
    x = resize_bilinear(x, sh, sw)
    if crop_columns:  # video code: int(round(s - t) / 2), i.e. the half margin truncated
        i, j = 0, int(round(sw - tw) / 2.0)
    else:
        i, j = int(round(sh - th) / 2.0), 0
    x = x[..., i:i + th, j:j + tw]
    return _normalize(x).transpose(1, 0, 2, 3)  # [3, T, th, tw]


def read_reference(path, image_size):
    """A reference image or video as float32 [3, T, H, W] in [-1, 1] (T = 1 for images), resized to cover
    ``image_size`` = (H, W) and centre-cropped like upstream's "resize_crop" (see the module docstring)."""
    th, tw = _check_size(image_size)
    path = os.fspath(path)
    if _URL.match(path):
        raise InferenceInputError(
            f"reference {path} is a URL; URLs are not downloaded (this machine has no internet): download it first "
            f"and pass the local path")
    if not os.path.exists(path):
        raise InferenceInputError(f"reference not found: {path}")
    if os.path.isdir(path):
        raise InferenceInputError(f"reference is a directory, not a file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in VID_EXTENSIONS:
        return np.ascontiguousarray(_read_video(path, th, tw))
    if ext in IMG_EXTENSIONS:
        return np.ascontiguousarray(_read_image(path, th, tw))
    raise InferenceInputError(
        f"unsupported reference file type {ext!r} ({path}); videos: {', '.join(VID_EXTENSIONS)}; images: "
        f"{', '.join(IMG_EXTENSIONS)}")
