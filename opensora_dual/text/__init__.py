"""Text side shared by both backends: caption cleaning (``cleaning``), tokenizers from local HF folders
(``tokenization``) and the embedder that runs a text-encoder twin on tokenized captions (``embedder``)."""
from opensora_dual.text.cleaning import basic_clean, clean_caption, text_preprocessing
from opensora_dual.text.tokenization import load_tokenizer, tokenize

__all__ = ["basic_clean", "clean_caption", "text_preprocessing", "load_tokenizer", "tokenize"]
