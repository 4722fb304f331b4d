"""safetensors read and write, streaming: the reader ``pread``s one tensor at a time; the writer computes the
header from metadata, writes it first, then the tensors in header order (8-byte aligned header, as the
safetensors library writes it)."""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from converters import dtypes
from converters.copyio import RangeFile
from converters.errors import ConversionError

MAX_HEADER = 100 * 1024 * 1024


def read_header(path):
    """-> (entries {name: (dtype, shape, begin, end) absolute offsets}, metadata dict)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER or n + 8 > size:
            raise ConversionError(f"{path}: corrupt or truncated safetensors file (header length {n}, "
                                  f"file size {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise ConversionError(f"{path}: corrupt safetensors header ({e})") from None
    meta = header.pop("__metadata__", None) or {}
    entries = {}
    end_max = 0
    base = 8 + n
    for name, e in header.items():
        try:
            dt, shape, (b, en) = e["dtype"], [int(s) for s in e["shape"]], e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path}: corrupt safetensors header entry for {name!r}") from None
        if dt not in dtypes.DTYPES:
            raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {dt}")
        want = int(np.prod(shape, dtype=np.int64)) * dtypes.itemsize(dt)
        if en - b != want or b < 0:
            raise ConversionError(f"{path}: corrupt safetensors header: {name!r} has {en - b} bytes for shape "
                                  f"{shape} {dt} (needs {want})")
        entries[name] = (dt, tuple(shape), base + b, base + en)
        end_max = max(end_max, en)
    if base + end_max > size:
        raise ConversionError(f"{path}: truncated safetensors file: the header promises {base + end_max} bytes, "
                              f"the file has {size}")
    return entries, meta


class SafetensorsFile(RangeFile):
    def __init__(self, path):
        self.path = path
        self.entries, self.metadata = read_header(path)

    def read(self, name):
        dt, shape, b, e = self.entries[name]
        buf = self.read_ranges([(b, e)], name)
        return np.frombuffer(buf, dtype=dtypes.raw_np(dt)).reshape(shape), dt

    def ranges(self, name):
        """(fd, [(begin, end)]) of a tensor's bytes in the file."""
        _, _, b, e = self.entries[name]
        return self.fd(), [(b, e)]


class SafetensorsWriter:
    """``SafetensorsWriter(path, [(name, dtype, shape), ...], metadata)`` then ``write(name, raw)`` in order."""

    def __init__(self, path, entries, metadata=None):
        self.path = path
        header = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        off = 0
        self._order = []
        for name, dt, shape in entries:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtypes.itemsize(dt)
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nbytes]}
            self._order.append((name, dt, tuple(shape), nbytes))
            off += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * ((8 - len(raw) % 8) % 8)
        self._f = open(path, "wb", buffering=0)
        self._f.write(struct.pack("<Q", len(raw)))
        self._f.write(raw)
        self._i = 0

    def write(self, name, raw):
        exp_name, dt, shape, nbytes = self._order[self._i]
        if name != exp_name or tuple(raw.shape) != shape or raw.nbytes != nbytes:
            raise ConversionError(f"internal: safetensors writer expected {exp_name} {shape}, got {name} {raw.shape}")
        mv = dtypes.contiguous(raw).reshape(-1).view(np.uint8).data
        while mv.nbytes:
            k = self._f.write(mv)
            mv = mv[k:]
        self._i += 1

    def write_ranges(self, name, shape, dtype, src_fd, ranges):
        """Write a tensor whose bytes are ``ranges`` of ``src_fd``, copied by the kernel."""
        from converters.copyio import copy_span

        exp_name, dt, exp_shape, nbytes = self._order[self._i]
        if name != exp_name or tuple(shape) != exp_shape or dt != dtype or sum(e - b for b, e in ranges) != nbytes:
            raise ConversionError(f"internal: safetensors writer expected {exp_name} {exp_shape}, got {name} {shape}")
        copy_span(src_fd, ranges, 0, nbytes, self._f.fileno())
        self._i += 1

    def abort(self):
        self._f.close()

    def close(self):
        if self._i != len(self._order):
            self._f.close()
            raise ConversionError(f"internal: safetensors writer got {self._i} of {len(self._order)} tensors")
        os.fsync(self._f.fileno())
        self._f.close()
