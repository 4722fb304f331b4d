"""Pipelines of the MindSpore port (twins of ``pt_reference.pipelines``)."""
