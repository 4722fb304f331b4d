"""Framework-agnostic helpers shared by pt_reference, ms_impl, converters and parity_tests.

Nothing in this package imports torch, mindspore, the twins (pt_reference, ms_impl), parity_tests or scripts,
at module level or inside functions (tests/test_layering.py); the registry names the twins by string only.
"""
