"""Cache T5 text embeddings: one ``.npz`` per caption (``text_emb`` float32 [L, 4096], ``mask`` uint8 [L]).

    python scripts/infer_t5.py --csv data/captions.csv --output-dir data/t5_emb \\
        --weights /path/to/t5-v1_1-xxl [--release v1.2] [--backend ms|pt] [--dtype fp32|fp16] [--batch-size 8]
    python scripts/infer_t5.py --prompts prompts.txt --output-dir out/ --weights /path/to/t5-v1_1-xxl

Input: a CSV with a ``text`` column (``--caption-column``; a ``path``/``video`` column names the outputs after
the videos) or a prompts file (one caption per line; outputs ``000000.npz``, ...). ``--release`` sets upstream's
behaviour: v1.0/1.1/1.2 clean captions (``text_preprocessing``: clean_caption twice), pad to 120/200/300 and
give the encoder the mask; v2.0 pads to 512, does not clean and calls the encoder without a mask (the saved
mask is the tokenizer's either way). The tokenizer comes from the ``--weights`` folder (``spiece.model``) or
``--tokenizer``. MindSpore by default, ``--backend pt`` for the reference. Resumable: existing files are skipped
(``--overwrite`` redoes them); writes are atomic. ``--jit`` compiles the MindSpore forward (``ms.jit``).
``--model PRESET`` uses random weights (tests, demos).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

if __name__ == "__main__":
    import mindspore  # noqa: F401  (before anything can import decord; shared/mindspore_cpu_notes.md)
    from opensora_dual.text.embed_cache import main

    sys.exit(main(sys.argv[1:], __doc__, default_release="v1.2", default_output="last_hidden_state"))
