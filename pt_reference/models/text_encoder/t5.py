"""T5 v1.1 encoder reference: ``transformers.T5EncoderModel`` with a kwargs constructor.

Upstream Open-Sora (``opensora/models/text_encoder/t5.py``) calls
``T5EncoderModel.from_pretrained(...)(input_ids, attention_mask)["last_hidden_state"]``; ``forward`` here returns
that tensor. Keys: ``shared.weight``, ``encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight``,
``encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight``,
``encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight``, ``...layer_norm.weight``,
``encoder.final_layer_norm.weight``.

One change to transformers' module tree: transformers keeps ``encoder.embed_tokens`` as a second module tied to
``shared`` (so ``state_dict()`` lists the same tensor twice, while ``save_pretrained`` writes only
``shared.weight``). Here the alias is removed and ``forward`` looks up ``shared`` itself and hands the
embeddings to the stack (``T5Stack.forward(inputs_embeds=...)``, the same arithmetic). The state then holds
exactly the keys transformers saves, identical in both twins; checkpoints that also carry
``encoder.embed_tokens.weight`` have it dropped by the family's converter rules.
"""
import torch
import transformers

# T5Config fields the encoder uses, with transformers' defaults (T5 v1.1 XXL: see opensora_dual/families/t5.py).
T5_ENCODER_ARGS = dict(
    vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
    layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="relu", pad_token_id=0, eos_token_id=1,
)


class T5EncoderModel(transformers.T5EncoderModel):
    _tied_weights_keys = {}  # the encoder.embed_tokens alias is removed (module note)

    """``T5EncoderModel(d_model=..., num_layers=..., ...)``; ``attn_implementation`` is "sdpa" (transformers'
    default) or "eager". Extra config.json fields (decoder sizes, ``tie_word_embeddings``...) are accepted and
    passed to ``T5Config`` unchanged."""

    def __init__(self, config=None, attn_implementation="sdpa", **kwargs):
        if config is None:  # transformers' own loaders pass a config; the project passes kwargs
            args = {**T5_ENCODER_ARGS, **kwargs}
            config = transformers.T5Config(**args, attn_implementation=attn_implementation)
        super().__init__(config)
        del self.encoder.embed_tokens

    def forward(self, input_ids, attention_mask=None):
        """input_ids [B, L] int, attention_mask [B, L] (1 = token, 0 = padding) -> last_hidden_state [B, L, d_model]."""
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask)
        inputs_embeds = self.shared(torch.as_tensor(input_ids))
        return self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state

    def to_dtype(self, dtype):
        """Cast as ``from_pretrained(..., dtype=dtype)`` does: ``wo`` stays fp32 (``_keep_in_fp32_modules``)."""
        self.to(dtype)
        for name, module in self.named_modules():
            if name.endswith("DenseReluDense.wo"):
                module.to(torch.float32)
        return self

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """Project loader (upstream folder or converter output), through ``converters.from_pretrained``."""
        import converters

        return converters.from_pretrained(cls, path, "pt", **overrides)
