"""Cache CLIP text embeddings (Open-Sora v2.0's pooled text vector): one ``.npz`` per caption.

    python scripts/infer_clip.py --csv data/captions.csv --output-dir data/clip_emb \\
        --weights /path/to/clip-vit-large-patch14 [--backend ms|pt] [--dtype fp32|fp16] [--output pooler_output]

Each file holds ``text_emb`` float32 — the pooled output [768] (``--output pooler_output``, default: what v2.0
feeds the model as ``y_vec``) or the hidden states [77, 768] (``--output last_hidden_state``) — and ``mask``
uint8 [77] (the tokenizer's; v2.0 calls CLIP without a mask, causal attention only). Captions are not cleaned
(v2.0); ``--clean`` applies ``text_preprocessing``. The tokenizer comes from the ``--weights`` folder
(``vocab.json`` + ``merges.txt``) or ``--tokenizer``. Input, naming, resuming and backends as
``scripts/infer_t5.py``.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

if __name__ == "__main__":
    import mindspore  # noqa: F401
    from opensora_dual.text.embed_cache import main

    sys.exit(main(sys.argv[1:], __doc__, default_release="v2.0-clip", default_output="pooler_output"))
