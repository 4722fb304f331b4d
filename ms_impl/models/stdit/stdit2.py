"""STDiT2 (Open-Sora 1.1), MindSpore port of ``pt_reference/models/stdit/stdit2.py``.

Same constructor arguments and parameter names as the reference. The switches are STDiT3's (the same methods,
shared from ``ms_impl/models/stdit/stdit3.py``), each parity-tested on/off:
- ``ms_impl.layers.set_compute_dtype(model, ms.float16)``: fp16 compute, norms/softmax/RoPE angles in fp32;
- ``set_attention_backend("flash")``: ``ops.flash_attention_score`` (Ascend only; ``enable_flash_attn=True``
  selects it on Ascend, and falls back to the math path on CPU);
- ``set_recompute(True)``: recompute every block in the backward pass;
- ``set_patchify_linear(True)``: the patch Conv3d as reshape + matmul.
Upstream v1.1 has no sequence parallelism for STDiT2; neither twin has it.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import mint, nn, ops

from ms_impl.layers.basic import LayerNorm, Linear, SiLU
from ms_impl.layers.blocks import (Attention, CaptionEmbedder, Mlp, MultiHeadCrossAttention, PatchEmbed3D,
                                   PositionEmbedding2D, RotaryEmbedding, SizeEmbedder, T2IFinalLayer,
                                   TimestepEmbedder, approx_gelu, t2i_modulate, t_mask_select)
from ms_impl.models.stdit.stdit3 import STDiT3


class STDiT2Block(nn.Cell):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, drop_path=0.0, enable_flash_attn=False,
                 enable_layernorm_kernel=False, enable_sequence_parallelism=False, rope=None, qk_norm=False,
                 qk_norm_legacy=False):
        super().__init__()
        if drop_path > 0:
            raise NotImplementedError("drop_path > 0 is not implemented (it is 0 in every Open-Sora 1.1 config)")
        self.hidden_size = hidden_size
        self.norm1 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, enable_flash_attn=enable_flash_attn,
                              qk_norm=qk_norm, qk_norm_legacy=qk_norm_legacy)
        self.scale_shift_table = ms.Parameter(ms.Tensor(
            (np.random.standard_normal((6, hidden_size)) / hidden_size ** 0.5).astype(np.float32)),
            name="scale_shift_table")
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.norm_temp = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn_temp = Attention(hidden_size, num_heads=num_heads, qkv_bias=True,
                                   enable_flash_attn=enable_flash_attn, rope=rope, qk_norm=qk_norm,
                                   qk_norm_legacy=qk_norm_legacy)
        self.scale_shift_table_temporal = ms.Parameter(ms.Tensor(
            (np.random.standard_normal((3, hidden_size)) / hidden_size ** 0.5).astype(np.float32)),
            name="scale_shift_table_temporal")

    def construct(self, x, y, t, t_tmp, mask=None, x_mask=None, t0=None, t0_tmp=None, T=None, S=None,
                  rope_cos=None, rope_sin=None):
        B, N, C = x.shape
        table = self.scale_shift_table.astype(x.dtype).reshape(1, 6, -1)
        table_tmp = self.scale_shift_table_temporal.astype(x.dtype).reshape(1, 3, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mint.chunk(table + t.reshape(B, 6, -1), 6, 1)
        shift_tmp, scale_tmp, gate_tmp = mint.chunk(table_tmp + t_tmp.reshape(B, 3, -1), 3, 1)
        zero = None      # the t0 (conditioning frame) modulations, when x_mask is given
        zero_tmp = None
        if x_mask is not None:
            zero = mint.chunk(table + t0.reshape(B, 6, -1), 6, 1)
            zero_tmp = mint.chunk(table_tmp + t0_tmp.reshape(B, 3, -1), 3, 1)

        # spatial branch
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm1(x), zero[0], zero[1]), T, S)
        x_s = self.attn(x_m.reshape(B * T, S, C)).reshape(B, T * S, C)
        x_s_g = gate_msa * x_s
        if x_mask is not None:
            x_s_g = t_mask_select(x_mask, x_s_g, zero[2] * x_s, T, S)
        x = x + x_s_g

        # temporal branch
        x_m = t2i_modulate(self.norm_temp(x), shift_tmp, scale_tmp)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm_temp(x), zero_tmp[0], zero_tmp[1]), T, S)
        x_t = mint.transpose(x_m.reshape(B, T, S, C), 1, 2).reshape(B * S, T, C)
        x_t = self.attn_temp(x_t, rope_cos, rope_sin)
        x_t = mint.transpose(x_t.reshape(B, S, T, C), 1, 2).reshape(B, T * S, C)
        x_t_g = gate_tmp * x_t
        if x_mask is not None:
            x_t_g = t_mask_select(x_mask, x_t_g, zero_tmp[2] * x_t, T, S)
        x = x + x_t_g

        x = x + self.cross_attn(x, y, mask)

        # MLP branch
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm2(x), zero[3], zero[4]), T, S)
        x_mlp = self.mlp(x_m)
        x_mlp_g = gate_mlp * x_mlp
        if x_mask is not None:
            x_mlp_g = t_mask_select(x_mask, x_mlp_g, zero[5] * x_mlp, T, S)
        return x + x_mlp_g


class STDiT2(nn.Cell):
    def __init__(self, input_size=(None, None, None), input_sq_size=512, in_channels=4, patch_size=(1, 2, 2),
                 hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True,
                 drop_path=0.0, no_temporal_pos_emb=False, caption_channels=4096, model_max_length=200, freeze=None,
                 qk_norm=True, qk_norm_legacy=True, enable_flash_attn=False, enable_layernorm_kernel=False):
        super().__init__()
        if hidden_size % 3:
            raise ValueError(f"hidden_size must be divisible by 3 (the size and aspect-ratio embedders are "
                             f"hidden_size/3 wide), got {hidden_size}")
        if freeze not in (None, "not_temporal", "text"):
            raise ValueError(f"freeze must be None, 'not_temporal' or 'text', got {freeze!r}")
        self.pred_sigma = pred_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.no_temporal_pos_emb = no_temporal_pos_emb
        self.depth, self.mlp_ratio = depth, mlp_ratio
        self.patch_size = tuple(patch_size)
        self.input_size = input_size
        self.input_sq_size = input_sq_size
        self.model_max_length = model_max_length
        self.compute_dtype = ms.float32
        self._recompute = False

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.SequentialCell([SiLU(), Linear(hidden_size, 6 * hidden_size, bias=True)])
        self.t_block_temp = nn.SequentialCell([SiLU(), Linear(hidden_size, 3 * hidden_size, bias=True)])
        self.y_embedder = CaptionEmbedder(in_channels=caption_channels, hidden_size=hidden_size,
                                          uncond_prob=class_dropout_prob, act_layer=approx_gelu,
                                          token_num=model_max_length)
        self.rope = RotaryEmbedding(dim=hidden_size // num_heads)
        self.blocks = nn.CellList([
            STDiT2Block(hidden_size, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path,
                        enable_flash_attn=enable_flash_attn, enable_layernorm_kernel=enable_layernorm_kernel,
                        rope=True, qk_norm=qk_norm, qk_norm_legacy=qk_norm_legacy)
            for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)
        self.csize_embedder = SizeEmbedder(hidden_size // 3)
        self.ar_embedder = SizeEmbedder(hidden_size // 3)
        self.fl_embedder = SizeEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)
        if freeze == "not_temporal":
            for param in self.get_parameters():
                if "attn_temp" not in param.name:
                    param.requires_grad = False
        elif freeze == "text":
            for param in self.get_parameters():
                if "cross_attn" in param.name:
                    param.requires_grad = False

    # ---- switches (STDiT3's) ----------------------------------------------------------------------------
    set_attention_backend = STDiT3.set_attention_backend
    set_patchify_linear = STDiT3.set_patchify_linear
    set_recompute = STDiT3.set_recompute
    recompute_blocks = STDiT3.recompute_blocks   # one-way (MindSpore Cell.recompute), every block

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release folder (config.json + model.safetensors) or any file the converter writes."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    # ---- forward (shared pieces: STDiT3's) --------------------------------------------------------------
    get_dynamic_size = STDiT3.get_dynamic_size
    encode_text = STDiT3.encode_text
    unpatchify = STDiT3.unpatchify

    def construct(self, x, timestep, y, mask=None, x_mask=None, num_frames=None, height=None, width=None, ar=None,
                  fps=None):
        dtype = self.compute_dtype
        B = x.shape[0]
        x = x.astype(dtype)
        # Port choice (as STDiT3's): the timestep stays fp32 into the sinusoid; the embedding is cast after.
        timestep = timestep.astype(ms.float32)
        y = y.astype(dtype)

        # data info: sizes + aspect ratio (spatial), frames + fps (temporal); scalars go in fp32
        height = height.astype(ms.float32)
        width = width.astype(ms.float32)
        hw = mint.cat((height.reshape(-1, 1), width.reshape(-1, 1)), dim=1)
        csize = self.csize_embedder(hw, B)
        ar = self.ar_embedder(ar.astype(ms.float32).reshape(-1, 1), B)
        data_info = mint.cat((csize, ar), dim=1)
        fl = self.fl_embedder(num_frames.astype(ms.float32).reshape(-1, 1), B)
        fl = fl + self.fps_embedder(fps.astype(ms.float32).reshape(-1, 1), B)

        _, _, Tx, Hx, Wx = x.shape
        T, H, W = self.get_dynamic_size(x)
        S = H * W
        scale = mint.sqrt(height[0] * width[0]) / self.input_sq_size
        base_size = round(S ** 0.5)
        pos_emb = self.pos_embed(x, H, W, scale, base_size)

        x = self.x_embedder(x)
        x = x.reshape(B, T, S, -1) + pos_emb.reshape(1, 1, S, -1)
        x = x.reshape(B, T * S, -1)

        t = self.t_embedder(timestep)
        t_spc = t + data_info
        t_tmp = t + fl
        t_spc_mlp = self.t_block(t_spc)
        t_tmp_mlp = self.t_block_temp(t_tmp)
        t0_spc = None
        t0_spc_mlp = None
        t0_tmp_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(ops.zeros_like(timestep))
            t0_spc = t0 + data_info
            t0_tmp = t0 + fl
            t0_spc_mlp = self.t_block(t0_spc)
            t0_tmp_mlp = self.t_block_temp(t0_tmp)

        y, y_mask = self.encode_text(y, mask)

        rope_cos, rope_sin = self.rope.cos_sin(T)
        for i in range(self.depth):
            x = self.blocks[i](x, y, t_spc_mlp, t_tmp_mlp, y_mask, x_mask, t0_spc_mlp, t0_tmp_mlp, T, S,
                               rope_cos, rope_sin)

        # upstream quirk kept: raw t for generated frames, t0 + data_info for x_mask False frames
        x = self.final_layer(x, t, x_mask, t0_spc, T, S)
        x = self.unpatchify(x, T, H, W, Tx, Hx, Wx)
        return x.astype(ms.float32)
