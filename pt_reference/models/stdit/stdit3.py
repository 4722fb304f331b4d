"""STDiT3 (Open-Sora 1.2), the reference. Mirrors ``v1.2.0:opensora/models/stdit/stdit3.py``.

Constructor arguments are the fields of upstream's ``STDiT3Config``; attribute names are the release
checkpoint's keys (``hpcai-tech/OpenSora-STDiT-v3``), so its ``model.safetensors`` loads with strict=True.
Sequence parallelism (``enable_sequence_parallelism``) is not part of the reference.
"""
import math

import torch
from torch import nn

from pt_reference.layers.basic import Linear, SiLU
from pt_reference.layers.blocks import (Attention, CaptionEmbedder, Mlp, MultiHeadCrossAttention, PatchEmbed3D,
                                        PositionEmbedding2D, RotaryEmbedding, SizeEmbedder, T2IFinalLayer,
                                        TimestepEmbedder, approx_gelu, t2i_modulate, t_mask_select)
from pt_reference.layers.basic import LayerNorm


class STDiT3Block(nn.Module):
    """One spatial (attention over the S tokens of a frame) or temporal (over the T frames of a location) block."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, drop_path=0.0, rope=None, qk_norm=False,
                 temporal=False, enable_flash_attn=False, enable_layernorm_kernel=False,
                 enable_sequence_parallelism=False):
        super().__init__()
        if drop_path > 0:
            raise NotImplementedError("drop_path > 0 is a training regulariser not implemented in the reference")
        self.temporal = temporal
        self.hidden_size = hidden_size
        self.norm1 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm, rope=rope,
                              enable_flash_attn=enable_flash_attn)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size).div_(hidden_size ** 0.5))

    def forward(self, x, y, t, mask=None, x_mask=None, t0=None, T=None, S=None):
        B, N, C = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(B, 6, -1)).chunk(6, dim=1)
        if x_mask is not None:
            (shift_msa_zero, scale_msa_zero, gate_msa_zero, shift_mlp_zero, scale_mlp_zero, gate_mlp_zero) = (
                self.scale_shift_table[None] + t0.reshape(B, 6, -1)).chunk(6, dim=1)

        # modulate (attention)
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        if x_mask is not None:
            x_m_zero = t2i_modulate(self.norm1(x), shift_msa_zero, scale_msa_zero)
            x_m = t_mask_select(x_mask, x_m, x_m_zero, T, S)

        # attention over frames (temporal) or over each frame's tokens (spatial)
        if self.temporal:
            x_m = x_m.reshape(B, T, S, C).transpose(1, 2).reshape(B * S, T, C)     # B (T S) C -> (B S) T C
            x_m = self.attn(x_m)
            x_m = x_m.reshape(B, S, T, C).transpose(1, 2).reshape(B, T * S, C)
        else:
            x_m = x_m.reshape(B * T, S, C)                                          # B (T S) C -> (B T) S C
            x_m = self.attn(x_m)
            x_m = x_m.reshape(B, T * S, C)

        # gate and residual
        x_m_s = gate_msa * x_m
        if x_mask is not None:
            x_m_s = t_mask_select(x_mask, x_m_s, gate_msa_zero * x_m, T, S)
        x = x + x_m_s

        # cross attention (no gate, no norm)
        x = x + self.cross_attn(x, y, mask)

        # modulate (MLP)
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        if x_mask is not None:
            x_m_zero = t2i_modulate(self.norm2(x), shift_mlp_zero, scale_mlp_zero)
            x_m = t_mask_select(x_mask, x_m, x_m_zero, T, S)
        x_m = self.mlp(x_m)
        x_m_s = gate_mlp * x_m
        if x_mask is not None:
            x_m_s = t_mask_select(x_mask, x_m_s, gate_mlp_zero * x_m, T, S)
        return x + x_m_s


class STDiT3(nn.Module):
    def __init__(self, input_size=(None, None, None), input_sq_size=512, in_channels=4, patch_size=(1, 2, 2),
                 hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, pred_sigma=True,
                 drop_path=0.0, caption_channels=4096, model_max_length=300, qk_norm=True, enable_flash_attn=False,
                 enable_layernorm_kernel=False, enable_sequence_parallelism=False, only_train_temporal=False,
                 freeze_y_embedder=False, skip_y_embedder=False):
        super().__init__()
        if enable_sequence_parallelism:
            raise NotImplementedError("sequence parallelism is not part of the PyTorch reference")
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

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.rope = RotaryEmbedding(dim=hidden_size // num_heads)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)
        self.t_block = nn.Sequential(SiLU(), Linear(hidden_size, 6 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(in_channels=caption_channels, hidden_size=hidden_size,
                                          uncond_prob=class_dropout_prob, act_layer=approx_gelu,
                                          token_num=model_max_length)
        block_kw = dict(hidden_size=hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                        enable_flash_attn=enable_flash_attn, enable_layernorm_kernel=enable_layernorm_kernel)
        self.spatial_blocks = nn.ModuleList([STDiT3Block(**block_kw) for _ in range(depth)])
        self.temporal_blocks = nn.ModuleList([STDiT3Block(**block_kw, temporal=True,
                                                          rope=self.rope.rotate_queries_or_keys)
                                              for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)
        if self.final_layer.linear.weight.device.type != "meta":  # a shape-only model (converter oracle) skips it
            self.initialize_weights()
        if only_train_temporal:
            for name, param in self.named_parameters():
                param.requires_grad = "temporal_blocks" in name
        if freeze_y_embedder:
            for param in self.y_embedder.parameters():
                param.requires_grad = False

    def initialize_weights(self):
        """Upstream init: xavier Linears, normal t/fps MLPs, zeroed temporal projections and fps output."""
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        for mlp in (self.t_embedder.mlp, self.fps_embedder.mlp):
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        nn.init.constant_(self.fps_embedder.mlp[2].weight, 0)
        nn.init.constant_(self.fps_embedder.mlp[2].bias, 0)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)
        for block in self.temporal_blocks:
            nn.init.constant_(block.attn.proj.weight, 0)
            nn.init.constant_(block.cross_attn.proj.weight, 0)
            nn.init.constant_(block.mlp.fc2.weight, 0)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """An upstream release folder (config.json + model.safetensors) or any file the converter writes."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "pt", **overrides)

    def get_dynamic_size(self, x):
        _, _, T, H, W = x.size()
        pt, ph, pw = self.patch_size
        T = (T + pt - 1) // pt
        H = (H + ph - 1) // ph
        W = (W + pw - 1) // pw
        return T, H, W

    def encode_text(self, y, mask=None):
        """Caption features -> packed valid tokens [1, sum(y_lens), C] and y_lens (upstream semantics)."""
        y = self.y_embedder(y, self.training)  # [B, 1, L, C]
        if mask is not None:
            if mask.shape[0] != y.shape[0]:  # CFG: the cond mask is reused for the null half
                mask = mask.repeat(y.shape[0] // mask.shape[0], 1)
            mask = mask.squeeze(1).squeeze(1)
            y = y.squeeze(1).masked_select(mask.unsqueeze(-1) != 0).view(1, -1, self.hidden_size)
            y_lens = mask.sum(dim=1).tolist()
        else:
            y_lens = [y.shape[2]] * y.shape[0]
            y = y.squeeze(1).view(1, -1, self.hidden_size)
        return y, y_lens

    def forward(self, x, timestep, y, mask=None, x_mask=None, fps=None, height=None, width=None, **kwargs):
        """x [B, C_in, T, H, W] latents; timestep [B] in [0, 1000]; y [B, 1, L, caption_channels];
        mask [B, L] text mask; x_mask [B, T] (True = generated frame); fps, height, width [B] (pixels)."""
        dtype = self.x_embedder.proj.weight.dtype
        B = x.size(0)
        x = x.to(dtype)
        timestep = timestep.to(dtype)
        y = y.to(dtype)

        # === positional embedding ===
        _, _, Tx, Hx, Wx = x.size()
        T, H, W = self.get_dynamic_size(x)
        S = H * W
        base_size = round(S ** 0.5)
        resolution_sq = (height[0].item() * width[0].item()) ** 0.5
        scale = resolution_sq / self.input_sq_size
        pos_emb = self.pos_embed(x, H, W, scale=scale, base_size=base_size)

        # === timestep (+ fps) embedding ===
        t = self.t_embedder(timestep, dtype=x.dtype)
        fps = self.fps_embedder(fps.unsqueeze(1), B)
        t = t + fps
        t_mlp = self.t_block(t)
        t0 = t0_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype) + fps
            t0_mlp = self.t_block(t0)

        # === caption embedding ===
        y, y_lens = self.encode_text(y, mask)

        # === patch embedding ===
        x = self.x_embedder(x)                      # [B, T*S, C]
        x = x.reshape(B, T, S, -1) + pos_emb        # same pos_emb for every frame
        x = x.reshape(B, T * S, -1)

        # === blocks: strict spatial/temporal alternation ===
        for spatial_block, temporal_block in zip(self.spatial_blocks, self.temporal_blocks):
            x = spatial_block(x, y, t_mlp, y_lens, x_mask, t0_mlp, T, S)
            x = temporal_block(x, y, t_mlp, y_lens, x_mask, t0_mlp, T, S)

        # === final layer ===
        x = self.final_layer(x, t, x_mask, t0, T, S)
        x = self.unpatchify(x, T, H, W, Tx, Hx, Wx)
        return x.to(torch.float32)

    def unpatchify(self, x, N_t, N_h, N_w, R_t, R_h, R_w):
        """B (N_t N_h N_w) (T_p H_p W_p C_out) -> B C_out (N_t T_p) (N_h H_p) (N_w W_p), then crop the padding."""
        T_p, H_p, W_p = self.patch_size
        B = x.shape[0]
        x = x.reshape(B, N_t, N_h, N_w, T_p, H_p, W_p, self.out_channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(B, self.out_channels, N_t * T_p, N_h * H_p, N_w * W_p)
        return x[:, :, :R_t, :R_h, :R_w]
