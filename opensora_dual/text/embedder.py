"""Run a text-encoder twin on captions: clean (v1.x), tokenize, encode, return numpy.

Upstream behaviour per release (facts section 4):
- v1.0/1.1/1.2 T5 (``opensora/models/text_encoder/t5.py``): captions cleaned by ``text_preprocessing``,
  padded to 120/200/300, the encoder called *with* the attention mask; ``last_hidden_state`` is kept.
- v2.0 (``opensora/models/text/conditioner.py::HFEmbedder``): no cleaning, T5 padded to 512 and CLIP to 77,
  both called with ``attention_mask=None``; T5 keeps ``last_hidden_state``, CLIP ``pooler_output``.

Framework-free: this module cleans, tokenizes and assembles the result. Running the network is the twin's job,
injected as ``encode_tokens(net, ids, mask, output) -> float32 ndarray``; each backend has one at the same
relative path, ``{pt_reference,ms_impl}.models.text_encoder.runtime`` (with ``load_text_encoder`` and
``make_text_embedder(net, tokenizer, max_length, ...)``, the easy way to build a ``TextEmbedder``).
"""
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from opensora_dual.text import config as text_config
from opensora_dual.text.cleaning import text_preprocessing
from opensora_dual.text.tokenization import tokenize

# {release: max_length, clean, mask_to_model}: configs/text_encoder/*.yaml ("releases")
RELEASES = text_config.releases()

OUTPUTS = ("last_hidden_state", "pooler_output")
DTYPES = ("fp32", "fp16", "bf16")

# (net, input_ids int64 [B, L], attention_mask int64 [B, L] or None, output) -> float32 ndarray
EncodeTokens = Callable[[Any, np.ndarray, Optional[np.ndarray], str], np.ndarray]


def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be last_hidden_state or pooler_output, got {output!r}")
    return output


def check_load_args(weights, model, dtype):
    """The arguments of every backend's ``load_text_encoder``: exactly one weight source, a known dtype."""
    if (weights is None) == (model is None):
        raise SystemExit("give exactly one of --weights or --model")
    if dtype not in DTYPES:
        raise SystemExit(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def select_output(out, output: str):
    """The requested output of a text twin's forward: CLIP returns ``(last_hidden_state, pooler_output)``,
    T5 ``last_hidden_state`` alone (asking it for a pooled output is an error)."""
    if isinstance(out, tuple):
        return out[0] if output == "last_hidden_state" else out[1]
    if output == "pooler_output":
        raise ValueError("this encoder has no pooled output (T5): use last_hidden_state")
    return out


class TextEmbedder:
    """captions -> ``{"text_emb": float32, "mask": uint8 [B, L]}``.

    ``encode_tokens``: the backend's ``encode_tokens(net, ids, mask, output)`` (see the module docstring);
    ``{pt_reference,ms_impl}.models.text_encoder.runtime.make_text_embedder`` fills it in.
    ``output``: "last_hidden_state" ([B, L, D]; T5, and CLIP if asked) or "pooler_output" ([B, D]; CLIP).
    ``mask_to_model``: pass the attention mask to the encoder (v1.x) or not (v2.0: the mask is still saved).
    """

    def __init__(self, net, tokenizer, encode_tokens: EncodeTokens, max_length, clean=True, mask_to_model=True,
                 output="last_hidden_state"):
        if not callable(encode_tokens):
            raise TypeError("encode_tokens must be a backend's encode_tokens(net, ids, mask, output) function "
                            "(see {pt_reference,ms_impl}.models.text_encoder.runtime)")
        self.net, self.tokenizer, self.encode_tokens = net, tokenizer, encode_tokens
        self.max_length, self.clean, self.mask_to_model = max_length, clean, mask_to_model
        self.output = check_output(output)

    def prepare(self, texts: Sequence[str]):
        texts = [text_preprocessing(t) if self.clean else t for t in texts]
        return tokenize(self.tokenizer, texts, self.max_length)

    def encode(self, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        tok = self.prepare(texts)
        mask = tok["attention_mask"] if self.mask_to_model else None
        emb = np.asarray(self.encode_tokens(self.net, tok["input_ids"], mask, self.output), dtype=np.float32)
        return {"text_emb": emb, "mask": tok["attention_mask"].astype(np.uint8)}
