"""Tiny tokenizers built locally (nothing is downloaded) in the layout of the released folders, for tests,
benchmarks and the demo: a sentencepiece unigram ``spiece.model`` (T5) and a byte-level BPE
``vocab.json`` + ``merges.txt`` (CLIP), each loaded with transformers' ``from_pretrained(folder)``."""
import json
import os

_WORDS = ("a the of and in on with at by from under over near through across beside a an one two three many "
          "cat dog bird horse fish tree river mountain city street car boat train sky cloud sun moon rain snow "
          "forest beach ocean wave light shadow night morning evening people person man woman child group video "
          "camera shot slow fast motion walking running flying swimming sitting standing looking playing "
          "red blue green yellow white black golden bright dark small large old new beautiful quiet busy "
          "timelapse aerial view close up cinematic scene landscape sunset sunrise field flower garden house "
          "window road bridge light fire smoke water ice stone sand grass leaf wind storm").split()


def _corpus(n_lines=3000, seed=0):
    import random

    rnd = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rnd.choice(_WORDS) for _ in range(rnd.randint(3, 14))]
        if rnd.random() < 0.3:
            words.append(str(rnd.randint(0, 2000)))
        lines.append(" ".join(words) + rnd.choice([".", ",", "!", ""]))
    return lines


def build_t5_tokenizer_folder(folder, vocab_size=256, seed=0):
    """Train a sentencepiece unigram model (pad 0, eos 1, unk 2, no bos: T5's ids) into ``folder/spiece.model``.
    Load it with ``load_tokenizer(folder)`` (= ``T5Tokenizer.from_pretrained(folder, extra_ids=0)``)."""
    import sentencepiece as spm

    os.makedirs(folder, exist_ok=True)
    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(_corpus(seed=seed)) + "\n")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(folder, "spiece"), vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, character_coverage=1.0, minloglevel=2,
                                   num_threads=1, seed_sentencepiece_size=10000)
    os.remove(corpus)
    os.remove(os.path.join(folder, "spiece.vocab"))
    return folder


def _bytes_to_unicode():
    """GPT-2/CLIP byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_clip_tokenizer_folder(folder, n_merges=200):
    """A byte-level BPE in CLIP's format: every byte and byte+``</w>``, merges learnt greedily from a small
    corpus, then ``<|startoftext|>`` and ``<|endoftext|>`` last (EOT is the largest id, as in CLIP)."""
    from collections import Counter

    os.makedirs(folder, exist_ok=True)
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    words = Counter(w for line in _corpus() for w in line.lower().replace(".", " ").replace(",", " ").split())
    split = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, parts in split.items():
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        merges.append(f"{a} {b}")
        vocab.append(a + b)
        for w, parts in split.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            split[w] = tuple(out)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({tok: i for i, tok in enumerate(dict.fromkeys(vocab))}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder
