"""Checkpoint converters: read any upstream/MindSpore/PyTorch checkpoint lazily, map it onto a model through
declarative rules, write MindSpore/PyTorch/mindone/release outputs streaming and atomically.
See docs/converters.md."""
from converters.errors import ConversionError
from converters.checkpoint import Checkpoint, read_checkpoint
from converters.api import (LoadReport, Report, convert, from_pretrained, inspect, load_state_into, model_tensors,
                            pt_to_ms, save_release_folder, verify)

__all__ = ["ConversionError", "Checkpoint", "read_checkpoint", "model_tensors", "load_state_into",
           "save_release_folder", "pt_to_ms", "from_pretrained", "convert", "verify", "inspect", "Report", "LoadReport"]
