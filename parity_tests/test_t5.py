"""T5 v1.1 encoder parity: transformers' T5EncoderModel (reference) against the MindSpore port.

Rows: the relative-position bias (exact), each layer type (T5 RMS norm, attention with bias + padding mask,
gated-GELU and ReLU feed-forward), the two T5 sub-layers and one block, the whole encoder at a small config
(fp32/fp16, with and without padding, PyNative and graph), the real XXL widths (d_model 4096, 64 heads,
d_kv 64, d_ff 10240) with two layers in fp32 and one layer in fp16, and the fp16 overflow clamp.

The clamp cases compare same-dtype runs: the reference is cast to fp16 the way transformers loads a half
T5 (``to_dtype``: ``wo`` stays fp32, so the clamp after the attention sub-layer is the live one) or wholly
(``half()``: the clamp after the feed-forward fires too), and one projection is scaled so fp16 overflows.
An fp32 reference has no inf to clamp, so those cases use the fp16 reference and measure no noise floor.
"""
import functools

import numpy as np
import pytest

import mindspore as ms
import torch
import transformers
from transformers.models.t5 import modeling_t5 as HF

from opensora_dual.registry import resolve
from parity_tests.engine import Case, assert_case, default_row_level

import ms_impl.models.text_encoder.t5 as M
import pt_reference.models.text_encoder.t5 as P

_, SMALL = resolve("T5-S")                       # d_model 64, 4 heads x 16, d_ff 128, 2 layers, gated-gelu
_, XXL = resolve("T5-v1.1-XXL")
SMALL_RELU = dict(SMALL, feed_forward_proj="relu")
# XXL layer widths; the vocabulary (a row gather, no arithmetic) is cut to 1024 rows to save memory and time
XXL_1L = dict(XXL, num_layers=1, vocab_size=1024)
XXL_2L = dict(XXL, num_layers=2, vocab_size=1024)
B, L = 2, 40                                      # > max_exact, < max_distance: exact and log buckets


def t5_rows(name, module):
    """Per-layer levels: the T5 sub-layers (attention/FF with their residual) and blocks are "T5 layers" =
    block level; the stack is the whole model; everything else (norms, attention, FF, embeddings) a layer."""
    kind = type(module).__name__
    if kind in ("T5LayerSelfAttention", "T5LayerFF", "T5Block"):
        return "block"
    if kind == "T5Stack":
        return None  # the case's final output is the stack's output: judged at the case level
    return default_row_level(name, module)


def hf_config(**kw):
    args = {**P.T5_ENCODER_ARGS, **SMALL, **kw}
    return transformers.T5Config(**args, attn_implementation="sdpa")


def ms_args(**kw):
    return {**SMALL, **kw}


def ids_and_mask(rng, batch=B, length=L, vocab=SMALL["vocab_size"], pad=True):
    lens = np.array([length, length - 13][:batch]) if pad else np.full(batch, length)
    mask = (np.arange(length)[None] < lens[:, None]).astype(np.int64)
    ids = rng.integers(2, vocab, (batch, length)).astype(np.int64)
    ids[np.arange(batch), lens - 1] = 1          # </s>
    return ids * mask, mask                      # pad id 0


def model_inputs(pad=True, length=L, vocab=SMALL["vocab_size"]):
    def inputs(rng):
        ids, mask = ids_and_mask(rng, length=length, vocab=vocab, pad=pad)
        return {"input_ids": ids, "attention_mask": mask}
    return inputs


def hidden(rng, d=SMALL["d_model"], length=L):
    return {"hidden_states": rng.standard_normal((B, length, d)).astype(np.float32)}


def key_mask(rng, length=L):
    m = np.ones((B, 1, 1, length), bool)
    m[1, ..., length - 13:] = False
    return m


# ------------------------------------------------------------------------------------------ layer factories
def pt_attention():
    return HF.T5Attention(hf_config(), has_relative_attention_bias=True)


