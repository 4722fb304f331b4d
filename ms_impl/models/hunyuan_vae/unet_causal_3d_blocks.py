"""MindSpore twin of ``pt_reference/models/hunyuan_vae/unet_causal_3d_blocks.py`` (HunyuanVideo causal 3D VAE blocks).

Same classes, constructor arguments and attribute paths. CPU kernels: replicate padding with ``ops.pad`` (mint's
replicate pad is unregistered / segfaults in graph mode on CPU), convs from the layer kit (the device kernel;
``set_conv_impl`` switches to a matmul form), nearest upsampling by an integer factor as broadcast + reshape
(exactly what nearest interpolation with an integer scale computes), the causal mask from ``ops.tril``.

Port-only memory switch: ``Attention.query_chunk`` (None = off) computes the mid-block attention for that many
query tokens at a time: every softmax row is independent, so only the peak memory of the [L, L] score matrix
changes (the full-size mid block at 256 px x 129 frames has L = 33 * 32 * 32 = 33,792 tokens per tile).
"""
import mindspore as ms
from mindspore import mint, nn, ops

from ms_impl.layers import Conv3d, GroupNorm, Identity, Linear, SiLU, scaled_dot_product_attention


def prepare_causal_attention_mask(n_frame, n_hw, batch_size=None):
    """Boolean [L, L] (or [B, L, L]) mask, True = attend: token i sees every token of frames <= frame(i)."""
    tri = ops.tril(ops.ones((n_frame, n_frame), ms.float32))
    n = n_frame * n_hw
    mask = tri.reshape(n_frame, 1, n_frame, 1).broadcast_to((n_frame, n_hw, n_frame, n_hw)).reshape(n, n) > 0.5
    if batch_size is not None:
        mask = mask.reshape(1, n, n).broadcast_to((batch_size, n, n))
    return mask


def nearest_upsample(x, factors):
    """Nearest interpolation of the trailing ``len(factors)`` axes by integer factors (repeat each element)."""
    shape = x.shape
    lead, dims = shape[:x.ndim - len(factors)], shape[x.ndim - len(factors):]
    expanded, target, out = lead, lead, lead
    for d, f in zip(dims, factors):
        expanded += (d, 1)
        target += (d, f)
        out += (d * f,)
    return x.reshape(expanded).broadcast_to(target).reshape(out)


class CausalConv3d(nn.Cell):
    def __init__(self, chan_in, chan_out, kernel_size, stride=1, dilation=1, pad_mode="replicate", bias=True):
        super().__init__()
        if not isinstance(kernel_size, int):
            raise ValueError("CausalConv3d takes an int kernel_size (upstream's padding formula assumes it)")
        if pad_mode != "replicate":
            raise ValueError("only pad_mode='replicate' is used by the released VAE")
        self.pad_mode = pad_mode
        k = kernel_size
        self.time_causal_padding = (k // 2, k // 2, k // 2, k // 2, k - 1, 0)
        self.needs_pad = k > 1
        self.conv = Conv3d(chan_in, chan_out, kernel_size, stride=stride, dilation=dilation, bias=bias)

    def construct(self, x):
        dtype = x.dtype   # a Conv3d-only compute dtype (set_conv3d_dtype) must not change the activations' dtype
        if self.needs_pad:
            x = ops.pad(x, self.time_causal_padding, mode="replicate")
        return self.conv(x).astype(dtype)


class UpsampleCausal3D(nn.Cell):
    def __init__(self, channels, out_channels=None, kernel_size=3, bias=True, upsample_factor=(2, 2, 2)):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.upsample_factor = tuple(upsample_factor)
        self.conv = CausalConv3d(self.channels, self.out_channels, kernel_size=kernel_size, bias=bias)

    def construct(self, x):
        t = x.shape[2]
        first = nearest_upsample(x[:, :, 0:1], (1,) + self.upsample_factor[1:])
        if t > 1:
            other = nearest_upsample(x[:, :, 1:], self.upsample_factor)
            x = mint.cat((first, other), dim=2)
        else:
            x = first
        return self.conv(x)


class DownsampleCausal3D(nn.Cell):
    def __init__(self, channels, kernel_size=3, bias=True, stride=2):
        super().__init__()
        self.channels = self.out_channels = channels
        self.conv = CausalConv3d(channels, channels, kernel_size=kernel_size, stride=stride, bias=bias)

    def construct(self, x):
        return self.conv(x)


class ResnetBlockCausal3D(nn.Cell):
    def __init__(self, *, in_channels, out_channels=None, dropout=0.0, groups=32, groups_out=None, pre_norm=True,
                 eps=1e-6, non_linearity="swish", output_scale_factor=1.0, use_in_shortcut=None,
                 conv_shortcut_bias=True, conv_3d_out_channels=None):
        super().__init__()
        if non_linearity not in ("swish", "silu"):
            raise ValueError(f"only SiLU is used by the released VAE, got {non_linearity!r}")
        if dropout:
            raise ValueError("dropout > 0 is not supported (inference port; the release uses 0)")
        self.pre_norm = True
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.output_scale_factor = output_scale_factor
        groups_out = groups if groups_out is None else groups_out
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel_size=3, stride=1)
        self.norm2 = GroupNorm(groups_out, out_channels, eps=eps, affine=True)
        self.dropout = Identity()
        conv_3d_out_channels = conv_3d_out_channels or out_channels
        self.conv2 = CausalConv3d(out_channels, conv_3d_out_channels, kernel_size=3, stride=1)
        self.nonlinearity = SiLU()
        self.use_in_shortcut = in_channels != conv_3d_out_channels if use_in_shortcut is None else use_in_shortcut
        self.conv_shortcut = None
        if self.use_in_shortcut:
            self.conv_shortcut = CausalConv3d(in_channels, conv_3d_out_channels, kernel_size=1, stride=1,
                                              bias=conv_shortcut_bias)

    def construct(self, input_tensor):
        h = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        out = input_tensor.astype(h.dtype) + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Attention(nn.Cell):
    def __init__(self, query_dim, heads=1, dim_head=None, eps=1e-6, norm_num_groups=32, rescale_output_factor=1.0,
                 bias=True, attn_backend="math"):
        super().__init__()
        dim_head = query_dim if dim_head is None else dim_head
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.rescale_output_factor = rescale_output_factor
        self.attn_backend = attn_backend
        self.query_chunk = None
        self.group_norm = GroupNorm(norm_num_groups, query_dim, eps=eps, affine=True)
        self.to_q = Linear(query_dim, inner, bias=bias)
        self.to_k = Linear(query_dim, inner, bias=bias)
        self.to_v = Linear(query_dim, inner, bias=bias)
        self.to_out = nn.CellList([Linear(inner, query_dim, bias=True), Identity()])

    def _heads(self, t, b, n):
        return mint.transpose(t.reshape(b, n, self.heads, self.dim_head), 1, 2)

    def construct(self, hidden_states, attention_mask=None):
        residual = hidden_states
        b, n, _ = hidden_states.shape
        h = mint.transpose(self.group_norm(mint.transpose(hidden_states, 1, 2)), 1, 2)
        q, k, v = self._heads(self.to_q(h), b, n), self._heads(self.to_k(h), b, n), self._heads(self.to_v(h), b, n)
        mask = attention_mask
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(b, 1, n, n)
        if self.query_chunk is None or self.query_chunk >= n:
            o = scaled_dot_product_attention(q, k, v, mask=mask, backend=self.attn_backend)
        else:
            outs = ()
            for s in range(0, n, self.query_chunk):
                e = min(s + self.query_chunk, n)
                m = None if mask is None else mask[:, :, s:e]
                outs += (scaled_dot_product_attention(q[:, :, s:e], k, v, mask=m, backend=self.attn_backend),)
            o = mint.cat(outs, dim=2)
        o = mint.transpose(o, 1, 2).reshape(b, n, self.heads * self.dim_head)
        o = self.to_out[0](o)
        o = o + residual.astype(o.dtype)
        if self.rescale_output_factor != 1.0:
            o = o / self.rescale_output_factor
        return o


