"""Pipelines of the PyTorch reference (twins of ``ms_impl.pipelines``)."""
