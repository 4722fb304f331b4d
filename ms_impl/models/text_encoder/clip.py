"""CLIP text tower, MindSpore port of ``transformers/models/clip/modeling_clip.py`` (5.23) ``CLIPTextModel``.

Same tree and names as transformers 5 (which dropped the ``text_model.`` level): ``embeddings.token_embedding``,
``embeddings.position_embedding``, ``encoder.layers[i].{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.{fc1,fc2},
layer_norm2}``, ``final_layer_norm``. ``embeddings.position_ids`` is a non-persistent buffer there and a plain
Tensor (no key) here.

Pooled output (what Open-Sora v2.0 keeps): the final-normed state at the EOS position. transformers picks it
two ways, and so do we: configs with ``eos_token_id == 2`` (the stale value in ``openai/clip-vit-large-patch14``)
take ``argmax(input_ids)`` (EOT is the largest id in CLIP's vocabulary); any other ``eos_token_id`` takes the first
position equal to it. Both give the first EOS for the real tokenizer, where padding is also EOS.
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ms_impl.layers import Embedding, LayerNorm, Linear, scaled_dot_product_attention
from ms_impl.models.text_encoder.common import get_activation


class CLIPTextEmbeddings(nn.Cell):
    def __init__(self, vocab_size, hidden_size, max_position_embeddings):
        super().__init__()
        self.token_embedding = Embedding(vocab_size, hidden_size)
        self.position_embedding = Embedding(max_position_embeddings, hidden_size)
        self.position_ids = Tensor(np.arange(max_position_embeddings, dtype=np.int32)[None])  # no key, as torch
        self.max_position_embeddings = max_position_embeddings
        self.compute_dtype = ms.float32

    def construct(self, input_ids):
        seq_length = input_ids.shape[-1]
        if seq_length > self.max_position_embeddings:
            raise ValueError(f"Sequence length must be less than max_position_embeddings (got {seq_length} and "
                             f"{self.max_position_embeddings})")
        embeddings = self.token_embedding(input_ids) + self.position_embedding(self.position_ids[:, :seq_length])
        return embeddings.astype(self.compute_dtype)


class CLIPAttention(nn.Cell):
    def __init__(self, hidden_size, num_attention_heads, attention_dropout=0.0):
        super().__init__()
        self.embed_dim = hidden_size
        self.num_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.dropout = attention_dropout
        self.k_proj = Linear(hidden_size, hidden_size)
        self.v_proj = Linear(hidden_size, hidden_size)
        self.q_proj = Linear(hidden_size, hidden_size)
        self.out_proj = Linear(hidden_size, hidden_size)
        # "math": fp32 scores in low precision (see the kit's scaled_dot_product_attention); "kit-math":
        # the scores in the compute dtype; "flash": Ascend only
        self.attention_backend = "math"

    def construct(self, hidden_states, attention_mask=None):
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        shape = (batch, length, self.num_heads, self.head_dim)
        q = mint.transpose(self.q_proj(hidden_states).reshape(shape), 1, 2)
        k = mint.transpose(self.k_proj(hidden_states).reshape(shape), 1, 2)
        v = mint.transpose(self.v_proj(hidden_states).reshape(shape), 1, 2)
        backend = "flash" if self.attention_backend == "flash" else "math"
        scores_fp32 = self.attention_backend == "math"
        out = scaled_dot_product_attention(q, k, v, attention_mask, self.scale, backend, None, scores_fp32)
        out = mint.transpose(out, 1, 2).reshape(batch, length, self.embed_dim)
        return self.out_proj(out), None


class CLIPMLP(nn.Cell):
    def __init__(self, hidden_size, intermediate_size, hidden_act):
        super().__init__()
        self.activation_fn = get_activation(hidden_act)
        self.fc1 = Linear(hidden_size, intermediate_size)
        self.fc2 = Linear(intermediate_size, hidden_size)

    def construct(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class CLIPEncoderLayer(nn.Cell):
    def __init__(self, hidden_size, num_attention_heads, intermediate_size, hidden_act, layer_norm_eps,
                 attention_dropout):
        super().__init__()
        self.embed_dim = hidden_size
        self.self_attn = CLIPAttention(hidden_size, num_attention_heads, attention_dropout)
        self.layer_norm1 = LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = CLIPMLP(hidden_size, intermediate_size, hidden_act)
        self.layer_norm2 = LayerNorm(hidden_size, eps=layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None):
        residual = hidden_states
        hidden_states, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        return residual + self.mlp(self.layer_norm2(hidden_states))


class CLIPEncoder(nn.Cell):
    def __init__(self, num_hidden_layers, **layer_kwargs):
        super().__init__()
        self.layers = nn.CellList([CLIPEncoderLayer(**layer_kwargs) for _ in range(num_hidden_layers)])

    def construct(self, inputs_embeds, attention_mask=None):
        hidden_states = inputs_embeds
        for encoder_layer in self.layers:
            hidden_states = encoder_layer(hidden_states, attention_mask)
        return hidden_states


class CLIPTextModel(nn.Cell):
    """``CLIPTextModel(**CLIPTextConfig fields)``; ``construct(input_ids, attention_mask=None)`` ->
    ``(last_hidden_state [B, L, hidden], pooler_output [B, hidden])``."""

    def __init__(self, vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
                 num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
                 pad_token_id=1, bos_token_id=49406, eos_token_id=49407, **config_extras):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                           max_position_embeddings=max_position_embeddings, eos_token_id=eos_token_id)
        self.embeddings = CLIPTextEmbeddings(vocab_size, hidden_size, max_position_embeddings)
        self.encoder = CLIPEncoder(num_hidden_layers, hidden_size=hidden_size,
                                   num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
                                   hidden_act=hidden_act, layer_norm_eps=layer_norm_eps,
                                   attention_dropout=attention_dropout)
        self.final_layer_norm = LayerNorm(hidden_size, eps=layer_norm_eps)
        self.eos_token_id = eos_token_id
        causal = np.tril(np.ones((max_position_embeddings, max_position_embeddings), dtype=bool))
        self._causal = Tensor(causal)

    def set_attention_backend(self, backend):
        for _, cell in self.cells_and_names():
            if isinstance(cell, CLIPAttention):
                cell.attention_backend = backend
        return self

    def set_compute_dtype(self, dtype):
        from ms_impl.layers import set_compute_dtype

        return set_compute_dtype(self, dtype)

    def construct(self, input_ids, attention_mask=None):
        batch, length = input_ids.shape[0], input_ids.shape[1]
        hidden_states = self.embeddings(input_ids)
        mask = self._causal[:length, :length].reshape(1, 1, length, length)
        if attention_mask is not None:  # causal AND key padding, as transformers' create_causal_mask
            mask = mint.logical_and(mask, (attention_mask != 0).reshape(batch, 1, 1, length))
        last_hidden_state = self.final_layer_norm(self.encoder(hidden_states, mask))
        if self.eos_token_id == 2:  # legacy configs: EOT is the largest id
            eos_position = ops.argmax(input_ids.astype(ms.int32), -1)
        else:
            eos_position = ops.argmax((input_ids == self.eos_token_id).astype(ms.int32), -1)
        index = ops.stack([ops.arange(batch).astype(ms.int32), eos_position.astype(ms.int32)], -1)
        return last_hidden_state, ops.gather_nd(last_hidden_state, index)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        import converters

        return converters.from_pretrained(cls, path, "ms", **overrides)
