"""Framework-free pipeline logic; the twins (``pt_reference.pipelines``, ``ms_impl.pipelines``) add the tensors."""
