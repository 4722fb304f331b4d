"""``read_checkpoint(path) -> Checkpoint``: one lazy, streaming view over every supported source.

Sources: a release folder (``config.json`` + weights found by standard names), ``.safetensors`` (single, or
sharded with ``*.safetensors.index.json``), ``.pth/.pt/.bin`` (single, or sharded with
``pytorch_model.bin.index.json``), MindSpore ``.ckpt``. Only metadata is read up front; ``get`` reads one tensor.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import numpy as np

from converters import dtypes
from converters.errors import ConversionError

# Weights files looked for in a folder, in this order (HF transformers, diffusers, ours).
WEIGHTS_NAMES = (
    "model.safetensors.index.json", "model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin.index.json", "pytorch_model.bin",
    "diffusion_pytorch_model.bin.index.json", "diffusion_pytorch_model.bin",
    "model.ckpt",
)
SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")


def _open_file(path):
    low = path.lower()
    if low.endswith(".safetensors"):
        from converters.st_io import SafetensorsFile

        return "safetensors", SafetensorsFile(path)
    if low.endswith(".ckpt"):
        from converters.ckpt_io import CkptFile

        return "ckpt", CkptFile(path)
    if low.endswith((".pth", ".pt", ".bin")):
        from converters.pth_io import PthFile

        return "pth", PthFile(path)
    raise ConversionError(f"{path}: unknown checkpoint format (expected .safetensors, .ckpt, .pth/.pt/.bin, an "
                          f"*.index.json or a release folder)")


def _sniff(path):
    """An empty file is its own clear error (the format readers then check their own structure)."""
    size = os.path.getsize(path)
    if size == 0:
        raise ConversionError(f"{path}: empty file")


def read_json(path, what="JSON"):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: corrupt {what} ({e})") from None


class Checkpoint:
    """Lazy view: ``keys()``, ``meta(name) -> (shape, dtype_str)``, ``get(name) -> np.ndarray``,
    ``read_raw(name) -> (raw ndarray, dtype_str)`` (bf16 as uint16 bits), ``config``, ``format``."""

    def __init__(self, path, format, files: Dict[str, object], index: Dict[str, Tuple[str, tuple, str]],
                 config=None, metadata=None, notes=None, config_path=None):
        self.path = path
        self.format = format
        self._files = files            # file path -> opened reader (or None until needed, for pth shards)
        self._index = index            # name -> (dtype, shape, file path)
        self.config = config
        self.config_path = config_path
        self.metadata = metadata or {}
        self.notes = list(notes or [])
        self._cached = None

    # -- mapping-like API
    def keys(self) -> List[str]:
        return list(self._index)

    def __contains__(self, name):
        return name in self._index

    def __len__(self):
        return len(self._index)

    def __iter__(self):
        return iter(self._index)

    def meta(self, name):
        dt, shape, _ = self._index[name]
        return tuple(shape), dt

    def nbytes(self, name):
        dt, shape, _ = self._index[name]
        return int(np.prod(shape, dtype=np.int64)) * dtypes.itemsize(dt)

    def file_of(self, name):
        return self._index[name][2]

    def _reader(self, fpath):
        r = self._files.get(fpath)
        if r is None:   # pth shards: keep one loaded at a time
            if self._cached is not None:
                self._files[self._cached].close()
                self._files[self._cached] = None
            _, r = _open_file(fpath)
            self._files[fpath] = r
            self._cached = fpath
        return r

    def read_raw(self, name):
        if name not in self._index:
            raise KeyError(name)
        raw, dt = self._reader(self._index[name][2]).read(name)
        return raw, dt

    def raw_ranges(self, name):
        """(fd, [(begin, end), ...]) where the tensor's bytes sit in a file, or None (pickles)."""
        r = self._reader(self._index[name][2])
        return r.ranges(name)

    def get(self, name) -> np.ndarray:
        raw, dt = self.read_raw(name)
        return dtypes.to_numpy(raw, dt)

    def __getitem__(self, name):
        return self.get(name)

    def total_bytes(self):
        return sum(self.nbytes(k) for k in self._index)

    def close(self):
        for r in self._files.values():
            if r is not None:
                r.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __repr__(self):
        return f"Checkpoint({self.path!r}, format={self.format!r}, {len(self)} tensors)"


