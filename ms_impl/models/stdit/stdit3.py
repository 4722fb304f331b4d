"""STDiT3 (Open-Sora 1.2), MindSpore port of ``pt_reference/models/stdit/stdit3.py``.

Same constructor arguments and parameter names as the reference. Switches (each parity-tested on/off):
- ``ms_impl.layers.set_compute_dtype(model, ms.float16)``: fp16 compute, norms/softmax/RoPE angles in fp32;
- ``set_attention_backend("flash")``: ``ops.flash_attention_score`` (Ascend only; ``enable_flash_attn=True``
  selects it on Ascend, and falls back to the math path on CPU);
- ``set_recompute(True)``: recompute every block in the backward pass (activation memory for compute);
- ``set_patchify_linear(True)``: the patch Conv3d as reshape + matmul.
- ``enable_sequence_parallelism=True`` / ``set_sequence_parallel()``: spatial tokens split over the ranks of an
  msrun job (upstream v1.2's scheme; inference). On CPU the exchange is AllGather (no AlltoAll kernel there).
"""
import math

import numpy as np
import mindspore as ms
from mindspore import mint, nn, ops

from ms_impl.layers.basic import LayerNorm, Linear, SiLU
from ms_impl.layers.blocks import (Attention, CaptionEmbedder, Mlp, MultiHeadCrossAttention, PatchEmbed3D,
                                   PositionEmbedding2D, RotaryEmbedding, SizeEmbedder, T2IFinalLayer,
                                   TimestepEmbedder, approx_gelu, t2i_modulate, t_mask_select)


class STDiT3Block(nn.Cell):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, drop_path=0.0, rope=None, qk_norm=False,
                 temporal=False, enable_flash_attn=False, enable_layernorm_kernel=False,
                 enable_sequence_parallelism=False):
        super().__init__()
        if drop_path > 0:
            raise NotImplementedError("drop_path > 0 is not implemented (it is 0 in every Open-Sora 1.2 config)")
        self.temporal = temporal
        self.hidden_size = hidden_size
        self.norm1 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm, rope=rope,
                              enable_flash_attn=enable_flash_attn)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        init = np.random.standard_normal((6, hidden_size)) / hidden_size ** 0.5
        self.scale_shift_table = ms.Parameter(ms.Tensor(init.astype(np.float32)), name="scale_shift_table")

    def construct(self, x, y, t, mask=None, x_mask=None, t0=None, T=None, S=None, rope_cos=None, rope_sin=None):
        B, N, C = x.shape
        table = self.scale_shift_table.astype(x.dtype).reshape(1, 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mint.chunk(table + t.reshape(B, 6, -1), 6, 1)
        zero = None  # the t0 (conditioning frame) modulation, when x_mask is given
        if x_mask is not None:
            zero = mint.chunk(table + t0.reshape(B, 6, -1), 6, 1)

        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm1(x), zero[0], zero[1]), T, S)

        if self.temporal:
            x_m = mint.transpose(x_m.reshape(B, T, S, C), 1, 2).reshape(B * S, T, C)
            x_m = self.attn(x_m, rope_cos, rope_sin)
            x_m = mint.transpose(x_m.reshape(B, S, T, C), 1, 2).reshape(B, T * S, C)
        else:
            x_m = self.attn(x_m.reshape(B * T, S, C))
            x_m = x_m.reshape(B, T * S, C)

        x_m_s = gate_msa * x_m
        if x_mask is not None:
            x_m_s = t_mask_select(x_mask, x_m_s, zero[2] * x_m, T, S)
        x = x + x_m_s

        x = x + self.cross_attn(x, y, mask)

        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm2(x), zero[3], zero[4]), T, S)
        x_m = self.mlp(x_m)
        x_m_s = gate_mlp * x_m
        if x_mask is not None:
            x_m_s = t_mask_select(x_mask, x_m_s, zero[5] * x_m, T, S)
        return x + x_m_s


