"""STDiT (Open-Sora 1.0), MindSpore port of ``pt_reference/models/stdit/stdit.py``.

Same constructor arguments and parameter names as the reference; ``pos_embed`` / ``pos_embed_temporal`` are
fixed Parameters (requires_grad False; the reference's persistent buffers) holding the same numpy-computed
tables. Switches, as STDiT3's port (each parity-tested):
- ``ms_impl.layers.set_compute_dtype(model, ms.float16)``: fp16 compute, norms/softmax in fp32;
- ``set_attention_backend("flash")``: ``ops.flash_attention_score`` (Ascend only; ``enable_flashattn=True``
  selects it on Ascend and falls back to the math path on CPU);
- ``set_recompute(True)``: recompute every block in the backward pass;
- ``set_patchify_linear(True)``: the patch Conv3d as reshape + matmul.
Sequence parallelism (``enable_sequence_parallelism``) is not implemented for STDiT (NotImplementedError).
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn

from opensora_dual.posemb import stdit_pos_tables
from ms_impl.layers.basic import LayerNorm, Linear, SiLU
from ms_impl.layers.blocks import (Attention, CaptionEmbedder, Mlp, MultiHeadCrossAttention, PatchEmbed3D,
                                   T2IFinalLayer, TimestepEmbedder, approx_gelu, t2i_modulate)
from ms_impl.models.stdit.stdit3 import STDiT3


class STDiTBlock(nn.Cell):
    def __init__(self, hidden_size, num_heads, d_s=None, d_t=None, mlp_ratio=4.0, drop_path=0.0,
                 enable_flashattn=False, enable_layernorm_kernel=False, enable_sequence_parallelism=False):
        super().__init__()
        if drop_path > 0:
            raise NotImplementedError("drop_path > 0 is not implemented (it is 0 in every Open-Sora 1.0 config)")
        if enable_sequence_parallelism:
            raise NotImplementedError("sequence parallelism is not implemented for STDiT (Open-Sora 1.0)")
        self.hidden_size = hidden_size
        self.norm1 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, enable_flash_attn=enable_flashattn)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        init = np.random.standard_normal((6, hidden_size)) / hidden_size ** 0.5
        self.scale_shift_table = Parameter(Tensor(init.astype(np.float32)), name="scale_shift_table")
        self.d_s, self.d_t = d_s, d_t
        self.attn_temp = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, enable_flash_attn=enable_flashattn)

    def construct(self, x, y, t, mask=None, tpe=None):
        B, N, C = x.shape
        T, S = self.d_t, self.d_s
        table = self.scale_shift_table.astype(x.dtype).reshape(1, 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mint.chunk(table + t.reshape(B, 6, -1), 6, 1)
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)

        x_s = self.attn(x_m.reshape(B * T, S, C)).reshape(B, T * S, C)
        x = x + gate_msa * x_s

        # temporal attention on the unmodulated residual, same gate_msa (upstream v1.0)
        x_t = mint.transpose(x.reshape(B, T, S, C), 1, 2).reshape(B * S, T, C)
        if tpe is not None:
            x_t = x_t + tpe.astype(x_t.dtype)
        x_t = self.attn_temp(x_t)
        x_t = mint.transpose(x_t.reshape(B, S, T, C), 1, 2).reshape(B, T * S, C)
        x = x + gate_msa * x_t

        x = x + self.cross_attn(x, y, mask)

        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(x_m)


class STDiT(nn.Cell):
    def __init__(self, input_size=(1, 32, 32), in_channels=4, patch_size=(1, 2, 2), hidden_size=1152, depth=28,
                 num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True, drop_path=0.0,
                 no_temporal_pos_emb=False, caption_channels=4096, model_max_length=120, dtype=None,
                 space_scale=1.0, time_scale=1.0, freeze=None, enable_flashattn=False,
                 enable_layernorm_kernel=False, enable_sequence_parallelism=False):
        super().__init__()
        if enable_sequence_parallelism:
            raise NotImplementedError("sequence parallelism is not implemented for STDiT (Open-Sora 1.0)")
        if freeze not in (None, "not_temporal", "text"):
            raise ValueError(f"freeze must be None, 'not_temporal' or 'text', got {freeze!r}")
        self.pred_sigma = pred_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.depth, self.mlp_ratio = depth, mlp_ratio
        self.patch_size = tuple(patch_size)
        self.input_size = tuple(input_size)
        self.dtype = dtype
        self.no_temporal_pos_emb = no_temporal_pos_emb  # unused upstream too: the temporal table is always added
        self.space_scale, self.time_scale = space_scale, time_scale
        self.model_max_length = model_max_length
        self.num_temporal, h, w = (-(-n // p) for n, p in zip(self.input_size, self.patch_size))
        self.num_spatial = h * w
        self.num_patches = self.num_temporal * self.num_spatial
        self.compute_dtype = ms.float32
        self._recompute = False

        pos, pos_t = stdit_pos_tables(hidden_size, (self.num_temporal, h, w), space_scale, time_scale)
        self.pos_embed = Parameter(Tensor(pos), name="pos_embed", requires_grad=False)
        self.pos_embed_temporal = Parameter(Tensor(pos_t), name="pos_embed_temporal", requires_grad=False)

        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.SequentialCell([SiLU(), Linear(hidden_size, 6 * hidden_size, bias=True)])
        self.y_embedder = CaptionEmbedder(in_channels=caption_channels, hidden_size=hidden_size,
                                          uncond_prob=class_dropout_prob, act_layer=approx_gelu,
                                          token_num=model_max_length)
        self.blocks = nn.CellList([
            STDiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path,
                       enable_flashattn=enable_flashattn, enable_layernorm_kernel=enable_layernorm_kernel,
                       d_t=self.num_temporal, d_s=self.num_spatial)
            for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels,
                                          d_t=self.num_temporal, d_s=self.num_spatial)
        self.initialize_temporal()
        if freeze == "not_temporal":
            for param in self.get_parameters():
                param.requires_grad = "attn_temp" in param.name
        elif freeze == "text":
            for param in self.get_parameters():
                if "cross_attn" in param.name:
                    param.requires_grad = False

    def initialize_temporal(self):
        """Upstream's zero init of the temporal attentions' output projection: a model initialised from
        PixArt-alpha (``--init-from pixart``, temporal parts left fresh) starts as the image model. The rest
        of the port keeps MindSpore's default init (its weights come from the converter, as STDiT3's)."""
        for block in self.blocks:
            for p in (block.attn_temp.proj.weight, block.attn_temp.proj.bias):
                p.set_data(ms.Tensor(np.zeros(p.shape, np.float32)))

    def set_input_size(self, input_size):
        """Twin of the reference's: new position tables and T/S for another latent size (T, H, W). The tables
        are replaced as new (non-trained) Parameters of the new shape; compiled graphs retrace for the new
        input shape."""
        input_size = tuple(int(v) for v in input_size)
        if input_size == self.input_size:
            return self
        self.input_size = input_size
        self.num_temporal, h, w = (-(-n // p) for n, p in zip(input_size, self.patch_size))
        self.num_spatial = h * w
        self.num_patches = self.num_temporal * self.num_spatial
        pos, pos_t = stdit_pos_tables(self.hidden_size, (self.num_temporal, h, w), self.space_scale, self.time_scale)
        self.pos_embed = Parameter(Tensor(pos), name="pos_embed", requires_grad=False)
        self.pos_embed_temporal = Parameter(Tensor(pos_t), name="pos_embed_temporal", requires_grad=False)
        for m in (*self.blocks, self.final_layer):
            m.d_t, m.d_s = self.num_temporal, self.num_spatial
        return self

    # ---- switches (STDiT3's, where they apply unchanged) ---------------------------------------------
    set_attention_backend = STDiT3.set_attention_backend
    set_patchify_linear = STDiT3.set_patchify_linear
    set_recompute = STDiT3.set_recompute
    recompute_blocks = STDiT3.recompute_blocks   # one-way (MindSpore Cell.recompute), every block

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A v1.0 release ``.pth`` (pass ``model="STDiT-XL/2"`` and the config's input_size/scales), or any file
        or folder the converter writes."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    # ---- forward --------------------------------------------------------------------------------------
    get_dynamic_size = STDiT3.get_dynamic_size
    encode_text = STDiT3.encode_text
    unpatchify = STDiT3.unpatchify

    def construct(self, x, timestep, y, mask=None):
        if tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"STDiT (Open-Sora 1.0) has a fixed input size: latent {tuple(x.shape[2:])} given, "
                             f"the model was built for input_size={self.input_size}")
        dtype = self.compute_dtype
        B = x.shape[0]
        x = x.astype(dtype)
        # as STDiT3's port: the timestep stays fp32 into the sinusoid; the embedding is cast after
        timestep = timestep.astype(ms.float32)
        y = y.astype(dtype)
        _, _, Tx, Hx, Wx = x.shape
        T, H, W = self.get_dynamic_size(x)
        S = H * W

        x = self.x_embedder(x)
        x = x.reshape(B, T, S, -1) + self.pos_embed.astype(x.dtype).reshape(1, 1, S, -1)
        x = x.reshape(B, T * S, -1)
        t = self.t_embedder(timestep)
        t_mlp = self.t_block(t)
        y, y_mask = self.encode_text(y, mask)

        tpe = self.pos_embed_temporal.astype(x.dtype)
        x = self.blocks[0](x, y, t_mlp, y_mask, tpe)
        for i in range(1, self.depth):
            x = self.blocks[i](x, y, t_mlp, y_mask)

        x = self.final_layer(x, t)
        x = self.unpatchify(x, T, H, W, Tx, Hx, Wx)
        return x.astype(ms.float32)
