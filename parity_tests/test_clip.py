"""CLIP text tower parity: transformers' CLIPTextModel (reference) against the MindSpore port.

Rows: embeddings (token + position), attention with the causal (+ padding) mask, the quick-GELU MLP, one
encoder layer, the whole tower at a small config (both EOS-pooling rules of transformers: ``eos_token_id == 2``
-> argmax(input_ids), otherwise the first ``eos_token_id``; with and without attention mask; fp32/fp16;
PyNative and graph) and the full-size CLIP-L/14 text tower (full_size).
"""
import functools

import numpy as np
import pytest

import transformers
from transformers.models.clip import modeling_clip as HF

from opensora_dual.registry import resolve
from parity_tests.engine import Case, assert_case, default_row_level
from parity_tests.inputs import randomized

import ms_impl.models.text_encoder.clip as M
import pt_reference.models.text_encoder.clip as P

_, SMALL = resolve("CLIP-S-text")        # hidden 64, 4 heads, MLP 128, 2 layers, 77 positions, eos_token_id 2
_, LARGE = resolve("CLIP-L/14-text")
SMALL_NEW_EOS = dict(SMALL, bos_token_id=510, eos_token_id=511, pad_token_id=511)
B, L = 3, 77
D = SMALL["hidden_size"]




def clip_rows(name, module):
    kind = type(module).__name__
    if kind == "CLIPEncoderLayer":
        return "block"
    if kind == "CLIPEncoder":
        return None  # judged through the tower's outputs
    return default_row_level(name, module)


def hf_config(**kw):
    return transformers.CLIPTextConfig(**{**P.CLIP_TEXT_ARGS, **SMALL, **kw}, attn_implementation="sdpa")


def clip_ids(rng, cfg, batch=B, length=L):
    """CLIP-tokenizer-like rows: BOS, words, EOS, then padding (= EOS in the real tokenizer); EOS is the
    largest id of the vocabulary, as in CLIP, so both pooling rules find it."""
    vocab = cfg["vocab_size"]
    bos, eos = vocab - 2, vocab - 1
    lens = np.array([length, 9, 30, 2, 50][:batch])
    ids = rng.integers(1, vocab - 2, (batch, length))
    ids[:, 0] = bos
    ids[np.arange(batch), lens - 1] = eos
    pad = np.arange(length)[None] >= lens[:, None]
    ids[pad] = eos
    return ids.astype(np.int64), (~pad).astype(np.int64)


def model_inputs(cfg, with_mask):
    def inputs(rng):
        ids, mask = clip_ids(rng, cfg)
        return {"input_ids": ids, "attention_mask": mask if with_mask else None}
    return inputs


def hidden(rng):
    return {"hidden_states": rng.standard_normal((B, L, D)).astype(np.float32)}


def causal_padding_mask(rng):
    _, mask = clip_ids(rng, SMALL)
    causal = np.tril(np.ones((L, L), bool))[None, None]
    return causal & mask.astype(bool)[:, None, None, :]


def attention_inputs(rng):
    return {**hidden(rng), "attention_mask": causal_padding_mask(rng)}


def pt_embeddings():
    return HF.CLIPTextEmbeddings(hf_config())


def ms_embeddings():
    return M.CLIPTextEmbeddings(SMALL["vocab_size"], D, SMALL["max_position_embeddings"])


def embedding_inputs(rng):
    return {"input_ids": clip_ids(rng, SMALL)[0]}


def pt_attention():
    return HF.CLIPAttention(hf_config())


def ms_attention():
    return M.CLIPAttention(D, SMALL["num_attention_heads"])


def pt_mlp():
    return HF.CLIPMLP(hf_config())


def ms_mlp():
    return M.CLIPMLP(D, SMALL["intermediate_size"], "quick_gelu")


def pt_layer():
    return HF.CLIPEncoderLayer(hf_config())


def ms_layer():
    return M.CLIPEncoderLayer(D, SMALL["num_attention_heads"], SMALL["intermediate_size"], "quick_gelu", 1e-5, 0.0)


def pt_model(**kw):
    return randomized(functools.partial(P.CLIPTextModel, **kw))


def ms_model(**kw):
    return functools.partial(M.CLIPTextModel, **kw)


CASES = [
    Case("clip_embeddings", randomized(pt_embeddings), ms_embeddings, embedding_inputs, "layer"),
    Case("clip_attention", randomized(pt_attention), ms_attention, attention_inputs, "layer", row_level=clip_rows),
    Case("clip_attention", randomized(pt_attention), ms_attention, attention_inputs, "layer", dtype="fp16",
         row_level=clip_rows, noise_floor="attention"),
    Case("clip_mlp", randomized(pt_mlp), ms_mlp, hidden, "layer"),
    Case("clip_mlp", randomized(pt_mlp), ms_mlp, hidden, "layer", dtype="fp16"),
    Case("clip_encoder_layer", randomized(pt_layer), ms_layer, attention_inputs, "block", row_level=clip_rows),
    Case("clip_encoder_layer", randomized(pt_layer), ms_layer, attention_inputs, "block", dtype="fp16",
         row_level=clip_rows),
    # whole tower, small config; v2.0 calls it without a mask (causal only)
    Case("clip_small_eos2_nomask", pt_model(**SMALL), ms_model(**SMALL), model_inputs(SMALL, False),
         "model_small", row_level=clip_rows, cache_key="clip_small"),
    Case("clip_small_eos2_mask", pt_model(**SMALL), ms_model(**SMALL), model_inputs(SMALL, True),
         "model_small", row_level=clip_rows, cache_key="clip_small"),
    Case("clip_small_eos_id", pt_model(**SMALL_NEW_EOS), ms_model(**SMALL_NEW_EOS),
         model_inputs(SMALL_NEW_EOS, False), "model_small", row_level=clip_rows),
    Case("clip_small_eos2_nomask", pt_model(**SMALL), ms_model(**SMALL), model_inputs(SMALL, False),
         "model_small", mode="graph", capture=False, cache_key="clip_small"),
    Case("clip_small_eos2_nomask", pt_model(**SMALL), ms_model(**SMALL), model_inputs(SMALL, False),
         "model_small", dtype="fp16", row_level=clip_rows, cache_key="clip_small"),
    Case("clip_small_eos2_mask", pt_model(**SMALL), ms_model(**SMALL), model_inputs(SMALL, True),
         "model_small", dtype="fp16", mode="graph", capture=False, cache_key="clip_small"),
]

FULL_CASES = [
    Case("clip_l14_text", pt_model(**LARGE), ms_model(**LARGE), model_inputs(LARGE, False), "model_full",
         row_level=clip_rows),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_clip_parity(case):
    assert_case(case)


@pytest.mark.full_size
@pytest.mark.parametrize("case", FULL_CASES, ids=lambda c: c.id)
def test_clip_parity_full_size(case):
    assert_case(case)


def test_pooling_rules_pick_the_first_eos():
    """Both pooling rules give the first EOS position on tokenizer-like rows (EOS also pads), and a row whose
    first EOS is early is pooled there, not at the padding."""
    import mindspore as ms

    rng = np.random.default_rng(0)
    for cfg in (SMALL, SMALL_NEW_EOS):
        ids, mask = clip_ids(rng, cfg)
        model = M.CLIPTextModel(**cfg)
        last, pooled = model(ms.Tensor(ids), None)
        first_eos = mask.sum(1) - 1
        np.testing.assert_array_equal(pooled.asnumpy(), last.asnumpy()[np.arange(B), first_eos])
