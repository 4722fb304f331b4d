"""Loaded by pytest before any test directory: offline Hugging Face, and mindspore imported before anything
can import decord (``import decord`` first aborts the process: shared/mindspore_cpu_notes.md section 5)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GLOG_v", "3")

import mindspore  # noqa: E402,F401
