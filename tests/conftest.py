"""pytest setup for tests/: hub offline, and mindspore imported before anything can pull in decord."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_v", "3")

import mindspore  # noqa: E402,F401
