"""The training dataset of Open-Sora v1.2 (upstream ``VariableVideoTextDataset`` in
``opensora/datasets/datasets.py`` with ``temporal_random_crop`` from ``opensora/datasets/utils.py``), numpy only,
and a loader that skips bad samples instead of ending the epoch.

Table (csv, or parquet when pandas + pyarrow are installed): required ``path`` and ``text``; for variable-size
training also ``num_frames``, ``height``, ``width``, ``aspect_ratio`` (H / W); optional ``fps``, ``resolution``,
``text_len``, ``aes``, ``flow``, ``match``, ``ocr``, ``cmotion`` and anything else (kept as strings). Empty cells
are None. A relative ``path`` is looked up from the working directory (upstream), then from the table's folder.

``VariableVideoTextDataset.get(index, num_frames, height, width, rng)`` is upstream's ``getitem("i-T-H-W")``:

* videos (.mp4 .avi .mov .mkv): all frames decoded with PyAV (rgb24); a temporal crop of ``num_frames`` frames at
  ``frame_interval``: ``size = T * frame_interval``, ``begin ~ U{0 .. max(0, total - size - 1)}``,
  ``end = min(begin + size, total)``, indices ``np.linspace(begin, end - 1, T, dtype=int)`` (so with
  ``frame_interval > 1`` the indices are evenly spread, not exactly every k-th frame, as upstream); then
  "resize_crop" to (height, width) with the same functions as ``opensora_dual.inference.references``;
  ``fps = stream_fps // frame_interval`` (floor division of the float rate, v1.2.0), 24 when the stream has none;
* images (torchvision's extensions): PIL "resize_crop", one frame, ``fps = IMG_FPS`` (120);
* ``video`` float32 [3, T, H, W] in [-1, 1]; ``ar = height / width``.

Any problem with one sample's file (missing, unreadable, unsupported extension, fewer frames than asked, an image
asked for several frames) raises ``CorruptSampleError``; ``SkippingLoader`` records it and goes on.
"""
import csv
import math
import os
from numbers import Integral

import numpy as np

from opensora_dual.data.errors import CorruptSampleError, DataError
from opensora_dual.inference.aspect import IMG_FPS
from opensora_dual.inference.errors import InferenceInputError
from opensora_dual.inference.references import (IMG_EXTENSIONS, VID_EXTENSIONS, _cover_size, _normalize,
                                                _read_image, decode_video_rgb, resize_bilinear)
from opensora_dual.inference.video_io import _write_atomically

REQUIRED_COLUMNS = ("path", "text")
VARIABLE_COLUMNS = ("num_frames", "height", "width", "aspect_ratio")
INT_COLUMNS = ("num_frames", "height", "width", "resolution", "text_len")
FLOAT_COLUMNS = ("aspect_ratio", "fps", "aes", "flow", "match", "ocr")
TRANSFORMS = ("resize_crop",)
DEFAULT_VIDEO_FPS = 24  # upstream's value when the stream reports no average rate


# ---------------------------------------------------------------------------------------------------------------
# the table


def _parse_number(value, column, kind, where):
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() in ("nan", "none", "null"):
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {column!r} must be a number, got {value!r}") from None
    if math.isnan(number):
        return None
    if kind is int:
        if not number.is_integer():
            raise DataError(f"{where}: column {column!r} must be an integer, got {value!r}")
        return int(number)
    return number


