"""Kernel-side byte copies (``copy_file_range``, else ``sendfile``, else pread/write): tensors whose bytes do
not change pass from source to destination without entering Python memory."""
from __future__ import annotations

import os

_MODE = {"m": "copy_file_range"}


def _copy(src_fd, dst_fd, off, n):
    """Copy n bytes from src_fd at off to dst_fd's current position."""
    while n > 0:
        k = 0
        if _MODE["m"] == "copy_file_range":
            try:
                k = os.copy_file_range(src_fd, dst_fd, n, off)
            except OSError:
                _MODE["m"] = "sendfile"
                continue
        elif _MODE["m"] == "sendfile":
            try:
                k = os.sendfile(dst_fd, src_fd, off, n)
            except OSError:
                _MODE["m"] = "rw"
                continue
        else:
            buf = os.pread(src_fd, min(n, 64 << 20), off)
            k = len(buf)
            mv = memoryview(buf)
            while mv:
                w = os.write(dst_fd, mv)
                mv = mv[w:]
        if k <= 0:
            from converters.errors import ConversionError

            raise ConversionError(f"source file ended early while copying (offset {off})")
        off += k
        n -= k


def copy_span(src_fd, ranges, start, length, dst_fd):
    """Copy logical bytes [start, start+length) of the concatenation of ``ranges`` [(begin, end), ...]."""
    pos = 0
    for b, e in ranges:
        seg = e - b
        lo, hi = max(start, pos), min(start + length, pos + seg)
        if lo < hi:
            _copy(src_fd, dst_fd, b + (lo - pos), hi - lo)
        pos += seg
        if pos >= start + length:
            break


class RangeFile:
    """Base of the readers that know where each tensor's bytes sit in their file (safetensors, zip .pth,
    .ckpt): the file is opened once, lazily, and a tensor is ``pread`` from its byte ranges into one buffer."""

    path: str
    _fd = None

    def fd(self):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read_ranges(self, ranges, name):
        """The bytes of ``ranges`` [(begin, end), ...] concatenated, as a bytearray; a short read is an error."""
        fd = self.fd()
        buf = bytearray(sum(e - b for b, e in ranges))
        mv = memoryview(buf)
        o = 0
        for b, e in ranges:
            got = 0
            while got < e - b:
                k = os.preadv(fd, [mv[o + got:o + (e - b)]], b + got)
                if k <= 0:
                    from converters.errors import ConversionError

                    raise ConversionError(f"{self.path}: truncated while reading {name!r}")
                got += k
            o += e - b
        return buf

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()
