"""Run a text-encoder twin on captions: clean (v1.x), tokenize, encode, return numpy.

Upstream behaviour per release (facts section 4):
- v1.0/1.1/1.2 T5 (``opensora/models/text_encoder/t5.py``): captions cleaned by ``text_preprocessing``,
  padded to 120/200/300, the encoder called *with* the attention mask; ``last_hidden_state`` is kept.
- v2.0 (``opensora/models/text/conditioner.py::HFEmbedder``): no cleaning, T5 padded to 512 and CLIP to 77,
  both called with ``attention_mask=None``; T5 keeps ``last_hidden_state``, CLIP ``pooler_output``.
"""
from typing import Dict, Sequence

import numpy as np

from opensora_dual.text import config as text_config
from opensora_dual.text.cleaning import text_preprocessing
from opensora_dual.text.tokenization import tokenize

# {release: max_length, clean, mask_to_model}: configs/text_encoder/*.yaml ("releases")
RELEASES = text_config.releases()


def load_text_encoder(backend, weights=None, model=None, dtype="fp32", **overrides):
    """A T5/CLIP text twin in ``backend`` ("ms" or "pt"), eval mode: from a release folder / converted file
    (``weights``, through ``converters.from_pretrained``) or a registered preset with random weights (``model``)."""
    if backend == "ms":
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE)
    from opensora_dual import registry

    if (weights is None) == (model is None):
        raise SystemExit("give exactly one of --weights or --model")
    if weights is not None:
        import converters

        net = converters.from_pretrained(None, weights, backend, **overrides)
    else:
        net = registry.build(model, backend, **overrides)
    if backend == "pt":
        import torch

        net.eval()
        if dtype == "fp16":
            net.to_dtype(torch.float16) if hasattr(net, "to_dtype") else net.half()
        elif dtype == "bf16":
            net.to(torch.bfloat16)
    else:
        import mindspore as ms
        from ms_impl.layers import set_compute_dtype

        net.set_train(False)
        if dtype == "fp16":
            set_compute_dtype(net, ms.float16)
        elif dtype == "bf16":
            raise SystemExit("bf16 matmul is not supported by MindSpore on CPU; use fp32 or fp16")
    return net


class TextEmbedder:
    """captions -> ``{"text_emb": float32, "mask": uint8 [B, L]}``.

    ``output``: "last_hidden_state" ([B, L, D]; T5, and CLIP if asked) or "pooler_output" ([B, D]; CLIP).
    ``mask_to_model``: pass the attention mask to the encoder (v1.x) or not (v2.0: the mask is still saved).
    """

    def __init__(self, net, tokenizer, backend, max_length, clean=True, mask_to_model=True,
                 output="last_hidden_state", jit=False):
        if output not in ("last_hidden_state", "pooler_output"):
            raise ValueError(f"output must be last_hidden_state or pooler_output, got {output!r}")
        self.net, self.tokenizer, self.backend = net, tokenizer, backend
        self.max_length, self.clean, self.mask_to_model, self.output = max_length, clean, mask_to_model, output
        self._forward = net
        if jit and backend == "ms":  # compiled forward (ms.jit): ~3x PyNative on the mid-size T5 here
            import mindspore as ms

            self._forward = ms.jit(net.construct)

    def prepare(self, texts: Sequence[str]):
        texts = [text_preprocessing(t) if self.clean else t for t in texts]
        return tokenize(self.tokenizer, texts, self.max_length)

    def _run(self, ids, mask):
        if self.backend == "pt":
            import torch

            with torch.no_grad():
                out = self.net(torch.from_numpy(ids), None if mask is None else torch.from_numpy(mask))
            to_np = lambda t: t.float().numpy()   # noqa: E731
        else:
            import mindspore as ms

            out = self._forward(ms.Tensor(ids), None if mask is None else ms.Tensor(mask))
            to_np = lambda t: t.astype(ms.float32).asnumpy()   # noqa: E731
        if isinstance(out, tuple):  # CLIP: (last_hidden_state, pooler_output)
            out = out[0] if self.output == "last_hidden_state" else out[1]
        elif self.output == "pooler_output":
            raise ValueError("this encoder has no pooled output (T5): use last_hidden_state")
        return to_np(out).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        tok = self.prepare(texts)
        emb = self._run(tok["input_ids"], tok["attention_mask"] if self.mask_to_model else None)
        return {"text_emb": emb, "mask": tok["attention_mask"].astype(np.uint8)}
