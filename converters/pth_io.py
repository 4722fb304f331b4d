"""PyTorch pickles (``.pth/.pt/.bin``): ``torch.load(weights_only=True)``, with ``mmap=True`` for zip-format
files so tensor data stays on disk until read. Unwraps ``ema``/``state_dict``/``model``/``module``
wrappers and strips ``module.`` prefixes."""
from __future__ import annotations

import pickle
import zipfile

import numpy as np

from converters import dtypes
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


def load_state(path):
    import torch

    is_zip = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else "unpickling failed"
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ConversionError(f"{path}: refuses to load: the pickle holds objects other than tensors "
                                  f"(weights_only=True): {msg}") from None
        raise ConversionError(f"{path}: corrupt or truncated PyTorch file ({msg})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError,
            TypeError, IndexError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConversionError(f"{path}: corrupt or truncated PyTorch file ({msg})") from None
    return _unwrap(obj, path)


def tensor_to_raw(t):
    """torch tensor -> (raw ndarray, dtype name); bf16 as uint16 bits."""
    import torch

    dt = dtypes.from_torch_dtype(t.dtype)
    t = t.detach().cpu().contiguous()
    if dt == "BF16":
        return t.view(torch.int16).numpy().view(np.uint16), dt
    return t.numpy(), dt


class PthFile:
    def __init__(self, path):
        self.path = path
        self.tensors, self.notes = load_state(path)
        self.entries = {k: (dtypes.from_torch_dtype(v.dtype), tuple(v.shape)) for k, v in self.tensors.items()}

    def read(self, name):
        raw, dt = tensor_to_raw(self.tensors[name])
        return np.array(raw, copy=True), dt

    def close(self):
        self.tensors = {}
