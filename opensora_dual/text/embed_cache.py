"""The text-embedding cache behind ``scripts/infer_t5.py`` and ``scripts/infer_clip.py``.

One ``.npz`` per caption, mindone's format (``examples/opensora_hpcai/scripts/infer_t5.py``): ``text_emb``
float32 ([L, D] for T5 / CLIP hidden states, [D] for CLIP's pooled vector) and ``mask`` uint8 [L]. Names: a
CSV with a ``path`` (or ``video``) column mirrors it with the suffix ``.npz``; otherwise ``{index:06d}.npz``
(index = row / line number). Files are written atomically, existing ones are skipped unless ``overwrite``,
so an interrupted run resumes where it stopped. The network runs in the backend's text runtime
(``{pt_reference,ms_impl}/models/text_encoder/runtime.py``), found through ``registry.twin_module``.
"""
import argparse
import csv
import os
import sys
from typing import List, Tuple

import numpy as np

from opensora_dual.text.embedder import RELEASES

# the text runtime, at the same path in each twin package: {pt_reference,ms_impl}.models.text_encoder.runtime
TEXT_RUNTIME = "models.text_encoder.runtime"


def read_captions(csv_path=None, prompts=None, caption_column="text") -> List[Tuple[str, str]]:
    """[(output relative name, caption)] from a CSV (``caption_column``; names from ``path``/``video``) or a
    prompts file (one caption per non-empty line)."""
    items = []
    if csv_path:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if caption_column not in (reader.fieldnames or []):
                raise SystemExit(f"{csv_path}: no {caption_column!r} column (columns: {reader.fieldnames})")
            name_col = next((c for c in ("path", "video") if c in reader.fieldnames), None)
            for i, row in enumerate(reader):
                if name_col and row[name_col]:
                    name = os.path.splitext(row[name_col].lstrip("/"))[0] + ".npz"
                else:
                    name = f"{i:06d}.npz"
                items.append((name, row[caption_column]))
    else:
        with open(prompts, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        items = [(f"{i:06d}.npz", line) for i, line in enumerate(lines) if line.strip()]
    return items


def save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def run(embedder, items, output_dir, batch_size=8, overwrite=False, progress=True) -> dict:
    from tqdm import tqdm

    todo = [(name, cap) for name, cap in items
            if overwrite or not os.path.exists(os.path.join(output_dir, name))]
    done = len(items) - len(todo)
    with tqdm(total=len(items), initial=done, unit="caption", disable=not progress, desc="embed") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            out = embedder.encode([cap for _, cap in batch])
            for j, (name, _) in enumerate(batch):
                save_npz(os.path.join(output_dir, name), text_emb=out["text_emb"][j], mask=out["mask"][j])
            bar.update(len(batch))
    return {"captions": len(items), "written": len(todo), "skipped": done}


def build_parser(description, default_release, default_output):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="CSV with a caption column (default 'text'); 'path'/'video' names the outputs")
    src.add_argument("--prompts", help="text file, one caption per line")
    p.add_argument("--caption-column", default="text")
    p.add_argument("--output-dir", required=True)
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights", help="release folder (HF layout) or a converted file")
    w.add_argument("--model", help="registered preset with random weights (tests, demos)")
    p.add_argument("--tokenizer", help="local tokenizer folder (default: the --weights folder)")
    p.add_argument("--release", default=default_release, choices=sorted(RELEASES),
                   help="upstream release: sets max length, cleaning and whether the mask goes to the encoder")
    p.add_argument("--max-length", type=int, help="override the release's max length")
    clean = p.add_mutually_exclusive_group()
    clean.add_argument("--clean", dest="clean", action="store_true", default=None,
                       help="clean captions (text_preprocessing)")
    clean.add_argument("--no-clean", dest="clean", action="store_false")
    p.add_argument("--output", default=default_output, choices=["last_hidden_state", "pooler_output"])
    p.add_argument("--backend", default="ms", choices=["ms", "pt"], help="MindSpore (default) or the reference")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--jit", action="store_true", help="MindSpore: compile the forward with ms.jit (graph mode)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv, description, default_release, default_output):
    args = build_parser(description, default_release, default_output).parse_args(argv)
    from opensora_dual.registry import twin_module
    from opensora_dual.text.tokenization import load_tokenizer

    release = RELEASES[args.release]
    tok_dir = args.tokenizer or args.weights
    if tok_dir is None or not os.path.isdir(tok_dir):
        raise SystemExit("give --tokenizer FOLDER (or a --weights folder that holds the tokenizer files)")
    items = read_captions(args.csv, args.prompts, args.caption_column)
    runtime = twin_module(args.backend, TEXT_RUNTIME)  # the backend's load_text_encoder / make_text_embedder
    net = runtime.load_text_encoder(args.weights, args.model, args.dtype)
    embedder = runtime.make_text_embedder(net, load_tokenizer(tok_dir), args.max_length or release["max_length"],
                                          clean=release["clean"] if args.clean is None else args.clean,
                                          mask_to_model=release["mask_to_model"], output=args.output, jit=args.jit)
    stats = run(embedder, items, args.output_dir, args.batch_size, args.overwrite, not args.no_progress)
    print(f"{stats['written']} written, {stats['skipped']} already there, {stats['captions']} captions -> "
          f"{args.output_dir}", file=sys.stderr)
    return 0
