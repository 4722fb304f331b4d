"""STDiT (Open-Sora 1.0), the reference. Mirrors ``v1.0.0:opensora/models/stdit/stdit.py``.

Constructor arguments are upstream's (``enable_flashattn`` keeps its v1.0 spelling); attribute names are the
release checkpoint's keys (``OpenSora-v1-*.pth``), so a release state dict loads with ``strict=True``, with or
without the ``pos_embed`` / ``pos_embed_temporal`` buffers (see below).

- ``pos_embed`` [1, S, C] and ``pos_embed_temporal`` [1, T, C] are persistent buffers as upstream: fixed sin-cos
  tables computed once from the config (``opensora_dual.posemb``: numpy, the same bits in both twins). A
  file that lacks them loads through ``converters.from_pretrained`` (the family marks them *derived*: the
  model's own tables are kept); ``load_state_dict(sd, strict=False)`` does the same by hand.
- The input size is fixed (``input_size`` = latent T, H, W); any other input size is a clear error. Where
  upstream crashes (an ``input_size`` not divisible by the patch), the grid is rounded up and the output
  cropped, like STDiT3 does for every size.
- ``dtype`` is accepted and recorded; inputs are cast to the weights' dtype (upstream casts to ``dtype``,
  which its scripts set to the weights' dtype).
- Sequence parallelism and ``drop_path > 0`` are not part of the reference (NotImplementedError).
"""
import math

import torch
from torch import nn

from opensora_dual.posemb import stdit_pos_tables
from pt_reference.layers.basic import LayerNorm, Linear, SiLU
from pt_reference.layers.blocks import (Attention, CaptionEmbedder, Mlp, MultiHeadCrossAttention, PatchEmbed3D,
                                        T2IFinalLayer, TimestepEmbedder, approx_gelu, t2i_modulate)
from pt_reference.models.stdit.stdit3 import STDiT3


class STDiTBlock(nn.Module):
    """Spatial attention, then temporal attention on the unmodulated residual (same ``gate_msa``), cross
    attention, MLP. ``tpe`` (block 0 only) is added to the temporal attention's input, not to the residual."""

    def __init__(self, hidden_size, num_heads, d_s=None, d_t=None, mlp_ratio=4.0, drop_path=0.0,
                 enable_flashattn=False, enable_layernorm_kernel=False, enable_sequence_parallelism=False):
        super().__init__()
        if drop_path > 0:
            raise NotImplementedError("drop_path > 0 is a training regulariser not implemented in the reference")
        if enable_sequence_parallelism:
            raise NotImplementedError("sequence parallelism is not part of the PyTorch reference")
        self.hidden_size = hidden_size
        self.enable_flashattn = enable_flashattn
        self.norm1 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, enable_flash_attn=enable_flashattn)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size).div_(hidden_size ** 0.5))
        self.d_s, self.d_t = d_s, d_t
        self.attn_temp = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, enable_flash_attn=enable_flashattn)

    def forward(self, x, y, t, mask=None, tpe=None):
        B, N, C = x.shape
        T, S = self.d_t, self.d_s
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(B, 6, -1)).chunk(6, dim=1)
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)

        # spatial branch: attention over the S tokens of each frame
        x_s = self.attn(x_m.reshape(B * T, S, C)).reshape(B, T * S, C)
        x = x + gate_msa * x_s

        # temporal branch: on the residual x itself (no norm, no modulation), same gate_msa (upstream)
        x_t = x.reshape(B, T, S, C).transpose(1, 2).reshape(B * S, T, C)
        if tpe is not None:
            x_t = x_t + tpe
        x_t = self.attn_temp(x_t)
        x_t = x_t.reshape(B, S, T, C).transpose(1, 2).reshape(B, T * S, C)
        x = x + gate_msa * x_t

        # cross attention (no gate, no norm)
        x = x + self.cross_attn(x, y, mask)

        # MLP
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(x_m)


