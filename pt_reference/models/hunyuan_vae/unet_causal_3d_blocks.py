"""Building blocks of the HunyuanVideo causal 3D VAE, ``main:opensora/models/hunyuan_vae/unet_causal_3d_blocks.py``
(Open-Sora 2.0; upstream modified them from diffusers 0.29.2 and HunyuanVideo).

- ``CausalConv3d``: replicate-pad ``k-1`` frames in front and ``k//2`` pixels on each spatial side, then a Conv3d
  (upstream's ``ChannelChunkConv3d`` is an ``nn.Conv3d`` that splits channels only above 2**31 elements: same
  keys, same numbers; not reproduced). Keys: ``<name>.conv.weight`` -- hence ``downsamplers.0.conv.conv.weight``.
- ``DownsampleCausal3D``: a stride-(t, 2, 2) causal conv. ``UpsampleCausal3D``: nearest upsampling of the first
  frame in space only and of the other frames in T, H and W (T -> 2T - 1), then a causal conv.
- ``Attention``: diffusers' ``Attention`` as the mid block builds it (``_from_deprecated_attn_block``): GroupNorm
  over channels, one head of width C, q/k/v/out Linears with bias, residual, fp32 softmax; the input is the
  flattened video ``[B, T*H*W, C]`` and the mask is causal by frame.
"""
import torch
import torch.nn.functional as F
from torch import nn

from pt_reference.layers import Conv3d, GroupNorm, Identity, Linear, SiLU, scaled_dot_product_attention


def prepare_causal_attention_mask(n_frame, n_hw, device=None, batch_size=None):
    """Token i (frame i // n_hw) may attend to every token of frames <= its own.

    Upstream builds a float mask (0 / -inf) row by row; this is the same pattern as a boolean mask (True =
    attend), the convention of ``scaled_dot_product_attention`` here. No row is fully masked, so both give the
    same softmax. Shape [L, L], or [B, L, L] with ``batch_size``."""
    frame = torch.arange(n_frame * n_hw, device=device) // n_hw
    mask = frame[None, :] <= frame[:, None]
    if batch_size is not None:
        mask = mask.unsqueeze(0).expand(batch_size, -1, -1)
    return mask


class CausalConv3d(nn.Module):
    """Causal in time: ``F.pad(x, (k//2, k//2, k//2, k//2, k-1, 0), mode=pad_mode)`` then the conv."""

    def __init__(self, chan_in, chan_out, kernel_size, stride=1, dilation=1, pad_mode="replicate", bias=True):
        super().__init__()
        if not isinstance(kernel_size, int):
            raise ValueError("CausalConv3d takes an int kernel_size (upstream's padding formula assumes it)")
        self.pad_mode = pad_mode
        k = kernel_size
        self.time_causal_padding = (k // 2, k // 2, k // 2, k // 2, k - 1, 0)  # W, H, T (F.pad order)
        self.conv = Conv3d(chan_in, chan_out, kernel_size, stride=stride, dilation=dilation, bias=bias)

    def forward(self, x):
        return self.conv(F.pad(x, self.time_causal_padding, mode=self.pad_mode))


class UpsampleCausal3D(nn.Module):
    def __init__(self, channels, out_channels=None, kernel_size=3, bias=True, upsample_factor=(2, 2, 2)):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.upsample_factor = tuple(upsample_factor)
        self.conv = CausalConv3d(self.channels, self.out_channels, kernel_size=kernel_size, bias=bias)

    def forward(self, x):
        t = x.shape[2]
        first, other = x.split((1, t - 1), dim=2)
        first = F.interpolate(first.squeeze(2), scale_factor=self.upsample_factor[1:], mode="nearest").unsqueeze(2)
        if t > 1:
            other = F.interpolate(other, scale_factor=self.upsample_factor, mode="nearest")
            x = torch.cat((first, other), dim=2)
        else:
            x = first
        return self.conv(x)


class DownsampleCausal3D(nn.Module):
    def __init__(self, channels, kernel_size=3, bias=True, stride=2):
        super().__init__()
        self.channels = self.out_channels = channels
        self.conv = CausalConv3d(channels, channels, kernel_size=kernel_size, stride=stride, bias=bias)

    def forward(self, x):
        return self.conv(x)


class ResnetBlockCausal3D(nn.Module):
    """GN-SiLU-conv-GN-SiLU-(dropout)-conv + (1x1x1 causal conv) shortcut, divided by ``output_scale_factor``."""

    def __init__(self, *, in_channels, out_channels=None, dropout=0.0, groups=32, groups_out=None, pre_norm=True,
                 eps=1e-6, non_linearity="swish", output_scale_factor=1.0, use_in_shortcut=None,
                 conv_shortcut_bias=True, conv_3d_out_channels=None):
        super().__init__()
        if non_linearity not in ("swish", "silu"):
            raise ValueError(f"only SiLU is used by the released VAE, got {non_linearity!r}")
        self.pre_norm = True   # upstream forces it
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.output_scale_factor = output_scale_factor
        groups_out = groups if groups_out is None else groups_out
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel_size=3, stride=1)
        self.norm2 = GroupNorm(groups_out, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        conv_3d_out_channels = conv_3d_out_channels or out_channels
        self.conv2 = CausalConv3d(out_channels, conv_3d_out_channels, kernel_size=3, stride=1)
        self.nonlinearity = SiLU()
        self.use_in_shortcut = in_channels != conv_3d_out_channels if use_in_shortcut is None else use_in_shortcut
        self.conv_shortcut = None
        if self.use_in_shortcut:
            self.conv_shortcut = CausalConv3d(in_channels, conv_3d_out_channels, kernel_size=1, stride=1,
                                              bias=conv_shortcut_bias)

    def forward(self, input_tensor):
        h = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + h) / self.output_scale_factor


