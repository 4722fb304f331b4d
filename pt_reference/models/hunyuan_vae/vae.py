"""Encoder and decoder of the HunyuanVideo causal 3D VAE, ``main:opensora/models/hunyuan_vae/vae.py``.

Level i of ``block_out_channels`` (n levels) downsamples in space when ``i < log2(spatial_compression_ratio)``
and, for ``time_compression_ratio == 4``, in time when ``n - 1 - log2(4) <= i < n - 1``; with the release's
4 levels that is space at levels 0-2 and time at 1-2 (stride (t, 2, 2) causal convs). The decoder mirrors it with
``layers_per_block + 1`` resnets per level. The mid block's attention is single-head and causal by frame.
"""
from torch import nn

from opensora_dual.families.hunyuan_vae import level_factors

from pt_reference.layers import GroupNorm, SiLU
from pt_reference.models.hunyuan_vae.unet_causal_3d_blocks import (CausalConv3d, DownEncoderBlockCausal3D,
                                                                   UNetMidBlockCausal3D, UpDecoderBlockCausal3D,
                                                                   prepare_causal_attention_mask)
from pt_reference.models.vae.autoencoder_kl import DiagonalGaussianDistribution


# upstream's vae.py defines the posterior; it is the same as the 2D VAE's (re-exported here)
__all__ = ["EncoderCausal3D", "DecoderCausal3D", "DiagonalGaussianDistribution"]

class EncoderCausal3D(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(64,), layers_per_block=2,
                 norm_num_groups=32, act_fn="silu", double_z=True, mid_block_add_attention=True,
                 time_compression_ratio=4, spatial_compression_ratio=8, dropout=0.0):
        super().__init__()
        self.layers_per_block = layers_per_block
        self.conv_in = CausalConv3d(in_channels, block_out_channels[0], kernel_size=3, stride=1)
        self.down_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for i in range(len(block_out_channels)):
            input_channel, output_channel = output_channel, block_out_channels[i]
            ft, fs = level_factors(i, len(block_out_channels), time_compression_ratio, spatial_compression_ratio)
            self.down_blocks.append(DownEncoderBlockCausal3D(
                num_layers=layers_per_block, in_channels=input_channel, out_channels=output_channel,
                dropout=dropout, add_downsample=ft > 1 or fs > 1, downsample_stride=(ft, fs, fs), resnet_eps=1e-6,
                resnet_act_fn=act_fn, resnet_groups=norm_num_groups))
        self.mid_block = UNetMidBlockCausal3D(
            in_channels=block_out_channels[-1], resnet_eps=1e-6, resnet_act_fn=act_fn, output_scale_factor=1,
            attention_head_dim=block_out_channels[-1], resnet_groups=norm_num_groups,
            add_attention=mid_block_add_attention)
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = SiLU()
        self.conv_out = CausalConv3d(block_out_channels[-1], 2 * out_channels if double_z else out_channels,
                                     kernel_size=3)

    def prepare_attention_mask(self, hidden_states):
        b, _, t, h, w = hidden_states.shape
        return prepare_causal_attention_mask(t, h * w, hidden_states.device, batch_size=b)

    def forward(self, sample):
        sample = self.conv_in(sample)
        for down_block in self.down_blocks:
            sample = down_block(sample)
        mask = self.prepare_attention_mask(sample) if self.mid_block.add_attention else None
        sample = self.mid_block(sample, mask)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))


class DecoderCausal3D(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(64,), layers_per_block=2,
                 norm_num_groups=32, act_fn="silu", mid_block_add_attention=True, time_compression_ratio=4,
                 spatial_compression_ratio=8, dropout=0.0):
        super().__init__()
        self.layers_per_block = layers_per_block
        self.conv_in = CausalConv3d(in_channels, block_out_channels[-1], kernel_size=3, stride=1)
        self.mid_block = UNetMidBlockCausal3D(
            in_channels=block_out_channels[-1], resnet_eps=1e-6, resnet_act_fn=act_fn, output_scale_factor=1,
            attention_head_dim=block_out_channels[-1], resnet_groups=norm_num_groups,
            add_attention=mid_block_add_attention)
        self.up_blocks = nn.ModuleList([])
        reversed_channels = list(reversed(block_out_channels))
        output_channel = reversed_channels[0]
        for i in range(len(block_out_channels)):
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            ft, fs = level_factors(i, len(block_out_channels), time_compression_ratio, spatial_compression_ratio)
            self.up_blocks.append(UpDecoderBlockCausal3D(
                num_layers=layers_per_block + 1, in_channels=prev_output_channel, out_channels=output_channel,
                resolution_idx=None, dropout=dropout, add_upsample=ft > 1 or fs > 1,
                upsample_scale_factor=(ft, fs, fs), resnet_eps=1e-6, resnet_act_fn=act_fn,
                resnet_groups=norm_num_groups))
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.conv_act = SiLU()
        self.conv_out = CausalConv3d(block_out_channels[0], out_channels, kernel_size=3)

    def prepare_attention_mask(self, hidden_states):
        b, _, t, h, w = hidden_states.shape
        return prepare_causal_attention_mask(t, h * w, hidden_states.device, batch_size=b)

    def forward(self, sample):
        sample = self.conv_in(sample)
        mask = self.prepare_attention_mask(sample) if self.mid_block.add_attention else None
        sample = self.mid_block(sample, mask)
        sample = sample.to(next(iter(self.up_blocks.parameters())).dtype)   # upstream's upscale_dtype
        for up_block in self.up_blocks:
            sample = up_block(sample)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))
