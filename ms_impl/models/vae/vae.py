"""MindSpore twin of ``pt_reference/models/vae/vae.py`` (Open-Sora ``VideoAutoencoderKL`` and the 1.2
``VideoAutoencoderPipeline``). Same constructor arguments, attribute paths and parameter names (``scale`` and
``shift`` are ``Parameter(requires_grad=False)``, the torch side's persistent buffers).

Optimisation switches (all set after construction, none renames a weight):
- ``spatial_vae.micro_batch_size`` (upstream's own knob, 4 in 1.2): frames per 2D VAE call. Same result,
  peak activation memory proportional to it.
- ``temporal_chunk_batch`` (MindSpore only, default 1 = upstream's loop): how many equal-length
  ``micro_frame_size`` chunks go through the temporal VAE in one call, stacked on the batch axis. Same result
  (GroupNorm and convs are per sample); larger values trade memory for fewer, bigger kernel launches.
- ``ms_impl.layers.set_compute_dtype(net, ms.float16)``: fp16 convs/Linears, GroupNorm, softmax and the
  posterior in fp32.
- ``set_conv_impl("native" | "im2col" | "unfold" | ... | "default")``: the device conv kernel (the default on
  CPU and Ascend: on CPU 1.5-10x faster than the matmul forms at this VAE's shapes, docs/performance.md) or a
  conv as matmuls over gathered patches (``im2col``: k^d x the conv input in memory; ``unfold``: ``ops.unfold``).
- ``set_jit(True)``: the spatial and temporal encoder / decoder networks run as compiled graphs (``ms.jit``).
- ``set_conv3d_dtype(dtype)``: compute dtype of the temporal VAE's Conv3d cells only; fp16 on Ascend by default
  (Conv3D has no fp32 kernel there), fp32 elsewhere.

``micro_frame_size`` is not an optimisation: it is part of the model (the released weights were trained and
are used with 17-frame chunks; other values give other latents for videos longer than one chunk).
"""
import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn

from opensora_dual.families.vae2d import autoencoder_kl_config
from opensora_dual.families.vae_pipeline import SCALE as OPENSORA_V1_2_SCALE  # noqa: F401
from opensora_dual.families.vae_pipeline import SHIFT as OPENSORA_V1_2_SHIFT  # noqa: F401
from opensora_dual.families.vae_pipeline import opensora_v1_2_config
from ms_impl.models.vae.autoencoder_kl import AutoencoderKL
from ms_impl.layers import set_conv_impl
from ms_impl.models.vae.vae_temporal import VAE_Temporal, VAE_Temporal_SD



def _tensor(x):
    return x if x is None or isinstance(x, Tensor) else Tensor(np.asarray(x))


