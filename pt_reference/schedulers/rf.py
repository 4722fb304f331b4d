"""Rectified-flow sampler (Open-Sora 1.2), ``v1.2.0:opensora/schedulers/rf/__init__.py::RFLOW``.

The schedule (timesteps, transform, which frames are active, when they get noise) is
``opensora_dual.sampling.rflow``, shared with the MindSpore twin. Here: the Euler loop and the CFG forward.
Differences from upstream's signature: the sampler takes caption features (``y`` [B, 1, L, C], ``y_mask``
[B, L]) instead of a text encoder and prompts, and draws random numbers from an injectable ``noise`` source.
"""
import numpy as np
import torch

from opensora_dual.sampling.rflow import MaskSchedule, RFlowSampler, add_noise_timepoints, cfg_combine
from pt_reference.schedulers.common import TorchLatents, cfg_text_inputs


def _bcast(v, x):
    """[B] -> [B, 1, 1, 1, 1] in x's dtype."""
    return torch.as_tensor(v, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class RFLOW(TorchLatents, RFlowSampler):
    # ---- one run, step by step (teacher-forced parity drives ``step`` directly) ----------------------
    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        """Everything a run needs besides the model and the latent: a dict (``state``) for ``step``."""
        add = {k: np.asarray(v) for k, v in (additional_args or {}).items()}
        B = z.shape[0]
        ts = self.schedule.timesteps(B, add.get("height"), add.get("width"), add.get("num_frames"))
        y, y_null, model_args = cfg_text_inputs(model, y, y_null, y_mask, add, B)
        model_args["y"] = torch.cat([y, y_null], 0)
        return {"timesteps": ts, "dts": self.schedule.dts(ts), "mask": MaskSchedule(mask, self.num_timesteps),
                "model_args": model_args,
                "guidance": self.guidance(guidance_scale)}

    def guided_velocity(self, model, z, t, model_args, x_mask, guidance):
        """One batched forward [cond; null] -> v_uncond + s (v_cond - v_uncond) on the first C channels."""
        z_in = torch.cat([z, z], 0)
        t_in = torch.as_tensor(np.concatenate([t, t]))
        kwargs = dict(model_args)
        if x_mask is not None:
            kwargs["x_mask"] = torch.as_tensor(np.concatenate([x_mask, x_mask]))
        with torch.no_grad():
            pred = model(z_in, t_in, **kwargs).chunk(2, dim=1)[0]
        pred_cond, pred_uncond = pred.chunk(2, dim=0)
        return cfg_combine(pred_cond, pred_uncond, guidance)

    def step(self, model, z, i, state, noise=None):
        """Step ``i``: noise newly active frames, one CFG forward, Euler update, reset inactive frames."""
        t = state["timesteps"][i]
        ms_ = state["mask"]
        x_mask = None
        if ms_.mask is not None:
            active, add_noise = ms_.step(t)
            x0 = z.clone()
            eps = torch.from_numpy(noise.randn(tuple(z.shape))).to(z.dtype)  # drawn every step, as upstream
            tp = _bcast(add_noise_timepoints(t, self.num_timesteps), z)
            x_noise = tp * x0 + (1 - tp) * eps
            z = torch.where(torch.from_numpy(add_noise)[:, None, :, None, None], x_noise, x0)
            x_mask = active
        v = self.guided_velocity(model, z, t, state["model_args"], x_mask, state["guidance"])
        z = z + v * _bcast(state["dts"][i], z)
        if x_mask is not None:
            z = torch.where(torch.from_numpy(active)[:, None, :, None, None], z, x0)
        return z
