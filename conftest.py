"""Loaded by pytest before any test directory: offline Hugging Face, and mindspore imported before anything
can import decord (``import decord`` first aborts the process: shared/mindspore_cpu_notes.md section 5)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GLOG_v", "3")

import mindspore  # noqa: E402,F401

import gc  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_memory_after_each_module():
    """After each test file: drop the parity engine's shared built pairs, collect, and hand freed heap back to
    the OS (glibc ``malloc_trim``), so one file's full-size models do not sit under the next file's peak."""
    yield
    engine = sys.modules.get("parity_tests.engine")
    if engine is not None:
        engine.clear_cache()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
