"""T5 v1.1 encoder, MindSpore port of ``transformers/models/t5/modeling_t5.py`` (5.23), encoder path only.

Same module tree and parameter names as ``transformers.T5EncoderModel``:
``shared``, ``encoder.block[i].layer[0].SelfAttention.{q,k,v,o,relative_attention_bias}``,
``encoder.block[i].layer[0].layer_norm``, ``encoder.block[i].layer[1].DenseReluDense.{wi_0,wi_1,wo}``
(``wi`` when not gated), ``encoder.block[i].layer[1].layer_norm``, ``encoder.final_layer_norm``.
Differences kept on purpose:
- ``encoder.embed_tokens`` (tied to ``shared`` in transformers) is not a second cell: the top model looks up
  ``shared`` and hands the embeddings to the stack, so there is one parameter ``shared.weight``.
- Relative position buckets come from a lookup table computed once in numpy with the reference's fp32
  arithmetic (``_relative_position_bucket``); positions beyond +-max_distance share the last bucket, so the
  table covers [-max_distance, max_distance] and any sequence length.

Mixed precision (``ms_impl.layers.set_compute_dtype(net, ms.float16)``) mirrors a transformers T5 loaded
with ``dtype=torch.float16``: matmuls in fp16, T5 RMS norm statistics in fp32 with the result cast to fp16,
softmax in fp32, ``wo`` kept in fp32 (transformers' ``_keep_in_fp32_modules = ["wo"]``; switch
``keep_wo_fp32``), and the overflow clamp after each sub-layer whenever the hidden states are fp16.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import initializer

from ms_impl.layers import Embedding, Linear, scaled_dot_product_attention
from ms_impl.models.text_encoder.common import Dropout, get_activation

_FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """numpy twin of ``T5Attention._relative_position_bucket`` (same fp32 operations, same truncation)."""
    rp = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(rp)
    if bidirectional:
        num_buckets //= 2
        buckets += (rp > 0).astype(np.int64) * num_buckets
        rp = np.abs(rp)
    else:
        rp = -np.minimum(rp, 0)
    max_exact = num_buckets // 2
    is_small = rp < max_exact
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (np.log(rp.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact))
        scaled = np.where(is_small, 0, scaled)  # the reference discards these lanes (log(0) = -inf)
    if_large = max_exact + scaled.astype(np.int64)
    if_large = np.minimum(if_large, num_buckets - 1)
    return buckets + np.where(is_small, rp, if_large)


class T5LayerNorm(nn.Cell):
    """T5 RMS norm: no mean, no bias; variance in fp32; cast to the compute dtype before the weight."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = Parameter(initializer("ones", (hidden_size,), ms.float32), name="weight")
        self.variance_epsilon = eps
        self.compute_dtype = ms.float32

    def construct(self, hidden_states):
        h = hidden_states.astype(ms.float32)
        variance = mint.mean(mint.pow(h, 2), -1, keepdim=True)
        h = h * mint.rsqrt(variance + self.variance_epsilon)
        if self.compute_dtype != ms.float32:
            return self.weight.astype(self.compute_dtype) * h.astype(self.compute_dtype)
        return self.weight * h


class _KeepFP32Linear(Linear):
    """``wo``: transformers keeps it in fp32 when the model is loaded in half precision (the input is cast up and
    the output stays fp32). ``keep_fp32 = False``: the layer kit's Linear in the compute dtype."""

    keep_fp32 = True

    def construct(self, x):
        if self.keep_fp32:
            b = None if self.bias is None else self.bias
            return mint.nn.functional.linear(x.astype(ms.float32), self.weight, b)
        return super().construct(x)


class T5DenseActDense(nn.Cell):
    def __init__(self, d_model, d_ff, dropout_rate, dense_act_fn):
        super().__init__()
        self.wi = Linear(d_model, d_ff, bias=False)
        self.wo = _KeepFP32Linear(d_ff, d_model, bias=False)
        self.dropout = Dropout(dropout_rate)
        self.act = get_activation(dense_act_fn)

    def construct(self, hidden_states):
        return self.wo(self.dropout(self.act(self.wi(hidden_states))))


class T5DenseGatedActDense(nn.Cell):
    def __init__(self, d_model, d_ff, dropout_rate, dense_act_fn):
        super().__init__()
        self.wi_0 = Linear(d_model, d_ff, bias=False)
        self.wi_1 = Linear(d_model, d_ff, bias=False)
        self.wo = _KeepFP32Linear(d_ff, d_model, bias=False)
        self.dropout = Dropout(dropout_rate)
        self.act = get_activation(dense_act_fn)

    def construct(self, hidden_states):
        hidden_gelu = self.act(self.wi_0(hidden_states))
        hidden_linear = self.wi_1(hidden_states)
        return self.wo(self.dropout(hidden_gelu * hidden_linear))


