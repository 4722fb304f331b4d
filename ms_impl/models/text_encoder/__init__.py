"""MindSpore twins of the text encoders (same class names, constructor kwargs and parameter names as
``pt_reference.models.text_encoder``, i.e. transformers' names)."""
from ms_impl.models.text_encoder.clip import CLIPTextModel
from ms_impl.models.text_encoder.t5 import T5EncoderModel

__all__ = ["T5EncoderModel", "CLIPTextModel"]