def ms_attention():
    c = SMALL
    return M.T5Attention(c["d_model"], c["d_kv"], c["num_heads"], True, c["relative_attention_num_buckets"],
                         c["relative_attention_max_distance"])


def attention_inputs(rng):
    return {**hidden(rng), "mask": key_mask(rng)}


def bias_inputs(rng):
    return {"query_length": 300, "key_length": 300}   # v1.2's 300 tokens: buckets up to and past max_distance


def pt_bias(m, query_length, key_length):
    return m.compute_bias(query_length, key_length)


def ms_bias(m, query_length, key_length):
    return m.compute_bias(query_length, key_length)


def pt_layer_norm():
    ln = HF.T5LayerNorm(SMALL["d_model"])
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.2)
    return ln


def ms_layer_norm():
    return M.T5LayerNorm(SMALL["d_model"])


def pt_gated_ff():
    return HF.T5DenseGatedActDense(hf_config())


def ms_gated_ff():
    return M.T5DenseGatedActDense(SMALL["d_model"], SMALL["d_ff"], 0.1, "gelu_new")


def pt_relu_ff():
    return HF.T5DenseActDense(hf_config(feed_forward_proj="relu"))


def ms_relu_ff():
    return M.T5DenseActDense(SMALL["d_model"], SMALL["d_ff"], 0.1, "relu")


def pt_layer_ff():
    return HF.T5LayerFF(hf_config())


def ms_layer_ff():
    c = SMALL
    return M.T5LayerFF(c["d_model"], c["d_ff"], 0.1, 1e-6, "gelu_new", True)


def pt_layer_self_attention():
    return HF.T5LayerSelfAttention(hf_config(), has_relative_attention_bias=True)


def ms_layer_self_attention():
    c = SMALL
    return M.T5LayerSelfAttention(c["d_model"], c["d_kv"], c["num_heads"], True, c["relative_attention_num_buckets"],
                                  c["relative_attention_max_distance"], 0.1, 1e-6)


def pt_sublayer(m, hidden_states, mask):
    return m(hidden_states, attention_mask=mask)


def ms_sublayer(m, hidden_states, mask):
    return m(hidden_states, mask)


def hidden_states_only(result):
    return result[0]


def _block_kwargs(c):
    return dict(d_model=c["d_model"], d_kv=c["d_kv"], d_ff=c["d_ff"], num_heads=c["num_heads"],
                relative_attention_num_buckets=c["relative_attention_num_buckets"],
                relative_attention_max_distance=c["relative_attention_max_distance"], dropout_rate=0.1,
                layer_norm_epsilon=1e-6, dense_act_fn="gelu_new", is_gated_act=True)


def pt_block():
    return HF.T5Block(hf_config(), has_relative_attention_bias=True, layer_idx=0)


def ms_block():
    return M.T5Block(True, **_block_kwargs(SMALL))


def block_inputs(rng):
    return {**hidden(rng), "attention_mask": key_mask(rng)}


# ------------------------------------------------------------------------------------------ model factories
def pt_model(**kw):
    return functools.partial(P.T5EncoderModel, **kw)


def ms_model(**kw):
    return functools.partial(M.T5EncoderModel, **kw)


# The clamp. The block input carries 65504 (fp16 max) in channel 0 for every token, so the T5 RMS norm makes
# channel 0 about +8 everywhere and every token sees the same sign pattern downstream; one output row of a
# projection is then set to +-10 with those signs, so the sub-layer adds hundreds to channel 0 of every
# token: 65504 + hundreds is inf in fp16 on both sides, decisively (no element near the rounding boundary),
# and the other channels stay small.
def _signs_of_channel0(weight):
    return torch.sign(weight[:, 0])


def pt_clamp_attention_block():
    block = pt_block()
    att = block.layer[0].SelfAttention
    with torch.no_grad():
        att.o.weight[0] = 10.0 * _signs_of_channel0(att.v.weight)
    return block