def _to_frames(x):
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _from_frames(x, b):
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class VideoAutoencoderKL(nn.Cell):
    def __init__(self, from_pretrained=None, micro_batch_size=None, cache_dir=None, local_files_only=False,
                 subfolder=None, scaling_factor=0.18215, vae_config=None):
        super().__init__()
        self._wrap(AutoencoderKL(**autoencoder_kl_config(from_pretrained, subfolder, vae_config)), micro_batch_size,
                   scaling_factor)

    @classmethod
    def from_module(cls, module, micro_batch_size=None, scaling_factor=0.18215):
        """Wrap an AutoencoderKL that is already built and loaded (e.g. the ``sd-vae-ft-ema`` release folder
        through ``converters.from_pretrained``) instead of building a second one."""
        self = cls.__new__(cls)
        nn.Cell.__init__(self)
        self._wrap(module, micro_batch_size, scaling_factor)
        return self

    def _wrap(self, module, micro_batch_size, scaling_factor):
        self.module = module
        self.out_channels = self.module.latent_channels
        f = 2 ** (len(self.module.encoder.down_blocks) - 1)   # 8 for the SD/SDXL VAEs
        self.patch_size = (1, f, f)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = scaling_factor

    def set_jit(self, enabled=True):
        """Each micro-batch's encoder / decoder call as a compiled graph (``AutoencoderKL.set_jit``)."""
        self.module.set_jit(enabled)
        return self

    def _chunks(self, n):
        bs = n if not self.micro_batch_size else self.micro_batch_size
        return [(i, min(i + bs, n)) for i in range(0, n, bs)]

    def encode(self, x, noise=None):
        x, noise = _tensor(x), _tensor(noise)
        b = x.shape[0]
        frames = _to_frames(x)
        eps = None if noise is None else _to_frames(noise)
        out = []
        for i, j in self._chunks(frames.shape[0]):
            posterior = self.module.encode(frames[i:j])
            z = posterior.mode() if eps is None else posterior.sample(eps[i:j])
            out.append(z * self.scaling_factor)
        return _from_frames(mint.cat(out, dim=0), b)

    def encode_moments(self, x):
        x = _tensor(x)
        b = x.shape[0]
        frames = _to_frames(x)
        means, stds = [], []
        for i, j in self._chunks(frames.shape[0]):
            posterior = self.module.encode(frames[i:j])
            means.append(posterior.mean * self.scaling_factor)
            stds.append(posterior.std * self.scaling_factor)
        return _from_frames(mint.cat(means, dim=0), b), _from_frames(mint.cat(stds, dim=0), b)

    def decode(self, z, num_frames=None):
        z = _tensor(z)
        b = z.shape[0]
        frames = _to_frames(z)
        out = [self.module.decode(frames[i:j] / self.scaling_factor) for i, j in self._chunks(frames.shape[0])]
        return _from_frames(mint.cat(out, dim=0), b)

    def construct(self, x, noise=None):
        return self.decode(self.encode(x, noise))

    def get_latent_size(self, input_size):
        return [None if s is None else s // p for s, p in zip(input_size, self.patch_size)]


def _build(cfg):
    cfg = dict(cfg or {})
    kind = cfg.pop("type", None)
    if kind == "VideoAutoencoderKL":
        return VideoAutoencoderKL(**cfg)
    if kind == "VAE_Temporal_SD":
        return VAE_Temporal_SD(**cfg)
    if kind == "VAE_Temporal":
        return VAE_Temporal(**cfg)
    raise ValueError(f"unknown VAE module type {kind!r} (VideoAutoencoderKL, VAE_Temporal_SD, VAE_Temporal)")


def _groups(items, k, key):
    """Consecutive runs of items with equal ``key(item)``, each run cut into groups of at most k."""
    out, cur = [], []
    for it in items:
        if cur and (len(cur) == k or key(cur[-1]) != key(it)):
            out.append(cur)
            cur = []
        cur.append(it)
    if cur:
        out.append(cur)
    return out


class VideoAutoencoderPipeline(nn.Cell):
    def __init__(self, vae_2d=None, vae_temporal=None, from_pretrained=None, freeze_vae_2d=False, cal_loss=False,
                 micro_frame_size=None, shift=0.0, scale=1.0):
        super().__init__()
        self.spatial_vae = _build(vae_2d)
        self.temporal_vae = _build(vae_temporal)
        self.cal_loss = cal_loss
        self.micro_frame_size = micro_frame_size
        self.micro_z_frame_size = (None if micro_frame_size is None else
                                   self.temporal_vae.get_latent_size([micro_frame_size, None, None])[0])
        if freeze_vae_2d:
            for p in self.spatial_vae.get_parameters():
                p.requires_grad = False
        self.out_channels = self.temporal_vae.out_channels
        scale, shift = np.asarray(scale, np.float32), np.asarray(shift, np.float32)
        if scale.ndim > 0:
            scale = scale[None, :, None, None, None]
        if shift.ndim > 0:
            shift = shift[None, :, None, None, None]
        self.scale = Parameter(Tensor(scale), name="scale", requires_grad=False)
        self.shift = Parameter(Tensor(shift), name="shift", requires_grad=False)
        self.temporal_chunk_batch = 1

    def set_conv3d_dtype(self, dtype):
        self.temporal_vae.set_conv3d_dtype(dtype)
        return self

    def set_jit(self, enabled=True):
        """Compile the spatial and temporal VAEs' encoder / decoder networks (``ms.jit``; one compile per input
        shape, so a micro-batch remainder compiles once more). Same numbers as PyNative; no per-kernel dispatch."""
        self.spatial_vae.set_jit(enabled)
        self.temporal_vae.set_jit(enabled)
        return self

    def set_conv_impl(self, impl):
        """``"native"`` (the device kernel, the default), ``"im2col"`` / ``"unfold"`` (matmul forms) or ``"default"``."""
        set_conv_impl(self, impl)
        return self

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release/diffusers folder or any file the converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    def _frame_chunks(self, t):
        step = t if self.micro_frame_size is None else self.micro_frame_size
        return [(i, min(i + step, t)) for i in range(0, t, step)]

    def _temporal_posteriors(self, x_z):
        """Temporal posterior moments per chunk, ``temporal_chunk_batch`` equal chunks per call, in order."""
        b = x_z.shape[0]
        results = []
        for group in _groups(self._frame_chunks(x_z.shape[2]), max(1, int(self.temporal_chunk_batch)),
                             key=lambda s: s[1] - s[0]):
            if len(group) > 1:
                xs = mint.cat([x_z[:, :, i:j] for i, j in group], dim=0)
            else:
                xs = x_z[:, :, group[0][0]:group[0][1]]
            posterior = self.temporal_vae.encode(xs)
            if len(group) == 1:
                results.append(posterior)
            else:
                for g in range(len(group)):
                    results.append(_Slice(posterior, g * b, (g + 1) * b))
        return results

    def encode(self, x, spatial_noise=None, temporal_noise=None):
        temporal_noise = _tensor(temporal_noise)
        x_z = self.spatial_vae.encode(x, noise=spatial_noise)
        z_list, lat = [], 0
        posterior = None
        for posterior in self._temporal_posteriors(x_z):
            n = posterior.mean.shape[2]
            z_list.append(posterior.mode() if temporal_noise is None else
                          posterior.sample(temporal_noise[:, :, lat:lat + n]))
            lat += n
        z = mint.cat(z_list, dim=2)
        if self.cal_loss:
            return z, posterior, x_z
        return (z - self.shift.astype(z.dtype)) / self.scale.astype(z.dtype)

    def encode_moments(self, x):
        x_z = self.spatial_vae.encode(x)
        means, stds = [], []
        for posterior in self._temporal_posteriors(x_z):
            means.append(posterior.mean)
            stds.append(posterior.std)
        mean, std = mint.cat(means, dim=2), mint.cat(stds, dim=2)
        scale, shift = self.scale.astype(mean.dtype), self.shift.astype(mean.dtype)
        return (mean - shift) / scale, std / scale

    def decode(self, z, num_frames=None):
        z = _tensor(z)
        if not self.cal_loss:
            z = z * self.scale.astype(z.dtype) + self.shift.astype(z.dtype)
        if self.micro_frame_size is None:
            x_z = self.temporal_vae.decode(z, num_frames=num_frames)
        else:
            chunks = []   # (latent start, latent end, output frames)
            for i in range(0, z.shape[2], self.micro_z_frame_size):
                chunks.append((i, min(i + self.micro_z_frame_size, z.shape[2]), min(self.micro_frame_size, num_frames)))
                num_frames -= self.micro_frame_size
            b = z.shape[0]
            x_z_list = []
            # chunks batch together when they have the same latent length and the same output frame count
            for group in _groups(chunks, max(1, int(self.temporal_chunk_batch)), key=lambda c: (c[1] - c[0], c[2])):
                zs = mint.cat([z[:, :, i:j] for i, j, _ in group], dim=0) if len(group) > 1 else \
                    z[:, :, group[0][0]:group[0][1]]
                out = self.temporal_vae.decode(zs, num_frames=group[0][2])
                x_z_list.extend([out[g * b:(g + 1) * b] for g in range(len(group))])
            x_z = mint.cat(x_z_list, dim=2)
        x = self.spatial_vae.decode(x_z)
        return (x, x_z) if self.cal_loss else x

    def construct(self, x, spatial_noise=None, temporal_noise=None):
        x = _tensor(x)
        z = self.encode(x, spatial_noise, temporal_noise)
        if self.cal_loss:
            z = z[0]
        return self.decode(z, num_frames=x.shape[2])

    def get_latent_size(self, input_size):
        if self.micro_frame_size is None or input_size[0] is None:
            return self.temporal_vae.get_latent_size(self.spatial_vae.get_latent_size(input_size))
        sub = self.temporal_vae.get_latent_size(
            self.spatial_vae.get_latent_size([self.micro_frame_size, input_size[1], input_size[2]]))
        sub[0] = sub[0] * (input_size[0] // self.micro_frame_size)
        remain = input_size[0] % self.micro_frame_size
        if remain > 0:
            sub[0] += self.temporal_vae.get_latent_size([remain, None, None])[0]
        return sub


class _Slice:
    """One sample range [a, b) of a batched posterior (same interface as DiagonalGaussianDistribution)."""

    def __init__(self, posterior, a, b):
        self.p, self.a, self.b = posterior, a, b
        self.mean = posterior.mean[a:b]
        self.std = posterior.std[a:b]

    def mode(self):
        return self.mean

    def sample(self, noise):
        noise = _tensor(noise)
        m32, s32 = self.p._mean32[self.a:self.b], self.p._std32[self.a:self.b]
        return (m32 + s32 * noise.astype(ms.float32)).astype(self.p.dtype)


def OpenSoraVAE_V1_2(micro_batch_size=4, micro_frame_size=17, from_pretrained=None, local_files_only=False,
                     freeze_vae_2d=False, cal_loss=False, force_huggingface=False):
    model = VideoAutoencoderPipeline(**opensora_v1_2_config(micro_batch_size, micro_frame_size, freeze_vae_2d,
                                                            cal_loss))
    if from_pretrained:
        from converters import load_state_into, read_checkpoint
        from opensora_dual.registry import get_family

        with read_checkpoint(from_pretrained) as ckpt:
            load_state_into(model, ckpt, "ms", strict=True, family=get_family("vae_pipeline"))
    return model
