"""STDiT2 (Open-Sora 1.1), the reference. Mirrors ``v1.1.0:opensora/models/stdit/stdit2.py``.

Constructor arguments are the fields of upstream's ``STDiT2Config``; attribute names are the release
checkpoint's keys (``hpcai-tech/OpenSora-STDiT-v2-stage2/3``), so its ``model.safetensors`` loads with
strict=True. The constructor defaults are the v1.1 release's values (input_sq_size 512, model_max_length 200,
qk_norm and qk_norm_legacy on); upstream's ``STDiT2Config`` defaults differ (32, 120, off, off) and are what
``opensora_dual.families.stdit2.config_from_json`` fills in for keys a config.json lacks.

Shared with STDiT3 (the same upstream code): ``get_dynamic_size``, ``encode_text`` (packed text + y_lens, the
CFG mask repeat) and ``unpatchify`` are STDiT3's methods.
"""
import math

import torch
from torch import nn

from pt_reference.layers.basic import LayerNorm, Linear, SiLU
from pt_reference.layers.blocks import (Attention, CaptionEmbedder, Mlp, MultiHeadCrossAttention, PatchEmbed3D,
                                        PositionEmbedding2D, RotaryEmbedding, SizeEmbedder, T2IFinalLayer,
                                        TimestepEmbedder, approx_gelu, t2i_modulate, t_mask_select)
from pt_reference.models.stdit.stdit3 import STDiT3