def pt_clamp_ff_block():
    block = pt_block()
    att, ff = block.layer[0].SelfAttention, block.layer[1].DenseReluDense
    with torch.no_grad():
        att.o.weight[0] = 0.0                      # attention adds exactly 0 to channel 0: 65504 stays finite
        pattern = ff.act(8.0 * ff.wi_0.weight[:, 0]) * (8.0 * ff.wi_1.weight[:, 0])
        ff.wo.weight[0] = 10.0 * torch.sign(pattern)
    return block


def clamp_inputs(rng):
    h = rng.standard_normal((B, L, SMALL["d_model"])).astype(np.float32)
    h[..., 0] = 65504.0
    return {"hidden_states": h, "attention_mask": key_mask(rng)}


def pt_block_as_loaded_fp16(block, hidden_states, attention_mask):
    """A block of transformers' from_pretrained(dtype=float16): fp16 except ``wo`` (kept fp32)."""
    block.half()
    block.layer[1].DenseReluDense.wo.float()
    return block(hidden_states.half(), attention_mask=attention_mask)


def pt_block_all_half(block, hidden_states, attention_mask):
    block.half()
    return block(hidden_states.half(), attention_mask=attention_mask)


def ms_block_call(block, hidden_states, attention_mask):
    return block(hidden_states, attention_mask)


def ms_block_all_half(block, hidden_states, attention_mask):
    block.layer[1].DenseReluDense.wo.keep_fp32 = False
    return block(hidden_states, attention_mask)


def ms_call(model, input_ids, attention_mask):
    return model(input_ids, attention_mask)


_ATTENTION_OVERFLOW = {"layer.0.SelfAttention.v": 100.0, "layer.0.SelfAttention.o": 1000.0}
_FF_OVERFLOW = {"layer.1.DenseReluDense.wi_1": 100.0, "layer.1.DenseReluDense.wo": 1000.0}

CASES = [
    Case("t5_relative_position_bias", pt_attention, ms_attention, bias_inputs, "op", call=(pt_bias, ms_bias)),
    Case("t5_layer_norm", pt_layer_norm, ms_layer_norm, hidden, "layer"),
    Case("t5_layer_norm", pt_layer_norm, ms_layer_norm, hidden, "layer", dtype="fp16", noise_floor="norm"),
    Case("t5_attention", pt_attention, ms_attention, attention_inputs, "layer", row_level=t5_rows),
    Case("t5_attention", pt_attention, ms_attention, attention_inputs, "layer", dtype="fp16",
         row_level=t5_rows, noise_floor="attention"),
    Case("t5_gated_gelu_ff", pt_gated_ff, ms_gated_ff, hidden, "layer"),
    Case("t5_gated_gelu_ff", pt_gated_ff, ms_gated_ff, hidden, "layer", dtype="fp16", out_dtype="fp32"),
    Case("t5_relu_ff", pt_relu_ff, ms_relu_ff, hidden, "layer"),
    Case("t5_layer_ff", pt_layer_ff, ms_layer_ff, hidden, "block", row_level=t5_rows),
    Case("t5_layer_self_attention", pt_layer_self_attention, ms_layer_self_attention, attention_inputs, "block",
         row_level=t5_rows, call=(pt_sublayer, ms_sublayer)),
    Case("t5_block", pt_block, ms_block, block_inputs, "block", row_level=t5_rows),
    # fp16 block output is fp32: ``wo`` stays fp32 and the FF residual promotes (as transformers' half T5)
    Case("t5_block", pt_block, ms_block, block_inputs, "block", dtype="fp16", row_level=t5_rows,
         outputs=hidden_states_only, out_dtype="fp32"),
    # whole encoder, small config
    Case("t5_small", pt_model(**SMALL), ms_model(**SMALL), model_inputs(), "model_small", row_level=t5_rows,
         cache_key="t5_small"),
    Case("t5_small_nopad", pt_model(**SMALL), ms_model(**SMALL), model_inputs(pad=False), "model_small",
         row_level=t5_rows, cache_key="t5_small"),
    Case("t5_small", pt_model(**SMALL), ms_model(**SMALL), model_inputs(), "model_small", mode="graph",
         capture=False, cache_key="t5_small"),
    Case("t5_small", pt_model(**SMALL), ms_model(**SMALL), model_inputs(), "model_small", dtype="fp16",
         row_level=t5_rows, cache_key="t5_small"),
    Case("t5_small", pt_model(**SMALL), ms_model(**SMALL), model_inputs(), "model_small", dtype="fp16",
         mode="graph", capture=False, cache_key="t5_small"),
    Case("t5_small_relu", pt_model(**SMALL_RELU), ms_model(**SMALL_RELU),
         model_inputs(), "model_small", row_level=t5_rows),
    # fp16 overflow clamp, same-dtype reference (module docstring)
    Case("t5_block_clamp_after_attention", pt_clamp_attention_block, ms_block, clamp_inputs, "block",
         dtype="fp16", call=(pt_block_as_loaded_fp16, ms_block_call), noise_floor=False, row_level=t5_rows,
         outputs=hidden_states_only, out_dtype="fp32"),
    Case("t5_block_clamp_after_ff_all_half", pt_clamp_ff_block, ms_block, clamp_inputs, "block", dtype="fp16",
         call=(pt_block_all_half, ms_block_all_half), noise_floor=False, row_level=t5_rows,
         outputs=hidden_states_only),
]