class UNetMidBlockCausal3D(nn.Cell):
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
                                        rescale_output_factor=output_scale_factor) if add_attention else Identity())
            resnets.append(ResnetBlockCausal3D(**res))
        self.attentions = nn.CellList(attentions)
        self.resnets = nn.CellList(resnets)
        self.num_layers = num_layers

    def construct(self, hidden_states, attention_mask=None):
        hidden_states = self.resnets[0](hidden_states)
        for i in range(self.num_layers):
            if self.add_attention:
                b, c, t, h, w = hidden_states.shape
                x = mint.transpose(hidden_states.reshape(b, c, t * h * w), 1, 2)
                x = self.attentions[i](x, attention_mask)
                hidden_states = mint.transpose(x, 1, 2).reshape(b, c, t, h, w)
            hidden_states = self.resnets[i + 1](hidden_states)
        return hidden_states


class DownEncoderBlockCausal3D(nn.Cell):
    def __init__(self, in_channels, out_channels, dropout=0.0, num_layers=1, resnet_eps=1e-6, resnet_act_fn="swish",
                 resnet_groups=32, resnet_pre_norm=True, output_scale_factor=1.0, add_downsample=True,
                 downsample_stride=2):
        super().__init__()
        self.resnets = nn.CellList([
            ResnetBlockCausal3D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels,
                                eps=resnet_eps, groups=resnet_groups, dropout=dropout, non_linearity=resnet_act_fn,
                                output_scale_factor=output_scale_factor, pre_norm=resnet_pre_norm)
            for i in range(num_layers)])
        self.downsamplers = nn.CellList([DownsampleCausal3D(out_channels, stride=downsample_stride)]) \
            if add_downsample else None

    def construct(self, hidden_states):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
        return hidden_states


class UpDecoderBlockCausal3D(nn.Cell):
    def __init__(self, in_channels, out_channels, resolution_idx=None, dropout=0.0, num_layers=1, resnet_eps=1e-6,
                 resnet_act_fn="swish", resnet_groups=32, resnet_pre_norm=True, output_scale_factor=1.0,
                 add_upsample=True, upsample_scale_factor=(2, 2, 2)):
        super().__init__()
        self.resnets = nn.CellList([
            ResnetBlockCausal3D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels,
                                eps=resnet_eps, groups=resnet_groups, dropout=dropout, non_linearity=resnet_act_fn,
                                output_scale_factor=output_scale_factor, pre_norm=resnet_pre_norm)
            for i in range(num_layers)])
        self.upsamplers = nn.CellList([UpsampleCausal3D(out_channels, out_channels=out_channels,
                                                        upsample_factor=upsample_scale_factor)]) \
            if add_upsample else None
        self.resolution_idx = resolution_idx

    def construct(self, hidden_states):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states)
        return hidden_states
