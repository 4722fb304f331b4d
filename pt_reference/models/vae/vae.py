"""Open-Sora video VAEs, ``v1.2.0:opensora/models/vae/vae.py``.

- ``VideoAutoencoderKL`` (1.0/1.1, and the spatial half of 1.2): a diffusers ``AutoencoderKL`` under
  ``.module`` applied frame by frame in micro-batches, latents x ``scaling_factor`` (0.18215).
- ``VideoAutoencoderPipeline`` (1.2): spatial VAE, then the temporal VAE on ``micro_frame_size`` (17) frame
  chunks, then ``(z - shift) / scale`` per channel. Keys: ``spatial_vae.module.*``, ``temporal_vae.*``,
  buffers ``scale``/``shift`` [1, 4, 1, 1, 1].

Differences from upstream, all for parity testing: the posterior is sampled with noise passed in
(``spatial_noise`` / ``temporal_noise``; ``None`` = posterior mode) instead of ``torch.randn`` inside, and the
constructors build the architecture only; weights are loaded by ``converters.from_pretrained``.
"""

import torch
from torch import nn

from opensora_dual.families.vae2d import autoencoder_kl_config
from opensora_dual.families.vae_pipeline import SCALE as OPENSORA_V1_2_SCALE  # noqa: F401
from opensora_dual.families.vae_pipeline import SHIFT as OPENSORA_V1_2_SHIFT  # noqa: F401
from opensora_dual.families.vae_pipeline import opensora_v1_2_config
from pt_reference.models.vae.autoencoder_kl import AutoencoderKL
from pt_reference.models.vae.vae_temporal import VAE_Temporal, VAE_Temporal_SD