def _typed_rows(records, columns, source, variable):
    missing = [c for c in REQUIRED_COLUMNS + (VARIABLE_COLUMNS if variable else ()) if c not in columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {', '.join(missing)} (columns: "
                        f"{', '.join(columns) if columns else 'none'})")
    rows = []
    for n, record in enumerate(records):
        where = f"{source} row {n + 1}"
        row = {}
        for key, value in record.items():
            if key in INT_COLUMNS:
                row[key] = _parse_number(value, key, int, where)
            elif key in FLOAT_COLUMNS:
                row[key] = _parse_number(value, key, float, where)
            else:
                row[key] = None if value is None else str(value)
        if not row.get("path"):
            raise DataError(f"{where}: empty path")
        if row.get("text") is None:
            row["text"] = ""
        if variable:
            empty = [c for c in VARIABLE_COLUMNS if row.get(c) is None]
            if empty:
                raise DataError(f"{where} ({row['path']}): empty {', '.join(empty)}; fill them with "
                                f"scripts/datautil_info.py")
        rows.append(row)
    return rows


def _read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        records = [dict(r) for r in reader]
    return columns, records


def _read_parquet(path):
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pandas and pyarrow (pip install pandas pyarrow), or "
                        f"convert the table to csv") from None
    try:
        frame = pd.read_parquet(path)
    except ImportError as e:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow): {e}") from None
    columns = [str(c) for c in frame.columns]
    records = [{str(k): v for k, v in r.items()} for r in frame.to_dict(orient="records")]
    return columns, records


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def write_table(path, rows, columns):
    """Write rows (dicts) as a csv with the given columns, atomically (temporary sibling + ``os.replace``).
    None / NaN cells are written empty (as pandas does). Returns the path."""
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    data = buffer.getvalue().encode("utf-8")
    return _write_atomically(os.fspath(path), lambda f: f.write(data))


def read_table(path, variable=True):
    """Rows (dicts with typed values) of a csv / parquet dataset table. ``variable=True`` also requires
    num_frames, height, width, aspect_ratio (filled in every row). Missing columns raise one ``DataError`` that
    names them all."""
    path = os.fspath(path)
    columns, records = read_raw_table(path, "dataset table")
    return _typed_rows(records, columns, path, variable)


