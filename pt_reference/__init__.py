"""Slim PyTorch reference: the specification. Upstream key names; no optimizations beyond SDPA."""
