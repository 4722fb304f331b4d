"""PyTorch pickles (``.pth/.pt/.bin``): ``torch.load(weights_only=True)``, with ``mmap=True`` for zip-format
files so tensor data stays on disk until read. Unwraps ``ema``/``state_dict``/``model``/``module``
wrappers and strips ``module.`` prefixes."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np

from converters import dtypes
from converters.copyio import RangeFile
from converters.errors import ConversionError

WRAPPERS = ("ema", "state_dict", "model", "module")


def _unwrap(obj, path):
    import torch

    notes = []
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for w in WRAPPERS:
            if isinstance(obj.get(w), dict):
                notes.append(f"unwrapped {w!r}")
                obj = obj[w]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: not a state dict (the pickle holds a {type(obj).__name__})")
    tensors = {}
    skipped = []
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            k2 = k[len("module."):] if k.startswith("module.") else k
            if k2 in tensors:
                raise ConversionError(f"{path}: both {k!r} and another key give {k2!r}")
            tensors[k2] = v
        else:
            skipped.append(k)
    if not tensors:
        raise ConversionError(f"{path}: no tensors found in the state dict (keys: {list(obj)[:8]})")
    if skipped:
        notes.append(f"skipped non-tensor entries {skipped[:8]}")
    if any(k.startswith("module.") for k in obj):
        notes.append("stripped 'module.' prefixes")
    return tensors, notes


def _torch_load(path, **kw):
    import torch

    try:
        return torch.load(path, weights_only=True, **kw)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else "unpickling failed"
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ConversionError(f"{path}: refuses to load: the pickle holds objects other than tensors "
                                  f"(weights_only=True): {msg}") from None
        raise ConversionError(f"{path}: corrupt or truncated PyTorch file ({msg})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError,
            TypeError, IndexError, UnicodeDecodeError, NotImplementedError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConversionError(f"{path}: corrupt or truncated PyTorch file ({msg})") from None


def load_state(path, map_location="cpu"):
    is_zip = zipfile.is_zipfile(path)
    obj = _torch_load(path, map_location=map_location, mmap=is_zip and map_location == "cpu")
    return _unwrap(obj, path)


def _little_endian_zip(path):
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/byteorder") or n == "byteorder"]
        return not names or z.read(names[0]).strip() == b"little"


def tensor_to_raw(t):
    """torch tensor -> (raw ndarray, dtype name); bf16 as uint16 bits."""
    import torch

    dt = dtypes.from_torch_dtype(t.dtype)
    t = t.detach().cpu().contiguous()
    if dt == "BF16":
        return t.view(torch.int16).numpy().view(np.uint16), dt
    return t.numpy(), dt


class PthFile(RangeFile):
    """Zip-format files are read like safetensors: ``torch.load(map_location="meta")`` gives every tensor's
    dtype/shape and (``_checkpoint_offset``) where its storage sits in the file, so each tensor is then
    ``pread`` on its own (or copied file-to-file). Legacy (non-zip) pickles, big-endian files and
    non-contiguous tensors fall back to ``torch.load`` (``mmap=True`` for zip files)."""

    def __init__(self, path):
        self.path = path
        self._fd = None
        self._full = None
        size = os.path.getsize(path)
        self.offsets = {}
        if zipfile.is_zipfile(path) and _little_endian_zip(path):
            tensors, self.notes = load_state(path, map_location="meta")
            for k, t in tensors.items():
                off = getattr(t.untyped_storage(), "_checkpoint_offset", None)
                if off is None or not t.is_contiguous():
                    continue
                b = off + t.storage_offset() * t.element_size()
                e = b + t.numel() * t.element_size()
                if e > size:
                    raise ConversionError(f"{path}: truncated PyTorch file ({k!r} ends at byte {e}, file has {size})")
                self.offsets[k] = (b, e)
        else:
            tensors, self.notes = load_state(path)
            self._full = tensors
            if not zipfile.is_zipfile(path):
                self.notes.append("legacy (non-zip) torch pickle: loaded whole")
        self.entries = {k: (dtypes.from_torch_dtype(v.dtype), tuple(v.shape)) for k, v in tensors.items()}
        self._lazy = [k for k in tensors if k not in self.offsets and self._full is None]

    def _fallback(self):
        if self._full is None:
            self._full, _ = load_state(self.path)
        return self._full

    def ranges(self, name):
        if name not in self.offsets:
            return None
        return self.fd(), [self.offsets[name]]

    def read(self, name):
        dt, shape = self.entries[name]
        if name in self.offsets:
            buf = self.read_ranges([self.offsets[name]], name)
            return np.frombuffer(buf, dtype=dtypes.raw_np(dt)).reshape(shape), dt
        raw, dt = tensor_to_raw(self._fallback()[name])
        return np.array(raw, copy=True), dt

    def close(self):
        self._full = None
        super().close()


class PthWriter:
    """Writes upstream's ``.pth`` layout: one flat ``{name: tensor}`` dict saved with ``torch.save`` (what
    Open-Sora 1.0's releases are). torch.save needs every tensor at once, so unlike the safetensors and
    ``.ckpt`` writers this one holds the whole state in memory until ``close``."""

    def __init__(self, path):
        self.path = path
        self._state = {}

    def write(self, name, raw, dtype):
        import torch

        t = torch.from_numpy(np.array(dtypes.contiguous(raw), copy=True))
        if dtype == "BF16":
            t = t.view(torch.bfloat16)
        self._state[name] = t

    def write_ranges(self, name, shape, dtype, src_fd, ranges):
        buf = bytearray()
        for b, e in ranges:
            while b < e:
                chunk = os.pread(src_fd, e - b, b)
                if not chunk:
                    raise ConversionError(f"{self.path}: short read while copying {name!r}")
                buf += chunk
                b += len(chunk)
        self.write(name, np.frombuffer(bytes(buf), dtype=dtypes.raw_np(dtype)).reshape(shape), dtype)

    def abort(self):
        self._state = {}

    def close(self):
        import torch

        with open(self.path, "wb") as f:
            torch.save(self._state, f)
            f.flush()
            os.fsync(f.fileno())
        self._state = {}
