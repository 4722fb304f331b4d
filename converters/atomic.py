"""Atomic outputs: write into a temporary sibling, fsync, then ``os.replace``; on any error or
KeyboardInterrupt the temporary is removed, so no output (and never a half-written one) is left."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(dst):
    """Yield a temporary path next to ``dst``; it becomes ``dst`` only if the block finishes."""
    dst = os.path.abspath(dst)
    d = os.path.dirname(dst)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dst)}.", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        _fsync_dir(d)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(dst):
    """Yield a temporary directory next to ``dst``; it replaces ``dst`` only if the block finishes."""
    dst = os.path.abspath(dst.rstrip("/"))
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        for name in os.listdir(tmp):
            p = os.path.join(tmp, name)
            if os.path.isfile(p):
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if os.path.exists(dst):
            if not os.path.isdir(dst):
                raise FileExistsError(f"{dst} exists and is not a folder")
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(dst, old)
        os.replace(tmp, dst)
        _fsync_dir(parent)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
