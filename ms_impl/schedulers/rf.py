"""Rectified-flow sampler (Open-Sora 1.2), twin of ``pt_reference.schedulers.rf.RFLOW``.

Same schedule (``opensora_dual.sampling.rflow``), same loop. The port's difference is speed: the CFG
denoiser (both halves in one batched forward, the guidance combination included) is one ``ms.jit`` graph,
compiled on the first step and reused for every step of a run (shapes are static per run: the x_mask is always
passed when a conditioning mask exists). ``graph=False`` runs it in PyNative.
"""
import time
import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ms_impl.schedulers.common import MsLatents, null_caption
from opensora_dual.sampling.rflow import MaskSchedule, RFlowSampler, add_noise_timepoints


def _bcast(v, ndim):
    """numpy [B] -> ms [B, 1, 1, 1, 1] float32."""
    return ms.Tensor(np.asarray(v, np.float32).reshape(-1, *([1] * (ndim - 1))))


class CFGDenoiser(nn.Cell):
    """[cond; null] in one forward; v = v_uncond + s (v_cond - v_uncond) on the first C output channels."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model
        self.out_c = model.in_channels

    def construct(self, z, t, y, mask, x_mask, fps, height, width, guidance):
        z_in = mint.cat([z, z], 0)
        t_in = mint.cat([t, t], 0)
        if x_mask is not None:
            x_mask = mint.cat([x_mask, x_mask], 0)
        pred = self.model(z_in, t_in, y, mask, x_mask, fps, height, width)[:, :self.out_c]
        b = z.shape[0]
        pred_cond = pred[:b]
        pred_uncond = pred[b:]
        return pred_uncond + guidance * (pred_cond - pred_uncond)


class RFLOW(MsLatents, RFlowSampler):
    def __init__(self, num_sampling_steps=10, num_timesteps=1000, cfg_scale=4.0, use_discrete_timesteps=False,
                 use_timestep_transform=False, transform_scale=1.0, **kwargs):
        super().__init__(num_sampling_steps, num_timesteps, cfg_scale, use_discrete_timesteps,
                         use_timestep_transform, transform_scale)
        self.graph = kwargs.get("graph", True)
        self._denoisers = {}          # id(model) -> (CFGDenoiser, compiled construct)
        self.compile_seconds = None   # wall time of the first (compiling) graph call of the last run

    def denoiser(self, model):
        key = id(model)
        if key not in self._denoisers:
            d = CFGDenoiser(model)
            d.set_train(False)
            self._denoisers[key] = (d, ms.jit(d.construct) if self.graph else d.construct)
        return self._denoisers[key][1]

    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        add = {k: np.asarray(v) for k, v in (additional_args or {}).items()}
        B = z.shape[0]
        ts = self.schedule.timesteps(B, add.get("height"), add.get("width"), add.get("num_frames"))
        y = y if isinstance(y, ms.Tensor) else ms.Tensor(np.asarray(y, np.float32))
        y_null = null_caption(model, y_null, B)   # upstream: the model's own null caption, repeated per prompt
        g = self.guidance(guidance_scale)
        return {"timesteps": ts, "dts": self.schedule.dts(ts), "mask": MaskSchedule(mask, self.num_timesteps),
                "y": mint.cat([y, y_null.astype(y.dtype)], 0),
                "y_mask": None if y_mask is None else ms.Tensor(np.asarray(y_mask).astype(np.int32)),
                "fps": ms.Tensor(np.asarray(add.get("fps", [24.0]), np.float32)),
                "height": ms.Tensor(np.asarray(add["height"], np.float32)),
                "width": ms.Tensor(np.asarray(add["width"], np.float32)),
                "guidance": ms.Tensor(np.float32(g))}

    def step(self, model, z, i, state, noise=None):
        z = self.as_latent(z)
        t = state["timesteps"][i]
        msk = state["mask"]
        x_mask = None
        if msk.mask is not None:
            active, add_noise = msk.step(t)
            x0 = z
            eps = ms.Tensor(noise.randn(tuple(z.shape)))  # drawn every step, as upstream
            tp = _bcast(add_noise_timepoints(t, self.num_timesteps), z.ndim)
            x_noise = tp * x0 + (1 - tp) * eps
            z = mint.where(ms.Tensor(add_noise[:, None, :, None, None]), x_noise, x0)
            x_mask = ms.Tensor(active)
        start = time.perf_counter()
        v = self.denoiser(model)(z, ms.Tensor(t), state["y"], state["y_mask"], x_mask, state["fps"],
                                 state["height"], state["width"], state["guidance"])
        z = z + v * _bcast(state["dts"][i], z.ndim)
        if x_mask is not None:
            z = mint.where(ms.Tensor(active[:, None, :, None, None]), z, x0)
        return self.timed(i, start, z)
