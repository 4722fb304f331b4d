"""Fill the size columns of a dataset table from the files (upstream ``tools/datasets/datautil.py --info``).

For every row, the file at ``path`` is opened: images (torchvision's extensions) with PIL (``convert("RGB")``,
so truncated files fail), anything else as a video with PyAV, decoding every frame of the first video stream
(upstream counts decoded frames too). The row gets ``num_frames`` (1 for images), ``height``, ``width``,
``aspect_ratio`` = height / width, ``fps`` (the stream's average rate; empty for images, upstream's NaN) and
``resolution`` = height * width. Existing columns of those names are overwritten, new ones are appended in that
order; all other columns are copied verbatim.

Differences from upstream (docs/data.md): an unreadable file is dropped and listed (with the reason) in
``<output>_failed.csv`` and on stderr, where upstream writes 0, 0, 0, NaN, NaN, NaN and keeps the row unless
``--fmin 1`` is given; a video whose decoding fails part-way counts as unreadable (upstream keeps the frames
decoded before the error); the output csv is written atomically.
"""
import os
import sys

from opensora_dual.data.dataset import read_raw_table, write_table
from opensora_dual.data.errors import CorruptSampleError, DataError
from opensora_dual.inference.references import IMG_EXTENSIONS

INFO_COLUMNS = ("num_frames", "height", "width", "aspect_ratio", "fps", "resolution")


def _probe_image(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptSampleError(path, f"unreadable image ({e})") from None
    width, height = img.size
    return 1, height, width, None


def _probe_video(path):
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise CorruptSampleError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate
            count, height, width = 0, 0, 0
            for frame in container.decode(stream):
                count += 1
                height, width = frame.height, frame.width
    except CorruptSampleError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise CorruptSampleError(path, f"unreadable video ({e})") from None
    if count == 0:
        raise CorruptSampleError(path, "video has no frame")
    return count, height, width, (float(rate) if rate else None)


def probe_media(path):
    """``{num_frames, height, width, aspect_ratio, fps, resolution}`` of an image or video file; a missing or
    unreadable file raises ``CorruptSampleError``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CorruptSampleError(path, "file not found")
    if os.path.splitext(path)[1].lower() in IMG_EXTENSIONS:
        num_frames, height, width, fps = _probe_image(path)
    else:
        num_frames, height, width, fps = _probe_video(path)
    if height < 1 or width < 1:
        raise CorruptSampleError(path, f"empty frame size {height}x{width}")
    return {"num_frames": num_frames, "height": height, "width": width, "aspect_ratio": height / width,
            "fps": fps, "resolution": height * width}


def default_output_path(input_path, fmin=None):
    """Upstream's naming: ``<dir>/<name>_info[_fmin<N>].csv``."""
    directory, base = os.path.split(os.fspath(input_path))
    name = base.split(".")[0] + "_info" + (f"_fmin{fmin}" if fmin is not None else "")
    return os.path.join(directory, name + ".csv")


def failed_output_path(output_path):
    stem, _ = os.path.splitext(os.fspath(output_path))
    return stem + "_failed.csv"


def _resolve(path, table_dir):
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(table_dir, path)
    return candidate if os.path.exists(candidate) else path


def fill_info(rows, table_dir=".", fmin=None, progress=False, log=None):
    """``(kept, failed, too_short)`` for a list of row dicts with a ``path``: ``kept`` are the rows with the
    info columns filled, ``failed`` the unreadable rows with an ``error`` column, ``too_short`` the readable rows
    with fewer than ``fmin`` frames (images count as 1 frame, as upstream's ``--fmin``)."""
    from tqdm import tqdm

    kept, failed, too_short = [], [], []
    for row in tqdm(rows, desc="reading files", unit="file", disable=not progress, file=sys.stderr):
        path = row.get("path")
        try:
            if not path:
                raise CorruptSampleError("", "empty path")
            info = probe_media(_resolve(str(path), table_dir))
        except CorruptSampleError as e:
            failed.append(dict(row, error=e.reason))
            if log is not None:
                print(f"unreadable: {path}: {e.reason}", file=log)
            continue
        filled = dict(row, **info)
        if fmin is not None and info["num_frames"] < fmin:
            too_short.append(filled)
        else:
            kept.append(filled)
    return kept, failed, too_short


_STDERR = object()


def run_info(input_path, output_path=None, fmin=None, progress=True, log=_STDERR):
    """Read the table at ``input_path`` (csv, or parquet with pandas + pyarrow), fill the info columns, write
    ``output_path`` (default: upstream's ``<name>_info[_fmin<N>].csv``) and ``<output>_failed.csv`` (always,
    header only when nothing failed). Unreadable files are printed to ``log`` (default: the current
    ``sys.stderr``; None for silence). Returns a summary dict."""
    if log is _STDERR:
        log = sys.stderr
    input_path = os.fspath(input_path)
    if not os.path.isfile(input_path):
        raise DataError(f"input table not found: {input_path}")
    if fmin is not None and (not isinstance(fmin, int) or isinstance(fmin, bool) or fmin < 0):
        raise DataError(f"fmin must be a non-negative integer, got {fmin!r}")
    columns, records = read_raw_table(input_path, "input table")
    if "path" not in columns:
        raise DataError(f"{input_path}: missing required column path (columns: {', '.join(columns) or 'none'})")
    output_path = os.fspath(output_path) if output_path is not None else default_output_path(input_path, fmin)
    if os.path.splitext(output_path)[1].lower() != ".csv":
        raise DataError(f"the output table must be a .csv file, got {output_path}")
    table_dir = os.path.dirname(os.path.abspath(input_path))
    kept, failed, too_short = fill_info(records, table_dir, fmin, progress, log)
    out_columns = list(columns) + [c for c in INFO_COLUMNS if c not in columns]
    write_table(output_path, kept, out_columns)
    failed_columns = list(columns) + ([] if "error" in columns else ["error"])
    failed_path = write_table(failed_output_path(output_path), failed, failed_columns)
    return {"input": input_path, "output": output_path, "failed_csv": failed_path, "rows": len(records),
            "kept": len(kept), "failed": len(failed), "too_short": len(too_short)}
