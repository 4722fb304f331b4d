"""Run the reference text encoders (T5 / CLIP twins) on token ids: the PyTorch half of
``opensora_dual.text.embedder``. ``ms_impl/models/text_encoder/runtime.py`` has the same functions.

    net = load_text_encoder(weights="/models/t5-v1_1-xxl")            # or model="T5-S" (random weights)
    emb = make_text_embedder(net, load_tokenizer(folder), 300).encode(["a cat"])
"""
import numpy as np
import torch

from opensora_dual.text.embedder import TextEmbedder, check_load_args, check_output, select_output

BACKEND = "pt"


def load_text_encoder(weights=None, model=None, dtype="fp32", **overrides):
    """A T5/CLIP reference twin in eval mode: from a release folder / converted file (``weights``, through
    ``converters.from_pretrained``) or a registered preset with random weights (``model``); ``dtype``
    "fp32" | "fp16" | "bf16"."""
    check_load_args(weights, model, dtype)
    if weights is not None:
        import converters

        net = converters.from_pretrained(None, weights, BACKEND, **overrides)
    else:
        from opensora_dual import registry

        net = registry.build(model, BACKEND, **overrides)
    net.eval()
    if dtype == "fp16":
        net.to_dtype(torch.float16) if hasattr(net, "to_dtype") else net.half()
    elif dtype == "bf16":
        net.to(torch.bfloat16)
    return net


def encode_tokens(net, ids: np.ndarray, mask, output: str) -> np.ndarray:
    """``net(ids, mask)`` without gradients -> the requested output as float32 numpy ([B, L, D] or [B, D]).
    ``mask`` None: the encoder is called without an attention mask (v2.0)."""
    check_output(output)
    with torch.no_grad():
        out = net(torch.from_numpy(np.asarray(ids)), None if mask is None else torch.from_numpy(np.asarray(mask)))
    return select_output(out, output).float().numpy().astype(np.float32, copy=False)


def make_text_embedder(net, tokenizer, max_length, clean=True, mask_to_model=True, output="last_hidden_state",
                       jit=False) -> TextEmbedder:
    """A ``TextEmbedder`` running ``net`` (a loaded reference twin). ``jit`` has no effect here (it compiles
    the MindSpore forward); it is accepted so both backends share one signature."""
    return TextEmbedder(net, tokenizer, encode_tokens, max_length, clean=clean, mask_to_model=mask_to_model,
                        output=output)
