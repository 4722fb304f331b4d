"""Samplers of the MindSpore port (twins of ``pt_reference.schedulers``)."""
