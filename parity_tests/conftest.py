"""pytest setup for the parity suite.

Import order matters: mindspore is imported FIRST (``import decord`` before mindspore aborts the process,
shared/mindspore_cpu_notes.md), and the Hugging Face hub is switched offline before anything imports it.
Hypothesis runs a fixed-seed profile ("ci": derandomized, no example database, no deadline, few examples)
unless HYPOTHESIS_PROFILE names another one ("dev": more examples, still bounded shapes).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402  (first framework import, before anything can pull in decord)

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=10,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=50, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