class T5LayerFF(nn.Cell):
    def __init__(self, d_model, d_ff, dropout_rate, layer_norm_epsilon, dense_act_fn, is_gated_act):
        super().__init__()
        ff_cls = T5DenseGatedActDense if is_gated_act else T5DenseActDense
        self.DenseReluDense = ff_cls(d_model, d_ff, dropout_rate, dense_act_fn)
        self.layer_norm = T5LayerNorm(d_model, eps=layer_norm_epsilon)
        self.dropout = Dropout(dropout_rate)

    def construct(self, hidden_states):
        forwarded_states = self.DenseReluDense(self.layer_norm(hidden_states))
        return hidden_states + self.dropout(forwarded_states)  # fp16 + fp32(wo) promotes to fp32, as in torch


class T5Attention(nn.Cell):
    """Encoder self-attention: no 1/sqrt(d) scaling, additive relative position bias, padding mask on keys."""

    def __init__(self, d_model, d_kv, num_heads, has_relative_attention_bias=False,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0):
        super().__init__()
        self.n_heads = num_heads
        self.key_value_proj_dim = d_kv
        self.inner_dim = num_heads * d_kv
        self.has_relative_attention_bias = has_relative_attention_bias
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.dropout = dropout_rate
        self.q = Linear(d_model, self.inner_dim, bias=False)
        self.k = Linear(d_model, self.inner_dim, bias=False)
        self.v = Linear(d_model, self.inner_dim, bias=False)
        self.o = Linear(self.inner_dim, d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(relative_attention_num_buckets, num_heads)
            table = relative_position_bucket(np.arange(-relative_attention_max_distance,
                                                       relative_attention_max_distance + 1),
                                             True, relative_attention_num_buckets, relative_attention_max_distance)
            self._bucket_table = Tensor(table.astype(np.int32))  # not a Parameter: no checkpoint key
        self.compute_dtype = ms.float32
        self.scores_fp32 = True  # switch: see ms_impl.layers.scaled_dot_product_attention

    def compute_bias(self, query_length, key_length):
        """[1, H, Lq, Lk] bias in the compute dtype (the reference's embedding output dtype)."""
        context_position = ops.arange(query_length).reshape(-1, 1)
        memory_position = ops.arange(key_length).reshape(1, -1)
        max_distance = self.relative_attention_max_distance
        relative_position = mint.clamp(memory_position - context_position, -max_distance, max_distance)
        bucket = ops.gather(self._bucket_table, relative_position + max_distance, 0)
        values = self.relative_attention_bias(bucket)  # [Lq, Lk, H]
        return mint.permute(values, (2, 0, 1)).unsqueeze(0).astype(self.compute_dtype)

    def construct(self, hidden_states, mask=None, position_bias=None):
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        shape = (batch, length, self.n_heads, self.key_value_proj_dim)
        q = mint.transpose(self.q(hidden_states).reshape(shape), 1, 2)
        k = mint.transpose(self.k(hidden_states).reshape(shape), 1, 2)
        v = mint.transpose(self.v(hidden_states).reshape(shape), 1, 2)
        if position_bias is None:
            if self.has_relative_attention_bias:
                position_bias = self.compute_bias(length, length)
            else:
                position_bias = ops.zeros((1, self.n_heads, length, length), self.compute_dtype)
        out = scaled_dot_product_attention(q, k, v, mask, 1.0, "math", position_bias, self.scores_fp32)
        out = mint.transpose(out, 1, 2).reshape(batch, length, self.inner_dim)
        return self.o(out), position_bias, None


class T5LayerSelfAttention(nn.Cell):
    def __init__(self, d_model, d_kv, num_heads, has_relative_attention_bias, relative_attention_num_buckets,
                 relative_attention_max_distance, dropout_rate, layer_norm_epsilon):
        super().__init__()
        self.SelfAttention = T5Attention(d_model, d_kv, num_heads, has_relative_attention_bias,
                                         relative_attention_num_buckets, relative_attention_max_distance,
                                         dropout_rate)
        self.layer_norm = T5LayerNorm(d_model, eps=layer_norm_epsilon)
        self.dropout = Dropout(dropout_rate)

    def construct(self, hidden_states, attention_mask=None, position_bias=None):
        normed = self.layer_norm(hidden_states)
        attention_output, position_bias, attn_weights = self.SelfAttention(normed, attention_mask, position_bias)
        return hidden_states + self.dropout(attention_output), position_bias, attn_weights


def clamp_fp16(hidden_states):
    """transformers' "clamp inf values to enable fp16 training": if any element of the whole batch is inf,
    clamp to +-(65504 - 1000), else to +-65504 (which only turns inf into the max). fp16 only. NaN stays NaN
    as in torch.clamp (MindSpore's clamp would replace it)."""
    if hidden_states.dtype != ms.float16:
        return hidden_states
    any_inf = ops.isinf(hidden_states).any()
    clamp_value = ops.select(any_inf, Tensor(_FP16_MAX - 1000, ms.float16), Tensor(_FP16_MAX, ms.float16))
    clamped = mint.clamp(hidden_states, -clamp_value, clamp_value)
    return mint.where(ops.isnan(hidden_states), hidden_states, clamped)


class T5Block(nn.Cell):
    def __init__(self, has_relative_attention_bias=False, *, d_model, d_kv, d_ff, num_heads,
                 relative_attention_num_buckets, relative_attention_max_distance, dropout_rate,
                 layer_norm_epsilon, dense_act_fn, is_gated_act):
        super().__init__()
        self.layer = nn.CellList([
            T5LayerSelfAttention(d_model, d_kv, num_heads, has_relative_attention_bias,
                                 relative_attention_num_buckets, relative_attention_max_distance, dropout_rate,
                                 layer_norm_epsilon),
            T5LayerFF(d_model, d_ff, dropout_rate, layer_norm_epsilon, dense_act_fn, is_gated_act),
        ])

    def construct(self, hidden_states, attention_mask=None, position_bias=None):
        hidden_states, position_bias, _ = self.layer[0](hidden_states, attention_mask, position_bias)
        hidden_states = clamp_fp16(hidden_states)
        hidden_states = clamp_fp16(self.layer[1](hidden_states))
        return hidden_states, position_bias, None


def _act_from_proj(feed_forward_proj):
    """T5Config.__post_init__: "gated-gelu" -> gated, gelu_new; "relu" -> plain relu."""
    parts = feed_forward_proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"feed_forward_proj {feed_forward_proj!r}: expected 'gated-{{act}}' or '{{act}}'")
    act = "gelu_new" if feed_forward_proj == "gated-gelu" else parts[-1]
    return act, parts[0] == "gated"


