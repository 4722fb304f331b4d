"""CLIP text tower reference: ``transformers.CLIPTextModel`` with a kwargs constructor.

Open-Sora v2.0 (``opensora/models/text/conditioner.py::HFEmbedder``) calls the tower with
``attention_mask=None`` and keeps ``pooler_output`` [B, hidden] (the final-layer-normed state at the EOS
position); ``forward`` returns ``(last_hidden_state, pooler_output)``.

transformers 5 flattened the tower: keys are ``embeddings.token_embedding.weight``,
``encoder.layers.N.self_attn.q_proj.weight``, ``final_layer_norm.weight``; released checkpoints
(``openai/clip-vit-large-patch14``) carry a ``text_model.`` prefix that the loader strips
(transformers' own ``PrefixChange(prefix_to_remove="text_model")``; ours is in opensora_dual/families/clip.py).
"""
import torch
import transformers

# CLIPTextConfig fields, transformers' defaults (CLIP-L text: see opensora_dual/families/clip.py).
CLIP_TEXT_ARGS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512, num_hidden_layers=12,
    num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0, pad_token_id=1, bos_token_id=49406,
    eos_token_id=49407,
)


class CLIPTextModel(transformers.CLIPTextModel):
    def __init__(self, config=None, attn_implementation="sdpa", **kwargs):
        if config is None:
            args = {**CLIP_TEXT_ARGS, **kwargs}
            config = transformers.CLIPTextConfig(**args, attn_implementation=attn_implementation)
        super().__init__(config)

    def forward(self, input_ids, attention_mask=None):
        """input_ids [B, L] -> (last_hidden_state [B, L, hidden], pooler_output [B, hidden])."""
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask)
        out = super().forward(input_ids=torch.as_tensor(input_ids), attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """Project loader (upstream folder or converter output), through ``converters.from_pretrained``."""
        import converters

        return converters.from_pretrained(cls, path, "pt", **overrides)