def read_raw_table(path, what="table"):
    """(columns, records of strings) of a .csv or .parquet file; ``what`` names it in the errors."""
    if not os.path.isfile(path):
        raise DataError(f"{what} not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return _read_csv(path)
    if ext == ".parquet":
        return _read_parquet(path)
    raise DataError(f"unsupported {what} {path}: use .csv or .parquet")


# ---------------------------------------------------------------------------------------------------------------
# sample reading


def temporal_crop_indices(total_frames, num_frames, frame_interval, rng):
    """Upstream's ``temporal_random_crop`` indices (module docstring). Raises ``DataError`` when the crop holds
    fewer than ``num_frames`` frames (upstream's assert)."""
    size = num_frames * frame_interval
    rand_end = max(0, total_frames - size - 1)
    begin = int(rng.integers(0, rand_end, endpoint=True))
    end = min(begin + size, total_frames)
    if end - begin < num_frames:
        raise DataError(f"not enough frames: {total_frames} frames, {num_frames} needed at frame interval "
                        f"{frame_interval}")
    return np.linspace(begin, end - 1, num_frames, dtype=int)


def resize_crop_frames(frames, height, width):
    """uint8 [T, H0, W0, 3] -> float32 [3, T, height, width] in [-1, 1]: the video branch of upstream's
    "resize_crop" (cover, then centre crop at ``int(round(s - t) / 2)``), built on the functions of
    ``opensora_dual.inference.references`` so that references and training samples are transformed alike."""
    x = frames.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    h, w = x.shape[-2:]
    sh, sw, crop_columns = _cover_size(h, w, height, width)
    x = resize_bilinear(x, sh, sw)
    if crop_columns:
        i, j = 0, int(round(sw - width) / 2.0)
    else:
        i, j = int(round(sh - height) / 2.0), 0
    x = x[..., i:i + height, j:j + width]
    return np.ascontiguousarray(_normalize(x).transpose(1, 0, 2, 3))


def parse_sample_key(key):
    """``"i-T-H-W"`` (upstream's sampler output) or ``(i, T, H, W)`` -> four ints."""
    if isinstance(key, str):
        parts = key.split("-")
    else:
        parts = list(key)
    try:
        if len(parts) != 4:
            raise ValueError
        index, t, h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise DataError(f"sample key must be 'index-T-H-W' or (index, T, H, W), got {key!r}") from None
    return index, t, h, w


class VariableVideoTextDataset:
    """``VariableVideoTextDataset(table, transform_name="resize_crop", frame_interval=1, seed=0)``.

    ``table`` is a csv / parquet path or a list of row dicts (as ``read_table`` returns). ``get_data_info(i)``
    gives ``(num_frames, height, width)`` of row i for the bucket sampler; ``get(...)`` reads one sample;
    ``ds["i-T-H-W"]`` (upstream's key) and ``ds[(i, T, H, W)]`` do the same with the default generator.
    """

    def __init__(self, table, transform_name="resize_crop", frame_interval=1, seed=0):
        if transform_name not in TRANSFORMS:
            raise DataError(f"unsupported transform {transform_name!r}; supported: {', '.join(TRANSFORMS)}")
        if not isinstance(frame_interval, Integral) or isinstance(frame_interval, bool) or frame_interval < 1:
            raise DataError(f"frame_interval must be a positive integer, got {frame_interval!r}")
        if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        frame_interval, seed = int(frame_interval), int(seed)
        if isinstance(table, (str, os.PathLike)):
            self.table_path = os.path.abspath(os.fspath(table))
            self.rows = read_table(self.table_path, variable=True)
        else:
            self.table_path = None
            records = list(table)
            self.rows = _typed_rows(records, sorted({k for r in records for k in r}), "table", True)
        self.transform_name = transform_name
        self.frame_interval = frame_interval
        self.seed = seed

    def __len__(self):
        return len(self.rows)

    def get_data_info(self, index):
        row = self.rows[index]
        return row["num_frames"], row["height"], row["width"]

    def resolve_path(self, path):
        """A relative path is taken from the working directory when it exists there, else from the table's
        folder."""
        if os.path.isabs(path) or os.path.exists(path) or self.table_path is None:
            return path
        candidate = os.path.join(os.path.dirname(self.table_path), path)
        return candidate if os.path.exists(candidate) else path

    def get(self, index, num_frames, height, width, rng=None):
        """One sample (module docstring). ``rng`` (numpy Generator) draws the temporal crop; by default
        ``default_rng([seed, index])``."""
        if not 0 <= index < len(self.rows):
            raise DataError(f"sample index {index} out of range for {len(self.rows)} rows")
        if num_frames < 1 or height < 1 or width < 1:
            raise DataError(f"target size must be positive, got T={num_frames} H={height} W={width}")
        if rng is None:
            rng = np.random.default_rng([self.seed, index])
        row = self.rows[index]
        path = self.resolve_path(row["path"])
        ext = os.path.splitext(path)[1].lower()
        if ext not in VID_EXTENSIONS and ext not in IMG_EXTENSIONS:
            raise CorruptSampleError(path, f"unsupported file type {ext or '(none)'!r}")
        if not os.path.isfile(path):
            raise CorruptSampleError(path, "file not found")
        if ext in VID_EXTENSIONS:
            try:
                frames, stream_fps = decode_video_rgb(path)
            except InferenceInputError as e:
                raise CorruptSampleError(path, f"unreadable video ({e})") from None
            try:
                indices = temporal_crop_indices(len(frames), num_frames, self.frame_interval, rng)
            except DataError as e:
                raise CorruptSampleError(path, str(e)) from None
            video = resize_crop_frames(frames[indices], height, width)
            fps = float((stream_fps or DEFAULT_VIDEO_FPS) // self.frame_interval)
        else:
            if num_frames != 1:
                raise CorruptSampleError(path, f"an image cannot give {num_frames} frames (its table row says "
                                               f"num_frames={row['num_frames']})")
            try:
                video = np.ascontiguousarray(_read_image(path, height, width))
            except InferenceInputError as e:
                raise CorruptSampleError(path, f"unreadable image ({e})") from None
            fps = float(IMG_FPS)
        return {"video": video, "text": row["text"], "num_frames": num_frames, "height": height, "width": width,
                "ar": height / width, "fps": fps, "path": path, "index": index}

    def __getitem__(self, key):
        index, t, h, w = parse_sample_key(key)
        return self.get(index, t, h, w)


# ---------------------------------------------------------------------------------------------------------------
# batching


def collate(samples):
    """Samples of one bucket -> a batch: ``video`` float32 [B, 3, T, H, W], ``text`` / ``path`` lists,
    ``num_frames`` / ``height`` / ``width`` / ``index`` int64 [B], ``ar`` / ``fps`` float64 [B] (the dtypes
    torch's ``default_collate`` gives upstream)."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    shapes = {s["video"].shape for s in samples}
    if len(shapes) != 1:
        raise DataError(f"samples of one batch must share a shape, got {sorted(shapes)}")
    return {
        "video": np.stack([s["video"] for s in samples]),
        "text": [s["text"] for s in samples],
        "path": [s["path"] for s in samples],
        "index": np.array([s["index"] for s in samples], dtype=np.int64),
        "num_frames": np.array([s["num_frames"] for s in samples], dtype=np.int64),
        "height": np.array([s["height"] for s in samples], dtype=np.int64),
        "width": np.array([s["width"] for s in samples], dtype=np.int64),
        "ar": np.array([s["ar"] for s in samples], dtype=np.float64),
        "fps": np.array([s["fps"] for s in samples], dtype=np.float64),
    }


class SkippingLoader:
    """Batches for training: for each batch of the bucket sampler (lists of ``(index, T, H, W)`` or
    ``"index-T-H-W"``), read every sample, drop the ones that raise ``CorruptSampleError`` and yield the
    collated rest; a batch whose samples all failed is not yielded. Nothing ends the epoch early.

    ``skipped``: every ``(path, reason)`` skipped so far (all epochs); ``skipped_this_epoch``: the count in the
    current pass; ``empty_batches``: batches dropped because all their samples failed. Each sample's temporal crop
    comes from ``default_rng([seed, epoch, rank, batch position, slot])``, so a resumed epoch reads the same crops.
    ``seed`` defaults to the sampler's seed. Other exceptions propagate (they are bugs, not bad data).
    """

    def __init__(self, dataset, batch_sampler, seed=None, collate_fn=collate):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.seed = int(getattr(batch_sampler, "seed", 0) if seed is None else seed)
        self.collate_fn = collate_fn
        self.skipped = []
        self.skipped_this_epoch = 0
        self.empty_batches = 0

    def __iter__(self):
        sampler = self.batch_sampler
        epoch = int(getattr(sampler, "epoch", 0))
        rank = int(getattr(sampler, "rank", 0))
        self.skipped_this_epoch = 0
        count = int(getattr(sampler, "batches_done", 0))
        for batch in sampler:
            position = int(getattr(sampler, "batches_done", count + 1)) - 1
            count = position + 1
            samples = []
            for slot, key in enumerate(batch):
                index, t, h, w = parse_sample_key(key)
                rng = np.random.default_rng([self.seed, epoch, rank, position, slot])
                try:
                    samples.append(self.dataset.get(index, t, h, w, rng=rng))
                except CorruptSampleError as e:
                    self.skipped.append((e.path, e.reason))
                    self.skipped_this_epoch += 1
            if samples:
                yield self.collate_fn(samples)
            else:
                self.empty_batches += 1

    def report(self):
        """A short multi-line summary of the skipped samples (for logs)."""
        if not self.skipped:
            return "no sample skipped"
        lines = [f"{len(self.skipped)} sample(s) skipped ({self.empty_batches} batch(es) empty):"]
        seen = {}
        for path, reason in self.skipped:
            seen.setdefault((path, reason), 0)
            seen[(path, reason)] += 1
        lines += [f"  {path}: {reason}" + (f" (x{n})" if n > 1 else "") for (path, reason), n in seen.items()]
        return "\n".join(lines)

    def state_dict(self):
        """The sampler's resume state (batches consumed so far in this epoch)."""
        return self.batch_sampler.state_dict()
