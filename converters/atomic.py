"""Atomic outputs: write into a temporary sibling, fsync, then ``os.replace``; on any error or
KeyboardInterrupt the temporary is removed, so no output (and never a half-written one) is left.

Permissions: ``tempfile.mkstemp``/``mkdtemp`` create 0600 files and 0700 folders whatever the umask; before the
final ``os.replace`` the temporary file is set to ``0o666 & ~umask`` and the temporary folder to
``0o777 & ~umask``, so outputs get the modes any other file the user writes gets (0644 / 0755 under umask 022).
Files written inside an ``atomic_dir`` with ``open`` already follow the umask."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, without changing it where possible: Linux reports it in /proc/self/status; elsewhere
    it is read by setting and restoring it (under a lock, with a restrictive value in between, so a file
    another thread creates in that instant is never more open than intended)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def _chmod_like_new(path, is_dir):
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


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
        _chmod_like_new(tmp, is_dir=False)   # mkstemp made it 0600
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
        _chmod_like_new(tmp, is_dir=True)    # mkdtemp made it 0700
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