class STDiT3(nn.Cell):
    def __init__(self, input_size=(None, None, None), input_sq_size=512, in_channels=4, patch_size=(1, 2, 2),
                 hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True,
                 drop_path=0.0, caption_channels=4096, model_max_length=300, qk_norm=True, enable_flash_attn=False,
                 enable_layernorm_kernel=False, enable_sequence_parallelism=False, only_train_temporal=False,
                 freeze_y_embedder=False, skip_y_embedder=False):
        super().__init__()
        if skip_y_embedder:
            raise NotImplementedError("skip_y_embedder=True (pre-packed caption features) is not supported")
        self.pred_sigma = pred_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.depth, self.mlp_ratio = depth, mlp_ratio
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.patch_size = tuple(patch_size)
        self.input_sq_size = input_sq_size
        self.model_max_length = model_max_length
        self.compute_dtype = ms.float32
        self._recompute = False

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.rope = RotaryEmbedding(dim=hidden_size // num_heads)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)
        self.t_block = nn.SequentialCell([SiLU(), Linear(hidden_size, 6 * hidden_size, bias=True)])
        self.y_embedder = CaptionEmbedder(in_channels=caption_channels, hidden_size=hidden_size,
                                          uncond_prob=class_dropout_prob, act_layer=approx_gelu,
                                          token_num=model_max_length)
        block_kw = dict(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                        enable_flash_attn=enable_flash_attn, enable_layernorm_kernel=enable_layernorm_kernel)
        self.spatial_blocks = nn.CellList([STDiT3Block(**block_kw) for _ in range(depth)])
        self.temporal_blocks = nn.CellList([STDiT3Block(**block_kw, temporal=True, rope=self.rope)
                                            for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)
        if only_train_temporal:
            for param in self.get_parameters():
                param.requires_grad = "temporal_blocks" in param.name
        if freeze_y_embedder:
            for param in self.y_embedder.get_parameters():
                param.requires_grad = False
        self.sp_size, self.sp_rank = 1, 0
        if enable_sequence_parallelism:
            self.set_sequence_parallel()

    # ---- switches -------------------------------------------------------------------------------------
    def set_attention_backend(self, backend):
        """"math" (CPU and Ascend) or "flash" (Ascend only: raises at the first forward elsewhere)."""
        if backend not in ("math", "flash"):
            raise ValueError(f"attention backend must be 'math' or 'flash', got {backend!r}")
        for _, cell in self.cells_and_names():
            if isinstance(cell, (Attention, MultiHeadCrossAttention)):
                cell.attn_backend = backend
        return self

    def set_recompute(self, enabled=True):
        """Recompute each block's activations in the backward pass (MindSpore ``Cell.recompute``).

        MindSpore configures recompute once per cell and cannot undo it: switching it off on a model that
        has it raises; build a new model instead."""
        if enabled == self._recompute:
            return self
        if not enabled:
            raise ValueError("recompute cannot be switched off once set (MindSpore Cell.recompute is one-way); "
                             "build a new model")
        for block in self.recompute_blocks():
            block.recompute()
        self._recompute = True
        return self

    def recompute_blocks(self):
        """The cells ``set_recompute`` wraps (STDiT / STDiT2, which share ``set_recompute``, have ``blocks``)."""
        if hasattr(self, "blocks"):
            return list(self.blocks)
        return list(self.spatial_blocks) + list(self.temporal_blocks)

    def set_sequence_parallel(self, size=None, rank=None):
        """Split the spatial tokens over the ranks of the (msrun) job, as upstream v1.2 does: spatial
        attention exchanges q/k/v and outputs between ranks, everything else (temporal attention, cross
        attention, MLPs, final layer) is token-local; the output is gathered at the end. Inference only.
        Needs ``mindspore.communication.init()`` before the model is built (launch with msrun)."""
        if size is None:
            try:
                from mindspore.communication import get_group_size, get_rank

                size, rank = get_group_size(), get_rank()
            except Exception as e:  # no communication backend initialised
                raise RuntimeError("sequence parallelism needs mindspore.communication.init() first (launch "
                                   f"with msrun --worker_num=N): {e}") from None
        self.sp_size, self.sp_rank = size, rank
        if size > 1:
            from mindspore import ops

            self.all_gather = ops.AllGather()
            for block in self.spatial_blocks:
                block.attn.set_sequence_parallel(size, rank)
        return self

    def set_patchify_linear(self, enabled=True):
        self.x_embedder.use_linear = enabled
        return self

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """An upstream release folder (config.json + model.safetensors) or any file the converter writes."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    # ---- forward --------------------------------------------------------------------------------------
    def get_dynamic_size(self, x):
        _, _, T, H, W = x.shape
        pt, ph, pw = self.patch_size
        return (T + pt - 1) // pt, (H + ph - 1) // ph, (W + pw - 1) // pw

    def encode_text(self, y, mask=None):
        """Caption features -> [B, L, C] and a [B, L] bool mask (None = every token valid)."""
        y = self.y_embedder(y, self.training)  # [B, 1, L, C]
        B = y.shape[0]
        y = y.reshape(B, y.shape[2], self.hidden_size)
        if mask is not None:
            mask = mask.reshape(mask.shape[0], -1)
            if mask.shape[0] != B:  # CFG: the cond mask is reused for the null half
                mask = mint.tile(mask, (B // mask.shape[0], 1))
            mask = mask != 0
        return y, mask

    def construct(self, x, timestep, y, mask=None, x_mask=None, fps=None, height=None, width=None):
        dtype = self.compute_dtype
        B = x.shape[0]
        x = x.astype(dtype)
        # Port choice: the timestep stays fp32 into the sinusoid (upstream casts it to the model dtype first,
        # which under fp16/bf16 rounds t~500 to steps of 0.25-2); the embedding is cast after.
        timestep = timestep.astype(ms.float32)
        y = y.astype(dtype)

        _, _, Tx, Hx, Wx = x.shape
        T, H, W = self.get_dynamic_size(x)
        S = H * W
        base_size = round(S ** 0.5)
        resolution_sq = mint.sqrt(height[0].astype(ms.float32) * width[0].astype(ms.float32))
        scale = resolution_sq / self.input_sq_size
        pos_emb = self.pos_embed(x, H, W, scale, base_size)

        t = self.t_embedder(timestep)
        fps = self.fps_embedder(fps.reshape(-1, 1), B)
        t = t + fps
        t_mlp = self.t_block(t)
        t0 = None
        t0_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(ops.zeros_like(timestep)) + fps
            t0_mlp = self.t_block(t0)

        y, y_mask = self.encode_text(y, mask)

        x = self.x_embedder(x)
        x = x.reshape(B, T, S, -1) + pos_emb.reshape(1, 1, S, -1)
        S_full = S
        if self.sp_size > 1:  # this rank keeps its contiguous 1/sp of every frame's tokens
            if S % self.sp_size:
                raise ValueError(f"sequence parallelism over {self.sp_size} ranks needs the {S} spatial tokens "
                                 f"per frame divisible by it")
            S = S // self.sp_size
            x = x[:, :, self.sp_rank * S:(self.sp_rank + 1) * S]
        x = x.reshape(B, T * S, -1)

        rope_cos, rope_sin = self.rope.cos_sin(T)
        for i in range(self.depth):
            x = self.spatial_blocks[i](x, y, t_mlp, y_mask, x_mask, t0_mlp, T, S)
            x = self.temporal_blocks[i](x, y, t_mlp, y_mask, x_mask, t0_mlp, T, S, rope_cos, rope_sin)

        x = self.final_layer(x, t, x_mask, t0, T, S)
        if self.sp_size > 1:  # gather every rank's tokens back into frame order
            x = self.all_gather(x.reshape(B, T, S, -1)).reshape(self.sp_size, B, T, S, -1)
            x = mint.permute(x, (1, 2, 0, 3, 4)).reshape(B, T * S_full, -1)
        x = self.unpatchify(x, T, H, W, Tx, Hx, Wx)
        return x.astype(ms.float32)

    def unpatchify(self, x, N_t, N_h, N_w, R_t, R_h, R_w):
        T_p, H_p, W_p = self.patch_size
        B = x.shape[0]
        x = x.reshape(B, N_t, N_h, N_w, T_p, H_p, W_p, self.out_channels)
        x = mint.permute(x, (0, 7, 1, 4, 2, 5, 3, 6)).reshape(
            B, self.out_channels, N_t * T_p, N_h * H_p, N_w * W_p)
        return x[:, :, :R_t, :R_h, :R_w]
