"""Tokenizers from local folders (trained here; nothing is downloaded) feeding both twins."""
import numpy as np
import pytest

import sentencepiece as spm

from opensora_dual.text import load_tokenizer, tokenize
from opensora_dual.text.toy_tokenizers import build_clip_tokenizer_folder, build_t5_tokenizer_folder

CAPTIONS = ["a red car driving on the road at night", "a cat",
            " ".join(["a very long caption about a busy city street"] * 80)]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    return build_t5_tokenizer_folder(str(tmp_path_factory.mktemp("t5tok")))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return build_clip_tokenizer_folder(str(tmp_path_factory.mktemp("cliptok")))


def test_t5_ids_are_sentencepiece_plus_eos(t5_folder):
    tok = load_tokenizer(t5_folder)
    sp = spm.SentencePieceProcessor(model_file=f"{t5_folder}/spiece.model")
    assert len(tok) == sp.get_piece_size() and tok.pad_token_id == 0 and tok.eos_token_id == 1
    out = tokenize(tok, CAPTIONS[:2], 16)
    for row, mask, text in zip(out["input_ids"], out["attention_mask"], CAPTIONS[:2]):
        ids = sp.encode(text)[:15] + [1]
        n = len(ids)
        assert row[:n].tolist() == ids and mask[:n].all() and not mask[n:].any() and not row[n:].any()


@pytest.mark.parametrize("max_length", [120, 200, 300, 512])
def test_t5_pads_and_truncates_to_release_lengths(t5_folder, max_length):
    out = tokenize(load_tokenizer(t5_folder), CAPTIONS, max_length)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (3, max_length) and ids.dtype == mask.dtype == np.int64
    lens = mask.sum(1)
    assert lens[0] < lens[1] + 20 and lens[2] == max_length          # the long caption is cut...
    assert ids[2, -1] == 1                                            # ...and still ends with </s>
    assert (ids[np.arange(2), lens[:2] - 1] == 1).all()


def test_clip_tokenizer_layout(clip_folder):
    tok = load_tokenizer(clip_folder)
    out = tokenize(tok, CAPTIONS, 77)
    ids, mask = out["input_ids"], out["attention_mask"]
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert ids.shape == (3, 77) and eos == len(tok) - 1 and tok.pad_token_id == eos   # EOT is the largest id
    lens = mask.sum(1)
    assert (ids[:, 0] == bos).all() and (ids[np.arange(3), lens - 1] == eos).all() and lens[2] == 77
    assert (ids[1, lens[1]:] == eos).all()                            # padding is EOT, as CLIP-L's tokenizer
    # the first EOT is where both of transformers' pooling rules look
    assert (ids.argmax(1) == lens - 1).all() and ((ids == eos).argmax(1) == lens - 1).all()


def test_no_download_only_local_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer("google/t5-v1_1-xxl")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(str(tmp_path))   # a folder without tokenizer files


def test_saved_tokenizer_json_reloads(t5_folder, tmp_path):
    tok = load_tokenizer(t5_folder)
    tok.save_pretrained(str(tmp_path / "saved"))
    again = load_tokenizer(str(tmp_path / "saved"))
    a, b = tokenize(tok, CAPTIONS, 64), tokenize(again, CAPTIONS, 64)
    assert (a["input_ids"] == b["input_ids"]).all() and (a["attention_mask"] == b["attention_mask"]).all()