def _to_frames(x):
    """[B, C, T, H, W] -> [(B T), C, H, W]."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _from_frames(x, b):
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class VideoAutoencoderKL(nn.Module):
    """Per-frame 2D VAE. ``vae_config`` (this project's addition) gives the AutoencoderKL kwargs directly;
    otherwise ``from_pretrained`` names a known diffusers VAE or a local diffusers folder (config only)."""

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
        nn.Module.__init__(self)
        self._wrap(module, micro_batch_size, scaling_factor)
        return self

    def _wrap(self, module, micro_batch_size, scaling_factor):
        self.module = module
        self.out_channels = self.module.latent_channels
        f = 2 ** (len(self.module.encoder.down_blocks) - 1)   # 8 for the SD/SDXL VAEs
        self.patch_size = (1, f, f)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = scaling_factor

    def _chunks(self, n):
        bs = n if not self.micro_batch_size else self.micro_batch_size
        return [(i, min(i + bs, n)) for i in range(0, n, bs)]

    def encode(self, x, noise=None):
        """x [B, 3, T, H, W] -> [B, 4, T, H/8, W/8]; ``noise`` in that shape, or None for the mode."""
        b = x.shape[0]
        frames = _to_frames(x)
        eps = None if noise is None else _to_frames(noise)
        out = []
        for i, j in self._chunks(frames.shape[0]):
            posterior = self.module.encode(frames[i:j])
            z = posterior.mode() if eps is None else posterior.sample(eps[i:j])
            out.append(z * self.scaling_factor)
        return _from_frames(torch.cat(out, dim=0), b)

    def encode_moments(self, x):
        """(mean, std) of the scaled latent, for latent caching: z = mean + std * eps."""
        b = x.shape[0]
        frames = _to_frames(x)
        means, stds = [], []
        for i, j in self._chunks(frames.shape[0]):
            posterior = self.module.encode(frames[i:j])
            means.append(posterior.mean * self.scaling_factor)
            stds.append(posterior.std * self.scaling_factor)
        return _from_frames(torch.cat(means), b), _from_frames(torch.cat(stds), b)

    def decode(self, z, num_frames=None):
        b = z.shape[0]
        frames = _to_frames(z)
        out = [self.module.decode(frames[i:j] / self.scaling_factor) for i, j in self._chunks(frames.shape[0])]
        return _from_frames(torch.cat(out, dim=0), b)

    def forward(self, x, noise=None):
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


class VideoAutoencoderPipeline(nn.Module):
    """Constructor = ``VideoAutoencoderPipelineConfig`` fields (the release config.json)."""

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
            for p in self.spatial_vae.parameters():
                p.requires_grad = False
        self.out_channels = self.temporal_vae.out_channels
        scale, shift = torch.tensor(scale, dtype=torch.float32), torch.tensor(shift, dtype=torch.float32)
        if scale.ndim > 0:
            scale = scale[None, :, None, None, None]
        if shift.ndim > 0:
            shift = shift[None, :, None, None, None]
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release/diffusers folder or any file the converter reads or writes (``converters.from_pretrained``)."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "pt", **overrides)

    def _frame_chunks(self, t):
        step = t if self.micro_frame_size is None else self.micro_frame_size
        return [(i, min(i + step, t)) for i in range(0, t, step)]

    def encode(self, x, spatial_noise=None, temporal_noise=None):
        """x [B, 3, T, H, W] in [-1, 1] -> z [B, 4, T', H/8, W/8]. Noise None -> posterior mode."""
        x_z = self.spatial_vae.encode(x, noise=spatial_noise)
        z_list, lat = [], 0
        for i, j in self._frame_chunks(x_z.shape[2]):
            posterior = self.temporal_vae.encode(x_z[:, :, i:j])
            n = posterior.mean.shape[2]
            z_list.append(posterior.mode() if temporal_noise is None else
                          posterior.sample(temporal_noise[:, :, lat:lat + n]))
            lat += n
        z = torch.cat(z_list, dim=2)
        if self.cal_loss:
            return z, posterior, x_z
        return (z - self.shift) / self.scale

    def encode_moments(self, x):
        """Latent caching: spatial mode, then the temporal posterior's (mean, std), normalised like ``encode``
        so that ``mean + std * eps`` is what ``encode(x, temporal_noise=eps)`` returns."""
        x_z = self.spatial_vae.encode(x)
        means, stds = [], []
        for i, j in self._frame_chunks(x_z.shape[2]):
            posterior = self.temporal_vae.encode(x_z[:, :, i:j])
            means.append(posterior.mean)
            stds.append(posterior.std)
        return (torch.cat(means, 2) - self.shift) / self.scale, torch.cat(stds, 2) / self.scale

    def decode(self, z, num_frames=None):
        if not self.cal_loss:
            z = z * self.scale.to(z.dtype) + self.shift.to(z.dtype)
        if self.micro_frame_size is None:
            x_z = self.temporal_vae.decode(z, num_frames=num_frames)
        else:
            x_z_list = []
            for i in range(0, z.shape[2], self.micro_z_frame_size):
                x_z_list.append(self.temporal_vae.decode(z[:, :, i:i + self.micro_z_frame_size],
                                                         num_frames=min(self.micro_frame_size, num_frames)))
                num_frames -= self.micro_frame_size
            x_z = torch.cat(x_z_list, dim=2)
        x = self.spatial_vae.decode(x_z)
        return (x, x_z) if self.cal_loss else x

    def forward(self, x, spatial_noise=None, temporal_noise=None):
        """encode -> decode reconstruction of ``x`` (noise None -> posterior modes)."""
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


def OpenSoraVAE_V1_2(micro_batch_size=4, micro_frame_size=17, from_pretrained=None, local_files_only=False,
                     freeze_vae_2d=False, cal_loss=False, force_huggingface=False):
    """Upstream's factory. ``from_pretrained`` (a release folder or converted file) loads through converters."""
    model = VideoAutoencoderPipeline(**opensora_v1_2_config(micro_batch_size, micro_frame_size, freeze_vae_2d,
                                                            cal_loss))
    if from_pretrained:
        from converters import load_state_into, read_checkpoint
        from opensora_dual.registry import get_family

        with read_checkpoint(from_pretrained) as ckpt:
            load_state_into(model, ckpt, "pt", strict=True, family=get_family("vae_pipeline"))
    return model
