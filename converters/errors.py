"""The one exception type of the converters: a clear message naming the problem (the CLI exits 2)."""


class ConversionError(Exception):
    """Bad input or an impossible conversion. ``str(err)`` is the whole user-facing message."""