class STDiT(nn.Module):
    def __init__(self, input_size=(1, 32, 32), in_channels=4, patch_size=(1, 2, 2), hidden_size=1152, depth=28,
                 num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True, drop_path=0.0,
                 no_temporal_pos_emb=False, caption_channels=4096, model_max_length=120, dtype=None,
                 space_scale=1.0, time_scale=1.0, freeze=None, enable_flashattn=False,
                 enable_layernorm_kernel=False, enable_sequence_parallelism=False):
        super().__init__()
        if enable_sequence_parallelism:
            raise NotImplementedError("sequence parallelism is not part of the PyTorch reference")
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
        # upstream stores the switch but its forward always adds the temporal table (kept: same numbers)
        self.no_temporal_pos_emb = no_temporal_pos_emb
        self.space_scale, self.time_scale = space_scale, time_scale
        self.model_max_length = model_max_length
        self.num_temporal, h, w = (-(-n // p) for n, p in zip(self.input_size, self.patch_size))
        self.num_spatial = h * w
        self.num_patches = self.num_temporal * self.num_spatial

        pos, pos_t = stdit_pos_tables(hidden_size, (self.num_temporal, h, w), space_scale, time_scale)
        # tables computed on the CPU even under a meta-device context (converter shape oracles)
        self.register_buffer("pos_embed", torch.from_numpy(pos).to(torch.get_default_device()))
        self.register_buffer("pos_embed_temporal", torch.from_numpy(pos_t).to(torch.get_default_device()))

        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(SiLU(), Linear(hidden_size, 6 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(in_channels=caption_channels, hidden_size=hidden_size,
                                          uncond_prob=class_dropout_prob, act_layer=approx_gelu,
                                          token_num=model_max_length)
        self.blocks = nn.ModuleList([
            STDiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path,
                       enable_flashattn=enable_flashattn, enable_layernorm_kernel=enable_layernorm_kernel,
                       d_t=self.num_temporal, d_s=self.num_spatial)
            for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels,
                                          d_t=self.num_temporal, d_s=self.num_spatial)
        if self.final_layer.linear.weight.device.type != "meta":  # a shape-only model (converter oracle) skips it
            self.initialize_weights()
            self.initialize_temporal()
        if freeze == "not_temporal":
            for name, param in self.named_parameters():
                param.requires_grad = "attn_temp" in name
        elif freeze == "text":
            for name, param in self.named_parameters():
                if "cross_attn" in name:
                    param.requires_grad = False

    def initialize_temporal(self):
        for block in self.blocks:
            nn.init.constant_(block.attn_temp.proj.weight, 0)
            nn.init.constant_(block.attn_temp.proj.bias, 0)

    def initialize_weights(self):
        """Upstream init: xavier Linears, normal t/caption MLPs, zeroed cross-attention and output projections."""
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
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.cross_attn.proj.weight, 0)
            nn.init.constant_(block.cross_attn.proj.bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A v1.0 release ``.pth`` (pass ``model="STDiT-XL/2"`` and ``input_size``/``space_scale``/...), or any
        file or folder the converter writes."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "pt", **overrides)

    # the caption packing, size rounding and unpatchify are STDiT3's (identical upstream)
    encode_text = STDiT3.encode_text
    get_dynamic_size = STDiT3.get_dynamic_size
    unpatchify = STDiT3.unpatchify

    def set_input_size(self, input_size):
        """Rebuild the model for another latent size (T, H, W), as upstream builds it from the config's
        ``image_size`` / ``num_frames``: new ``pos_embed`` / ``pos_embed_temporal`` tables (the release's are
        derived from the size), the blocks' and the final layer's T and S. The weights are untouched."""
        input_size = tuple(int(v) for v in input_size)
        if input_size == self.input_size:
            return self
        self.input_size = input_size
        self.num_temporal, h, w = (-(-n // p) for n, p in zip(input_size, self.patch_size))
        self.num_spatial = h * w
        self.num_patches = self.num_temporal * self.num_spatial
        pos, pos_t = stdit_pos_tables(self.hidden_size, (self.num_temporal, h, w), self.space_scale, self.time_scale)
        device = self.pos_embed.device
        self.pos_embed = torch.from_numpy(pos).to(device)            # still the registered (persistent) buffers
        self.pos_embed_temporal = torch.from_numpy(pos_t).to(device)
        for m in (*self.blocks, self.final_layer):
            m.d_t, m.d_s = self.num_temporal, self.num_spatial
        return self

    def check_input(self, x):
        T, H, W = x.shape[2:]
        if (T, H, W) != self.input_size:
            raise ValueError(f"STDiT (Open-Sora 1.0) has a fixed input size: latent {tuple(x.shape[2:])} given, "
                             f"the model was built for input_size={self.input_size} (its position tables are "
                             f"fixed buffers); build the model with the latent size you sample")

    def forward(self, x, timestep, y, mask=None):
        """x [B, C_in, T, H, W] latents (T, H, W = input_size); timestep [B]; y [B, 1, L, caption_channels];
        mask [B, L] text mask (its batch may divide y's: classifier-free guidance). Returns fp32
        [B, out_channels, T, H, W]."""
        self.check_input(x)
        dtype = self.x_embedder.proj.weight.dtype
        B = x.size(0)
        x = x.to(dtype)
        timestep = timestep.to(dtype)
        y = y.to(dtype)
        _, _, Tx, Hx, Wx = x.size()
        T, H, W = self.get_dynamic_size(x)
        S = H * W

        x = self.x_embedder(x)                                   # [B, T*S, C]
        x = (x.reshape(B, T, S, -1) + self.pos_embed).reshape(B, T * S, -1)
        t = self.t_embedder(timestep, dtype=x.dtype)
        t_mlp = self.t_block(t)
        y, y_lens = self.encode_text(y, mask)

        for i, block in enumerate(self.blocks):
            x = block(x, y, t_mlp, y_lens, self.pos_embed_temporal if i == 0 else None)

        x = self.final_layer(x, t)
        x = self.unpatchify(x, T, H, W, Tx, Hx, Wx)
        return x.to(torch.float32)