def _index_json(path):
    idx = read_json(path, "index file")
    wm = idx.get("weight_map") if isinstance(idx, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise ConversionError(f"{path}: corrupt index file (no weight_map)")
    return wm


def _sharded(path, base_dir):
    wm = _index_json(path)
    files, index = {}, {}
    shard_names = list(dict.fromkeys(wm.values()))
    fmt = None
    for shard in shard_names:
        sp = os.path.join(base_dir, shard)
        if not os.path.isfile(sp):
            raise ConversionError(f"{path}: shard {shard} is missing")
        _sniff(sp)
        kind = "safetensors" if shard.endswith(".safetensors") else "pth"
        if kind == "safetensors":
            _, r = _open_file(sp)
            files[sp] = r
            ents = {k: (v[0], v[1]) for k, v in r.entries.items()}
        else:
            _, r = _open_file(sp)
            ents = dict(r.entries)
            if getattr(r, "_full", None) is not None:   # a legacy pickle held in memory: release until needed
                r.close()
                r = None
            files[sp] = r
        fmt = kind
        for k, (dt, shape) in ents.items():
            if k in index:
                raise ConversionError(f"{path}: {k!r} is stored in two shards")
            index[k] = (dt, shape, sp)
    missing = [k for k in wm if k not in index]
    if missing:
        raise ConversionError(f"{path}: {len(missing)} tensors listed in the index are not in their shards "
                              f"(e.g. {missing[:3]})")
    extra = [k for k in index if k not in wm]
    if extra:
        raise ConversionError(f"{path}: the shards hold {len(extra)} tensors the index does not list "
                              f"(e.g. {extra[:3]})")
    return f"{fmt}-sharded", files, index


def _single(path):
    _sniff(path)
    fmt, r = _open_file(path)
    index = {k: (v[0], tuple(v[1]), path) for k, v in r.entries.items()}
    return fmt, {path: r}, index, getattr(r, "metadata", None), getattr(r, "notes", [])


def find_weights(folder, extra_names=()):
    for name in tuple(extra_names) + WEIGHTS_NAMES:
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    cands = sorted(f for f in os.listdir(folder) if f.lower().endswith(SUFFIXES) and not f.startswith("."))
    if len(cands) == 1:
        return os.path.join(folder, cands[0])
    if not cands:
        raise ConversionError(f"{folder}: no weights file found (looked for {', '.join(WEIGHTS_NAMES[:6])}, ...)")
    raise ConversionError(f"{folder}: several weights files and none with a standard name: {cands[:6]}")


def _family_weights_names(config):
    if not config:
        return ()
    try:
        from converters.families import family_from_config

        fam = family_from_config(config)
    except ConversionError:
        return ()
    return tuple((fam.extra.get("converter") or {}).get("weights_names", ()))


def read_checkpoint(path) -> Checkpoint:
    """Open any supported source lazily. Raises ConversionError naming the problem."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file or folder")
    config, config_path, wpath = None, None, path
    if os.path.isdir(path):
        cp = os.path.join(path, "config.json")
        if os.path.isfile(cp):
            config, config_path = read_json(cp, "config.json"), cp
            if not isinstance(config, dict):
                raise ConversionError(f"{cp}: corrupt config.json (not a JSON object)")
        wpath = find_weights(path, _family_weights_names(config))
    meta, notes = None, []
    if wpath.endswith(".index.json"):
        fmt, files, index = _sharded(wpath, os.path.dirname(wpath))
    else:
        fmt, files, index, meta, notes = _single(wpath)
    if os.path.isdir(path):
        fmt = f"folder/{fmt}"
    return Checkpoint(path, fmt, files, index, config=config, metadata=meta, notes=notes, config_path=config_path)
