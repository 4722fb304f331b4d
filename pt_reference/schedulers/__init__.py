"""Samplers of the PyTorch reference (twins of ``ms_impl.schedulers``)."""
