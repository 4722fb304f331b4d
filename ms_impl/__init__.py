"""Optimized MindSpore/Ascend port. Same file paths, class names, constructor arguments and parameter
names as ``pt_reference``; every optimization is a switch with a CPU fallback (see ``ms_impl.device``)."""
