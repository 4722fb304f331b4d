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