class Attention(nn.Module):
    """diffusers ``Attention(C, heads=C // head_dim, dim_head=head_dim, norm_num_groups, residual_connection=True,
    bias=True, upcast_softmax=True)`` on ``[B, L, C]``; ``attention_mask`` is boolean (True = attend)."""

    def __init__(self, query_dim, heads=1, dim_head=None, eps=1e-6, norm_num_groups=32, rescale_output_factor=1.0,
                 bias=True, attn_backend="math"):
        super().__init__()
        dim_head = query_dim if dim_head is None else dim_head
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.rescale_output_factor = rescale_output_factor
        self.attn_backend = attn_backend
        self.group_norm = GroupNorm(norm_num_groups, query_dim, eps=eps, affine=True)
        self.to_q = Linear(query_dim, inner, bias=bias)
        self.to_k = Linear(query_dim, inner, bias=bias)
        self.to_v = Linear(query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([Linear(inner, query_dim, bias=True), Identity()])  # [1] = Dropout(0): no keys

    def forward(self, hidden_states, attention_mask=None):
        residual = hidden_states
        b, n, _ = hidden_states.shape
        h = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
                   for t in (self.to_q(h), self.to_k(h), self.to_v(h)))
        mask = None if attention_mask is None else attention_mask.reshape(b, 1, n, n) \
            if attention_mask.dim() == 3 else attention_mask
        o = scaled_dot_product_attention(q, k, v, mask=mask, backend=self.attn_backend)
        o = o.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        o = self.to_out[0](o)
        return (o + residual) / self.rescale_output_factor


class UNetMidBlockCausal3D(nn.Module):
    """resnet, then (attention, resnet) x num_layers; attention over all T*H*W tokens with the causal mask."""

    def __init__(self, in_channels, dropout=0.0, num_layers=1, resnet_eps=1e-6, resnet_act_fn="swish",
                 resnet_groups=32, attn_groups=None, resnet_pre_norm=True, add_attention=True, attention_head_dim=1,
                 output_scale_factor=1.0):
        super().__init__()
        resnet_groups = resnet_groups if resnet_groups is not None else min(in_channels // 4, 32)
        self.add_attention = add_attention
        attn_groups = resnet_groups if attn_groups is None else attn_groups
        attention_head_dim = in_channels if attention_head_dim is None else attention_head_dim
        res = dict(in_channels=in_channels, out_channels=in_channels, eps=resnet_eps, groups=resnet_groups,
                   dropout=dropout, non_linearity=resnet_act_fn, output_scale_factor=output_scale_factor,
                   pre_norm=resnet_pre_norm)
        resnets, attentions = [ResnetBlockCausal3D(**res)], []
        for _ in range(num_layers):
            attentions.append(Attention(in_channels, heads=in_channels // attention_head_dim,
                                        dim_head=attention_head_dim, eps=resnet_eps, norm_num_groups=attn_groups,
                                        rescale_output_factor=output_scale_factor) if add_attention else None)
            resnets.append(ResnetBlockCausal3D(**res))
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList(resnets)

    def forward(self, hidden_states, attention_mask=None):
        hidden_states = self.resnets[0](hidden_states)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            if attn is not None:
                b, c, t, h, w = hidden_states.shape
                x = hidden_states.reshape(b, c, t * h * w).transpose(1, 2)          # b c f h w -> b (f h w) c
                x = attn(x, attention_mask=attention_mask)
                hidden_states = x.transpose(1, 2).reshape(b, c, t, h, w)
            hidden_states = resnet(hidden_states)
        return hidden_states


class DownEncoderBlockCausal3D(nn.Module):
    def __init__(self, in_channels, out_channels, dropout=0.0, num_layers=1, resnet_eps=1e-6, resnet_act_fn="swish",
                 resnet_groups=32, resnet_pre_norm=True, output_scale_factor=1.0, add_downsample=True,
                 downsample_stride=2):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlockCausal3D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels,
                                eps=resnet_eps, groups=resnet_groups, dropout=dropout, non_linearity=resnet_act_fn,
                                output_scale_factor=output_scale_factor, pre_norm=resnet_pre_norm)
            for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([DownsampleCausal3D(out_channels, stride=downsample_stride)]) \
            if add_downsample else None

    def forward(self, hidden_states):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
        return hidden_states


class UpDecoderBlockCausal3D(nn.Module):
    def __init__(self, in_channels, out_channels, resolution_idx=None, dropout=0.0, num_layers=1, resnet_eps=1e-6,
                 resnet_act_fn="swish", resnet_groups=32, resnet_pre_norm=True, output_scale_factor=1.0,
                 add_upsample=True, upsample_scale_factor=(2, 2, 2)):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlockCausal3D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels,
                                eps=resnet_eps, groups=resnet_groups, dropout=dropout, non_linearity=resnet_act_fn,
                                output_scale_factor=output_scale_factor, pre_norm=resnet_pre_norm)
            for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([UpsampleCausal3D(out_channels, out_channels=out_channels,
                                                          upsample_factor=upsample_scale_factor)]) \
            if add_upsample else None
        self.resolution_idx = resolution_idx

    def forward(self, hidden_states):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states)
        return hidden_states
