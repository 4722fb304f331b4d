"""The exception types of ``opensora_dual.data``."""


class DataError(ValueError):
    """A user-supplied data input is invalid: a dataset table without the required columns, a bucket config or a
    mask-ratio dict that upstream would reject (or crash on), a sampler state from another setup, ...

    The message is a single line that names the problem and the offending value.
    """


class CorruptSampleError(DataError):
    """One sample cannot be used: its file is missing, unreadable, of an unsupported type, or has fewer frames
    than the bucket asked for. Loaders catch it, record ``(path, reason)`` and go on with the next sample; it never
    ends an epoch."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.reason}: {self.path}")
