"""MindSpore ``.ckpt`` read and write without loading the file whole.

The file is a serialized ``mindspore.train.checkpoint_pb2.Checkpoint``: ``repeated Value value = 1`` with
``Value {string tag = 1; TensorProto tensor = 2; MapTensorProto maptensor = 3}`` and
``TensorProto {repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3}``. Repeated fields
of concatenated messages concatenate, so the writer appends one serialized single-value message per chunk,
and a tensor larger than a chunk is written as consecutive values with the same tag (which is what
``mindspore.save_checkpoint`` does for tensors over 512 MB; ``load_checkpoint`` joins consecutive chunks).
The reader walks the varints and records where each chunk's bytes are, reading no tensor data.
An optional ``crc_num`` trailer (17 bytes) is skipped.
"""
from __future__ import annotations

import os

import numpy as np

from converters import dtypes
from converters.copyio import RangeFile
from converters.errors import ConversionError

CHUNK = 512 * 1024 * 1024   # bytes per value message, as mindspore writes


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field, payload_len):
    """key + length prefix of a length-delimited field."""
    return _varint((field << 3) | 2) + _varint(payload_len)


def value_prefix(tag, dims, tensor_type, content_len):
    """The bytes of ``Checkpoint{value{tag, tensor{dims, tensor_type, tensor_content}}}`` up to the content."""
    t = b"".join(_varint(1 << 3) + _varint(int(d)) for d in dims)   # unpacked int64 dims, as protobuf writes
    tt = tensor_type.encode()
    t += _ld(2, len(tt)) + tt
    t += _ld(3, content_len)
    tensor_len = len(t) + content_len
    tagb = tag.encode("utf-8")
    v = _ld(1, len(tagb)) + tagb + _ld(2, tensor_len) + t
    return _ld(1, len(v) + content_len) + v


class CkptWriter:
    def __init__(self, path, chunk=CHUNK):
        self.path = path
        self.chunk = chunk
        self._f = open(path, "wb", buffering=0)

    def write(self, name, raw, dtype):
        raw = dtypes.contiguous(raw)
        buf = raw.reshape(-1).view(np.uint8).data
        tt = dtypes.DTYPES[dtype][1]
        n = len(buf)
        starts = range(0, n, self.chunk) if n else [0]
        for s in starts:
            piece = buf[s:s + self.chunk]
            self._put(value_prefix(name, raw.shape, tt, len(piece)))
            self._put(piece)

    def _put(self, mv):
        mv = memoryview(mv)
        while mv.nbytes:
            k = self._f.write(mv)
            mv = mv[k:]

    def write_ranges(self, name, shape, dtype, src_fd, ranges):
        """Write a tensor whose bytes are ``ranges`` of ``src_fd``; the kernel copies the data."""
        from converters.copyio import copy_span

        n = sum(e - b for b, e in ranges)
        tt = dtypes.DTYPES[dtype][1]
        starts = range(0, n, self.chunk) if n else [0]
        for s in starts:
            ln = min(self.chunk, n - s)
            self._put(value_prefix(name, shape, tt, ln))
            copy_span(src_fd, ranges, s, ln, self._f.fileno())

    def abort(self):
        self._f.close()

    def close(self):
        os.fsync(self._f.fileno())
        self._f.close()


class _Reader:
    def __init__(self, f, path, end):
        self.f, self.path, self.end = f, path, end

    def varint(self, pos, limit):
        shift = result = 0
        while True:
            if pos >= limit:
                raise ConversionError(f"{self.path}: truncated or corrupt .ckpt (varint runs past byte {limit})")
            self.f.seek(pos)
            b = self.f.read(1)
            if not b:
                raise ConversionError(f"{self.path}: truncated .ckpt (file ends at byte {pos})")
            b = b[0]
            result |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise ConversionError(f"{self.path}: corrupt .ckpt (bad varint at byte {pos})")

    def fields(self, start, stop):
        """Yield (field, wiretype, value_or_(begin, end), next) over a message."""
        pos = start
        while pos < stop:
            key, pos = self.varint(pos, stop)
            field, wt = key >> 3, key & 7
            if wt == 0:
                v, pos = self.varint(pos, stop)
                yield field, wt, v
            elif wt == 2:
                ln, pos = self.varint(pos, stop)
                if pos + ln > stop:
                    raise ConversionError(
                        f"{self.path}: truncated or corrupt .ckpt: a record at byte {pos} claims {ln} bytes but "
                        f"{'the file ends' if stop == self.end else 'its message ends'} at byte {stop}")
                yield field, wt, (pos, pos + ln)
                pos += ln
            elif wt == 1:
                yield field, wt, None
                pos += 8
            elif wt == 5:
                yield field, wt, None
                pos += 4
            else:
                raise ConversionError(f"{self.path}: not a MindSpore checkpoint (bad protobuf wire type {wt} "
                                      f"at byte {pos})")
        if pos != stop:
            raise ConversionError(f"{self.path}: truncated or corrupt .ckpt (message overruns at byte {stop})")

    def read(self, b, e):
        self.f.seek(b)
        return self.f.read(e - b)


