"""One module per model family; each calls ``opensora_dual.registry.register`` on import."""