class STDiT2Block(nn.Module):
    """Spatial attention (over the S tokens of a frame), temporal attention (over the T frames of a location,
    with its own LN and 3-row modulation), cross-attention, MLP. Attribute order = upstream's (key order)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, drop_path=0.0, enable_flash_attn=False,
                 enable_layernorm_kernel=False, enable_sequence_parallelism=False, rope=None, qk_norm=False,
                 qk_norm_legacy=False):
        super().__init__()
        if drop_path > 0:
            raise NotImplementedError("drop_path > 0 is a training regulariser not implemented in the reference")
        self.hidden_size = hidden_size
        self.enable_flash_attn = enable_flash_attn
        # spatial branch
        self.norm1 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, enable_flash_attn=enable_flash_attn,
                              qk_norm=qk_norm, qk_norm_legacy=qk_norm_legacy)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size).div_(hidden_size ** 0.5))
        # cross attention
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        # MLP branch
        self.norm2 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        # temporal branch (RoPE on q/k; before the qk RMSNorm when qk_norm_legacy, as the v1.1 release)
        self.norm_temp = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn_temp = Attention(hidden_size, num_heads=num_heads, qkv_bias=True,
                                   enable_flash_attn=enable_flash_attn, rope=rope, qk_norm=qk_norm,
                                   qk_norm_legacy=qk_norm_legacy)
        self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, hidden_size).div_(hidden_size ** 0.5))

    def forward(self, x, y, t, t_tmp, mask=None, x_mask=None, t0=None, t0_tmp=None, T=None, S=None):
        """t [B, 6C] (t_block of t + data_info), t_tmp [B, 3C] (t_block_temp of t + fl + fps); t0/t0_tmp the
        same for timestep 0 (x_mask False frames); mask = y_lens of the packed text."""
        B, N, C = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(B, 6, -1)).chunk(6, dim=1)
        shift_tmp, scale_tmp, gate_tmp = (self.scale_shift_table_temporal[None] + t_tmp.reshape(B, 3, -1)).chunk(
            3, dim=1)
        if x_mask is not None:
            (shift_msa_zero, scale_msa_zero, gate_msa_zero, shift_mlp_zero, scale_mlp_zero, gate_mlp_zero) = (
                self.scale_shift_table[None] + t0.reshape(B, 6, -1)).chunk(6, dim=1)
            shift_tmp_zero, scale_tmp_zero, gate_tmp_zero = (
                self.scale_shift_table_temporal[None] + t0_tmp.reshape(B, 3, -1)).chunk(3, dim=1)

        # spatial branch
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm1(x), shift_msa_zero, scale_msa_zero), T, S)
        x_s = self.attn(x_m.reshape(B * T, S, C)).reshape(B, T * S, C)         # B (T S) C -> (B T) S C
        x_s_g = gate_msa * x_s
        if x_mask is not None:
            x_s_g = t_mask_select(x_mask, x_s_g, gate_msa_zero * x_s, T, S)
        x = x + x_s_g

        # temporal branch
        x_m = t2i_modulate(self.norm_temp(x), shift_tmp, scale_tmp)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm_temp(x), shift_tmp_zero, scale_tmp_zero), T, S)
        x_t = x_m.reshape(B, T, S, C).transpose(1, 2).reshape(B * S, T, C)     # B (T S) C -> (B S) T C
        x_t = self.attn_temp(x_t)
        x_t = x_t.reshape(B, S, T, C).transpose(1, 2).reshape(B, T * S, C)
        x_t_g = gate_tmp * x_t
        if x_mask is not None:
            x_t_g = t_mask_select(x_mask, x_t_g, gate_tmp_zero * x_t, T, S)
        x = x + x_t_g

        # cross attention (no gate, no norm)
        x = x + self.cross_attn(x, y, mask)

        # MLP branch
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        if x_mask is not None:
            x_m = t_mask_select(x_mask, x_m, t2i_modulate(self.norm2(x), shift_mlp_zero, scale_mlp_zero), T, S)
        x_mlp = self.mlp(x_m)
        x_mlp_g = gate_mlp * x_mlp
        if x_mask is not None:
            x_mlp_g = t_mask_select(x_mask, x_mlp_g, gate_mlp_zero * x_mlp, T, S)
        return x + x_mlp_g


class STDiT2(nn.Module):
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
        self.no_temporal_pos_emb = no_temporal_pos_emb  # stored, unused (upstream: no temporal absolute PE)
        self.depth, self.mlp_ratio = depth, mlp_ratio
        self.patch_size = tuple(patch_size)
        self.input_size = input_size
        self.input_sq_size = input_sq_size
        self.model_max_length = model_max_length

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(SiLU(), Linear(hidden_size, 6 * hidden_size, bias=True))
        self.t_block_temp = nn.Sequential(SiLU(), Linear(hidden_size, 3 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(in_channels=caption_channels, hidden_size=hidden_size,
                                          uncond_prob=class_dropout_prob, act_layer=approx_gelu,
                                          token_num=model_max_length)
        self.rope = RotaryEmbedding(dim=hidden_size // num_heads)
        self.blocks = nn.ModuleList([
            STDiT2Block(hidden_size, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path,
                        enable_flash_attn=enable_flash_attn, enable_layernorm_kernel=enable_layernorm_kernel,
                        rope=self.rope.rotate_queries_or_keys, qk_norm=qk_norm, qk_norm_legacy=qk_norm_legacy)
            for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)
        # multi-resolution "data info" (PixArt-alpha): sizes and aspect ratio at C/3 each; frames and fps at C
        self.csize_embedder = SizeEmbedder(hidden_size // 3)
        self.ar_embedder = SizeEmbedder(hidden_size // 3)
        self.fl_embedder = SizeEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)

        if self.final_layer.linear.weight.device.type != "meta":  # a shape-only model (converter oracle) skips it
            self.initialize_weights()
            self.initialize_temporal()
        if freeze == "not_temporal":
            for name, param in self.named_parameters():
                if "attn_temp" not in name:
                    param.requires_grad = False
        elif freeze == "text":
            for name, param in self.named_parameters():
                if "cross_attn" in name:
                    param.requires_grad = False

    def initialize_temporal(self):
        for block in self.blocks:
            nn.init.constant_(block.attn_temp.proj.weight, 0)
            nn.init.constant_(block.attn_temp.proj.bias, 0)

    def initialize_weights(self):
        """Upstream init: xavier Linears, normal t/t_block/t_block_temp/y_proj, zeroed cross-attention
        projections and final linear (the size/fps embedders keep the xavier init)."""
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        nn.init.normal_(self.t_block_temp[1].weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.cross_attn.proj.weight, 0)
            nn.init.constant_(block.cross_attn.proj.bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release folder (config.json + model.safetensors) or any file the converter writes. Unlike
        upstream's ``STDiT2-XL/2(from_pretrained=<hub id>, **kwargs)``, ``overrides`` are applied."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "pt", **overrides)

    get_dynamic_size = STDiT3.get_dynamic_size
    encode_text = STDiT3.encode_text
    unpatchify = STDiT3.unpatchify

    def forward(self, x, timestep, y, mask=None, x_mask=None, num_frames=None, height=None, width=None, ar=None,
                fps=None):
        """x [B, C_in, T, H, W] latents; timestep [B]; y [B, 1, L, caption_channels]; mask [B, L] text mask
        (or [B/k, L] under CFG); x_mask [B, T] (True = generated frame); num_frames, height, width (pixels),
        ar, fps: [B] (or a divisor of B: repeated)."""
        B = x.shape[0]
        dtype = self.x_embedder.proj.weight.dtype
        x = x.to(dtype)
        timestep = timestep.to(dtype)
        y = y.to(dtype)

        # === data info: sizes + aspect ratio (spatial), frames + fps (temporal) ===
        hw = torch.cat([height[:, None], width[:, None]], dim=1)
        rs = (height[0].item() * width[0].item()) ** 0.5
        csize = self.csize_embedder(hw, B)
        ar = self.ar_embedder(ar.unsqueeze(1), B)
        data_info = torch.cat([csize, ar], dim=1)
        fl = self.fl_embedder(num_frames.unsqueeze(1), B)
        fl = fl + self.fps_embedder(fps.unsqueeze(1), B)

        # === positional embedding (on the fly, from sample 0's pixel size) ===
        _, _, Tx, Hx, Wx = x.shape
        T, H, W = self.get_dynamic_size(x)
        S = H * W
        scale = rs / self.input_sq_size
        base_size = round(S ** 0.5)
        pos_emb = self.pos_embed(x, H, W, scale=scale, base_size=base_size)

        x = self.x_embedder(x)                      # [B, T*S, C]
        x = x.reshape(B, T, S, -1) + pos_emb        # same pos_emb for every frame
        x = x.reshape(B, T * S, -1)

        # === adaLN inputs ===
        t = self.t_embedder(timestep, dtype=x.dtype)
        t_spc = t + data_info
        t_tmp = t + fl
        t_spc_mlp = self.t_block(t_spc)
        t_tmp_mlp = self.t_block_temp(t_tmp)
        t0_spc = t0_spc_mlp = t0_tmp_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype)
            t0_spc = t0 + data_info
            t0_tmp = t0 + fl
            t0_spc_mlp = self.t_block(t0_spc)
            t0_tmp_mlp = self.t_block_temp(t0_tmp)

        # === caption ===
        y, y_lens = self.encode_text(y, mask)

        for block in self.blocks:
            x = block(x, y, t_spc_mlp, t_tmp_mlp, y_lens, x_mask, t0_spc_mlp, t0_tmp_mlp, T, S)

        # upstream quirk kept: raw t for generated frames, t0 + data_info for x_mask False frames
        x = self.final_layer(x, t, x_mask, t0_spc, T, S)
        x = self.unpatchify(x, T, H, W, Tx, Hx, Wx)
        return x.to(torch.float32)
