"""Tokenizers from local Hugging Face folders, one tokenizer feeding both twins.

Folders: a T5 folder holds ``spiece.model`` (plus ``tokenizer_config.json``/``special_tokens_map.json`` in the
upstream release), a CLIP folder ``vocab.json`` + ``merges.txt``; a folder with ``tokenizer.json`` (what
``save_pretrained`` writes) works for both. transformers 5 trap (shared/mindspore_cpu_notes.md section 4):
``T5Tokenizer(vocab_file=...)`` and ``CLIPTokenizer(vocab_file=, merges_file=)`` silently ignore their files, so
everything goes through ``from_pretrained(folder)``. Nothing is downloaded: the path must be a local folder.

Padding follows upstream: ``padding="max_length"``, ``truncation=True``, special tokens added (T5 appends
``</s>``, CLIP wraps in ``<|startoftext|>``/``<|endoftext|>``), attention mask returned. Lengths:
120/200/300 (Open-Sora v1.0/1.1/1.2), 512 (v2.0 T5), 77 (v2.0 CLIP).
"""
import os
from typing import Dict, Sequence

import numpy as np


def tokenizer_kind(folder: str) -> str:
    """"t5" | "clip" | "auto" (a saved ``tokenizer.json``) from the files in ``folder``."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a local tokenizer folder (nothing is downloaded)")
    files = set(os.listdir(folder))
    if "spiece.model" in files:
        return "t5"
    if {"vocab.json", "merges.txt"} <= files:
        return "clip"
    if "tokenizer.json" in files:
        return "auto"
    raise FileNotFoundError(f"{folder}: no spiece.model, vocab.json+merges.txt or tokenizer.json")


def load_tokenizer(folder: str, kind: str = None, model_max_length: int = None, **kwargs):
    """The transformers tokenizer of a local folder. ``kwargs`` go to ``from_pretrained`` (e.g. ``extra_ids=0``
    for a bare ``spiece.model`` without the 100 sentinel tokens of the release)."""
    from transformers import AutoTokenizer, CLIPTokenizer, T5Tokenizer

    folder = os.fspath(folder)
    kind = kind or tokenizer_kind(folder)
    kwargs.setdefault("local_files_only", True)
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    if kind == "t5":
        has_config = os.path.isfile(os.path.join(folder, "tokenizer_config.json"))
        if not has_config:
            kwargs.setdefault("extra_ids", 0)
        return T5Tokenizer.from_pretrained(folder, **kwargs)
    if kind == "clip":
        return CLIPTokenizer.from_pretrained(folder, **kwargs)
    if kind == "auto":
        return AutoTokenizer.from_pretrained(folder, **kwargs)
    raise ValueError(f"unknown tokenizer kind {kind!r} (t5, clip, auto)")


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> Dict[str, np.ndarray]:
    """``{"input_ids": int64 [B, max_length], "attention_mask": int64 [B, max_length]}`` as upstream pads."""
    if isinstance(texts, str):
        texts = [texts]
    enc = tokenizer(list(texts), max_length=max_length, padding="max_length", truncation=True,
                    return_attention_mask=True, add_special_tokens=True, return_tensors="np")
    return {"input_ids": np.asarray(enc["input_ids"], dtype=np.int64),
            "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64)}