def scan(path):
    """-> {tag: (dtype, shape, [(begin, end), ...])} in file order, without reading tensor data."""
    size = os.path.getsize(path)
    end = size
    with open(path, "rb") as f:
        if size >= 17:
            f.seek(size - 17)
            if f.read(7) == b"crc_num":
                end = size - 17
        r = _Reader(f, path, end)
        out = {}
        last = None
        for field, wt, val in r.fields(0, end):
            if field != 1 or wt != 2:
                raise ConversionError(f"{path}: not a MindSpore checkpoint (unexpected protobuf field {field})")
            tag, dims, ttype, content, has_map = None, [], None, None, False
            for vf, vwt, vv in r.fields(*val):
                if vf == 1 and vwt == 2:
                    try:
                        tag = r.read(*vv).decode("utf-8")
                    except UnicodeDecodeError:
                        raise ConversionError(f"{path}: corrupt .ckpt (tensor name is not UTF-8)") from None
                elif vf == 2 and vwt == 2:
                    for tf, twt, tv in r.fields(*vv):
                        if tf == 1 and twt == 0:
                            dims.append(tv)
                        elif tf == 1 and twt == 2:   # packed dims
                            p = tv[0]
                            while p < tv[1]:
                                d, p = r.varint(p, tv[1])
                                dims.append(d)
                        elif tf == 2 and twt == 2:
                            ttype = r.read(*tv).decode("utf-8", "replace")
                        elif tf == 3 and twt == 2:
                            content = tv
                elif vf == 3:
                    has_map = True
            if tag is None:
                raise ConversionError(f"{path}: corrupt .ckpt (a value without a name at byte {val[0]})")
            if has_map and ttype is None:
                raise ConversionError(f"{path}: {tag!r} is a MapParameter, which the converter does not support")
            if ttype not in dtypes.CKPT_TO_ST:
                raise ConversionError(f"{path}: tensor {tag!r} has unsupported type {ttype!r}")
            dt = dtypes.CKPT_TO_ST[ttype]
            if content is None:
                content = (val[1], val[1])
            if tag == last:
                out[tag][2].append(content)
            else:
                if tag in out:
                    raise ConversionError(f"{path}: corrupt .ckpt ({tag!r} appears twice)")
                out[tag] = (dt, tuple(int(d) for d in dims), [content])
            last = tag
    for tag, (dt, shape, chunks) in list(out.items()):
        nbytes = sum(e - b for b, e in chunks)
        want = int(np.prod(shape, dtype=np.int64)) * dtypes.itemsize(dt)
        if shape == (0,) and nbytes == dtypes.itemsize(dt):   # mindspore writes scalars as dims [0]
            out[tag] = (dt, (), chunks)
        elif nbytes != want:
            raise ConversionError(f"{path}: corrupt .ckpt: {tag!r} has {nbytes} bytes for shape {list(shape)} {dt} "
                                  f"(needs {want})")
    if not out:
        raise ConversionError(f"{path}: empty or not a MindSpore checkpoint (no tensors found)")
    return out


class CkptFile(RangeFile):
    def __init__(self, path):
        self.path = path
        self.entries = scan(path)

    def read(self, name):
        dt, shape, chunks = self.entries[name]
        buf = self.read_ranges(chunks, name)
        return np.frombuffer(buf, dtype=dtypes.raw_np(dt)).reshape(shape), dt

    def ranges(self, name):
        return self.fd(), list(self.entries[name][2])