class T5Stack(nn.Cell):
    """The encoder stack; takes embeddings (see the module note on ``embed_tokens``)."""

    def __init__(self, *, num_layers, dropout_rate, d_model, layer_norm_epsilon, **block_kwargs):
        super().__init__()
        self.block = nn.CellList([T5Block(i == 0, d_model=d_model, dropout_rate=dropout_rate,
                                          layer_norm_epsilon=layer_norm_epsilon, **block_kwargs)
                                  for i in range(num_layers)])
        self.final_layer_norm = T5LayerNorm(d_model, eps=layer_norm_epsilon)
        self.dropout = Dropout(dropout_rate)
        self.compute_dtype = ms.float32

    def construct(self, inputs_embeds, attention_mask=None):
        mask = None
        if attention_mask is not None:
            mask = (attention_mask != 0).reshape(attention_mask.shape[0], 1, 1, attention_mask.shape[1])
        # a half-precision reference has half-precision embeddings
        hidden_states = self.dropout(inputs_embeds.astype(self.compute_dtype))
        position_bias = None
        for layer_module in self.block:
            hidden_states, position_bias, _ = layer_module(hidden_states, mask, position_bias)
        return self.dropout(self.final_layer_norm(hidden_states))


class T5EncoderModel(nn.Cell):
    """``T5EncoderModel(**T5Config fields)``; ``construct(input_ids, attention_mask=None)`` -> [B, L, d_model].

    MindSpore-only switches (after construction): ``set_compute_dtype(ms.float16)``;
    ``keep_wo_fp32`` (default True, as transformers loads half-precision T5)."""

    def __init__(self, vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
                 layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="relu", pad_token_id=0,
                 eos_token_id=1, **config_extras):
        super().__init__()
        # config_extras: decoder fields etc. of a full T5 config.json, unused by the encoder (as in transformers)
        self.config = dict(vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
                           num_heads=num_heads, feed_forward_proj=feed_forward_proj, pad_token_id=pad_token_id,
                           eos_token_id=eos_token_id)
        dense_act_fn, is_gated_act = _act_from_proj(feed_forward_proj)
        self.shared = Embedding(vocab_size, d_model)
        self.encoder = T5Stack(num_layers=num_layers, dropout_rate=dropout_rate, d_model=d_model,
                               layer_norm_epsilon=layer_norm_epsilon, d_kv=d_kv, d_ff=d_ff, num_heads=num_heads,
                               relative_attention_num_buckets=relative_attention_num_buckets,
                               relative_attention_max_distance=relative_attention_max_distance,
                               dense_act_fn=dense_act_fn, is_gated_act=is_gated_act)

    @property
    def keep_wo_fp32(self):
        return all(c.keep_fp32 for _, c in self.cells_and_names() if isinstance(c, _KeepFP32Linear))

    @keep_wo_fp32.setter
    def keep_wo_fp32(self, value):
        for _, cell in self.cells_and_names():
            if isinstance(cell, _KeepFP32Linear):
                cell.keep_fp32 = bool(value)

    def set_compute_dtype(self, dtype):
        from ms_impl.layers import set_compute_dtype

        return set_compute_dtype(self, dtype)

    def construct(self, input_ids, attention_mask=None):
        return self.encoder(self.shared(input_ids), attention_mask)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        import converters

        return converters.from_pretrained(cls, path, "ms", **overrides)
