"""A small synthetic video-text dataset for tests and demos: coloured squares and circles moving across a plain
background, written as H.264 mp4 (``opensora_dual.inference.save_sample``) plus PNG stills, and a csv with every
column the variable-size training reads (``path, text, num_frames, height, width, aspect_ratio, resolution,
fps``). Captions say what is drawn: ``"a red square moving left on a blue background"``.

Everything is drawn from ``np.random.default_rng([seed, kind, i])``: the same arguments give the same files.
"""
import os

import numpy as np

from opensora_dual.data.dataset import write_table
from opensora_dual.data.errors import DataError
from opensora_dual.inference.video_io import save_sample

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "purple": (140, 60, 190),
    "orange": (240, 140, 30),
}
SHAPES = ("square", "circle")
# direction -> (dy, dx) per unit of progress
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
COLUMNS = ("path", "text", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps")
# the smallest upstream resolution is 144p (36864 pixels); a sample needs >= 0.8 of that to get a bucket
DEFAULT_SIZES = ((144, 256), (256, 144), (192, 192))
DEFAULT_NUM_FRAMES = (16, 24, 32)


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _shape_mask(h, w, cy, cx, radius, shape):
    yy, xx = np.mgrid[0:h, 0:w]
    if shape == "square":
        return (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def _scene(rng, h, w):
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    names = list(COLORS)
    fg = names[int(rng.integers(len(names)))]
    bg = [n for n in names if n != fg][int(rng.integers(len(names) - 1))]
    radius = max(2, min(h, w) // 8)
    return shape, fg, bg, radius


def draw_moving_shape(rng, num_frames, height, width):
    """uint8 [T, H, W, 3] frames of one shape crossing the frame, and its caption."""
    shape, fg, bg, radius = _scene(rng, height, width)
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    dy, dx = DIRECTIONS[direction]
    # the centre travels between the two edges along the motion axis, at a random offset across it
    cy0 = float(rng.uniform(radius, height - 1 - radius))
    cx0 = float(rng.uniform(radius, width - 1 - radius))
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[:] = COLORS[bg]
    for t in range(num_frames):
        p = t / max(1, num_frames - 1)
        cy = cy0 if dy == 0 else (radius + p * (height - 1 - 2 * radius) if dy > 0
                                  else height - 1 - radius - p * (height - 1 - 2 * radius))
        cx = cx0 if dx == 0 else (radius + p * (width - 1 - 2 * radius) if dx > 0
                                  else width - 1 - radius - p * (width - 1 - 2 * radius))
        frames[t][_shape_mask(height, width, cy, cx, radius, shape)] = COLORS[fg]
    return frames, f"{_article(fg)} {fg} {shape} moving {direction} on {_article(bg)} {bg} background"


def draw_still_shape(rng, height, width):
    """uint8 [1, H, W, 3] of one shape at a random place, and its caption."""
    shape, fg, bg, radius = _scene(rng, height, width)
    cy = float(rng.uniform(radius, height - 1 - radius))
    cx = float(rng.uniform(radius, width - 1 - radius))
    frame = np.empty((1, height, width, 3), dtype=np.uint8)
    frame[:] = COLORS[bg]
    frame[0][_shape_mask(height, width, cy, cx, radius, shape)] = COLORS[fg]
    return frame, f"{_article(fg)} {fg} {shape} on {_article(bg)} {bg} background"


def _check_sizes(sizes):
    try:
        sizes = [(int(h), int(w)) for h, w in sizes]
    except (TypeError, ValueError):
        raise DataError(f"sizes must be a list of (height, width), got {sizes!r}") from None
    if not sizes or any(h < 8 or w < 8 for h, w in sizes):
        raise DataError(f"sizes must be a non-empty list of (height, width) >= 8, got {sizes!r}")
    return sizes


def make_synthetic_dataset(folder, n_videos=8, n_images=2, sizes=DEFAULT_SIZES, num_frames=DEFAULT_NUM_FRAMES,
                           fps=24, seed=0, corrupt=0, missing=0, csv_name="synthetic.csv"):
    """Write ``n_videos`` mp4 clips (``folder/videos/video_XXX.mp4``, video i has ``sizes[i % len]`` and
    ``num_frames[i % len]``) and ``n_images`` PNG stills (``folder/images/image_XXX.png``), then the csv
    ``folder/csv_name`` (absolute paths), and return the csv path.

    ``corrupt=N`` adds N rows whose mp4 holds random bytes (their size columns look valid -- the longest
    ``num_frames`` -- so they get a bucket and fail when read); ``missing=N`` adds N such rows pointing to files
    that do not exist. Odd sizes are written one
    pixel larger (yuv420p, see ``save_sample``); the csv records the written size. Image rows have an empty fps
    (as the info tool writes them).
    """
    sizes = _check_sizes(sizes)
    try:
        frame_counts = [int(n) for n in num_frames]
    except (TypeError, ValueError):
        raise DataError(f"num_frames must be a list of integers, got {num_frames!r}") from None
    if not frame_counts or any(n < 2 for n in frame_counts):
        raise DataError(f"num_frames must be a non-empty list of integers >= 2, got {num_frames!r}")
    for name, value in (("n_videos", n_videos), ("n_images", n_images), ("corrupt", corrupt),
                        ("missing", missing)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"{name} must be a non-negative integer, got {value!r}")
    folder = os.path.abspath(os.fspath(folder))
    rows = []

    def add_row(path, text, t, h, w, rate):
        rows.append({"path": path, "text": text, "num_frames": t, "height": h, "width": w,
                     "aspect_ratio": h / w, "resolution": h * w, "fps": rate})

    for i in range(n_videos):
        h, w = sizes[i % len(sizes)]
        t = frame_counts[i % len(frame_counts)]
        frames, text = draw_moving_shape(np.random.default_rng([seed, 0, i]), t, h, w)
        path = save_sample(frames, fps, os.path.join(folder, "videos", f"video_{i:03d}"))
        add_row(path, text, t, h + h % 2, w + w % 2, float(fps))
    for i in range(n_images):
        h, w = sizes[i % len(sizes)]
        frame, text = draw_still_shape(np.random.default_rng([seed, 1, i]), h, w)
        path = save_sample(frame, fps, os.path.join(folder, "images", f"image_{i:03d}"))
        add_row(path, text, 1, h, w, None)
    longest = max(frame_counts)  # bad rows claim the longest clip, so that every video bucket config takes them
    for i in range(corrupt):
        h, w = sizes[i % len(sizes)]
        t = longest
        path = os.path.join(folder, "videos", f"corrupt_{i:03d}.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(np.random.default_rng([seed, 2, i]).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        add_row(path, "a corrupt file that no decoder can read", t, h, w, float(fps))
    for i in range(missing):
        h, w = sizes[i % len(sizes)]
        t = longest
        path = os.path.join(folder, "videos", f"missing_{i:03d}.mp4")
        if os.path.exists(path):
            os.remove(path)
        add_row(path, "a file that does not exist", t, h, w, float(fps))
    return write_table(os.path.join(folder, csv_name), rows, COLUMNS)