FULL_CASES = [
    Case("t5_xxl_widths_2_layers", pt_model(**XXL_2L), ms_model(**XXL_2L),
         model_inputs(length=64, vocab=1024), "model_full", row_level=t5_rows),
    Case("t5_xxl_widths_1_layer", pt_model(**XXL_1L), ms_model(**XXL_1L),
         model_inputs(length=64, vocab=1024), "model_full", dtype="fp16", row_level=t5_rows),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_t5_parity(case):
    assert_case(case)


@pytest.mark.full_size
@pytest.mark.parametrize("case", FULL_CASES, ids=lambda c: c.id)
def test_t5_parity_full_size(case):
    assert_case(case)


def test_clamp_cases_really_overflow():
    """The clamp cases test something only if fp16 overflows there: inf (no NaN) in every token's channel 0 of
    the sub-layer output, and the clamped value 65504 - 1000 (64512 in fp16) after it."""
    clamp_cases = [c for c in CASES if "clamp" in c.name]
    assert len(clamp_cases) == 2
    for case, sublayer in zip(clamp_cases, ("layer.0", "layer.1")):
        block = case.pt_factory().eval()
        seen = {}
        block.get_submodule(sublayer).register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
        inputs = clamp_inputs(np.random.default_rng(0))
        with torch.no_grad():
            out = case.call[0](block, torch.from_numpy(inputs["hidden_states"]),
                               torch.from_numpy(inputs["attention_mask"]))[0]
        pre = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
        assert pre.dtype == torch.float16, case.name
        assert torch.isinf(pre[..., 0]).all() and torch.isfinite(pre[..., 1:]).all(), case.name
        if sublayer == "layer.1":  # the FF clamp is the block's last op
            assert (out[..., 0] == 64512.0).all(), case.name


def test_keep_wo_fp32_switch():
    """The model-level switch reaches every ``wo``: with it (transformers' half T5) a block's output is fp32,
    without it (a wholly half model) fp16."""
    import mindspore as ms
    from ms_impl.layers import set_compute_dtype

    model = set_compute_dtype(M.T5EncoderModel(**SMALL), ms.float16)
    h = ms.Tensor(np.random.default_rng(0).standard_normal((1, 8, SMALL["d_model"])).astype(np.float16))
    assert model.keep_wo_fp32 and model.encoder.block[0](h)[0].dtype == ms.float32
    model.keep_wo_fp32 = False
    assert not model.keep_wo_fp32 and model.encoder.block[0](h)[0].dtype == ms.float16
