"""The one exception type of ``opensora_dual.inference``."""


class InferenceInputError(ValueError):
    """A user-supplied inference input (resolution, prompt file, mask strategy, reference path, ...) is invalid.

    The message is a single line that names the problem and the offending value.
    """
