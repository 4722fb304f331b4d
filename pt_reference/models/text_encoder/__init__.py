"""Text encoders: transformers' T5 encoder (v1.x, v2.0) and CLIP text tower (v2.0), as twins.

The reference *is* transformers: ``T5EncoderModel`` and ``CLIPTextModel`` here subclass the transformers
classes so every module, parameter and buffer name is transformers' own; only the constructor (plain config
kwargs instead of a config object) and the return value (tensors instead of ``ModelOutput``) change.
"""
from pt_reference.models.text_encoder.clip import CLIPTextModel
from pt_reference.models.text_encoder.t5 import T5EncoderModel

__all__ = ["T5EncoderModel", "CLIPTextModel"]
