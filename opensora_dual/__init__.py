"""Framework-agnostic helpers shared by pt_reference, ms_impl, converters and parity_tests.

Nothing in this package imports torch or mindspore at module level.
"""
