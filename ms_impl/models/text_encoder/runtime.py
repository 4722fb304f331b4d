"""Run the MindSpore text encoders (T5 / CLIP twins) on token ids: the MindSpore half of
``opensora_dual.text.embedder``. ``pt_reference/models/text_encoder/runtime.py`` has the same functions.

    net = load_text_encoder(weights="/models/t5-v1_1-xxl", dtype="fp16")   # or model="T5-S" (random weights)
    emb = make_text_embedder(net, load_tokenizer(folder), 300, jit=True).encode(["a cat"])

``jit=True`` compiles the forward with ``ms.jit`` (~3x PyNative on the mid-size T5 here).
"""
import functools

import mindspore as ms
import numpy as np

from ms_impl.layers import set_compute_dtype
from opensora_dual.text.embedder import TextEmbedder, check_load_args, check_output, select_output

BACKEND = "ms"


def load_text_encoder(weights=None, model=None, dtype="fp32", **overrides):
    """A T5/CLIP MindSpore twin, PyNative, ``set_train(False)``: from a release folder / converted file
    (``weights``, through ``converters.from_pretrained``) or a registered preset with random weights
    (``model``); ``dtype`` "fp32" | "fp16" (compute dtype; parameters stay fp32). bf16 is refused: MindSpore
    has no bf16 matmul on CPU."""
    check_load_args(weights, model, dtype)
    if dtype == "bf16":
        raise SystemExit("bf16 matmul is not supported by MindSpore on CPU; use fp32 or fp16")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    if weights is not None:
        import converters

        net = converters.from_pretrained(None, weights, BACKEND, **overrides)
    else:
        from opensora_dual import registry

        net = registry.build(model, BACKEND, **overrides)
    net.set_train(False)
    if dtype == "fp16":
        set_compute_dtype(net, ms.float16)
    return net


def jit_forward(net):
    """The net's forward compiled with ``ms.jit`` (graph mode); pass it to ``encode_tokens(..., forward=)``."""
    return ms.jit(net.construct)


def encode_tokens(net, ids: np.ndarray, mask, output: str, forward=None) -> np.ndarray:
    """``net(ids, mask)`` (or ``forward(ids, mask)``, e.g. ``jit_forward(net)``) -> the requested output as
    float32 numpy ([B, L, D] or [B, D]). ``mask`` None: the encoder is called without an attention mask (v2.0)."""
    check_output(output)
    fn = net if forward is None else forward
    out = fn(ms.Tensor(np.asarray(ids)), None if mask is None else ms.Tensor(np.asarray(mask)))
    return select_output(out, output).astype(ms.float32).asnumpy().astype(np.float32, copy=False)


def make_text_embedder(net, tokenizer, max_length, clean=True, mask_to_model=True, output="last_hidden_state",
                       jit=False) -> TextEmbedder:
    """A ``TextEmbedder`` running ``net`` (a loaded MindSpore twin); ``jit`` compiles its forward once here."""
    encode = functools.partial(encode_tokens, forward=jit_forward(net)) if jit else encode_tokens
    return TextEmbedder(net, tokenizer, encode, max_length, clean=clean, mask_to_model=mask_to_model,
                        output=output)
