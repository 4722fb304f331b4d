"""DPM-Solver sampler (Open-Sora 1.0 / 1.1 ``dpm-solver``), twin of ``pt_reference.schedulers.dpm_solver``.

Same schedule and coefficients (``opensora_dual.sampling.dpm_solver``), same multistep memory in
``state["history"]`` (see the reference's docstring for its meaning in teacher-forced runs). The CFG forward
(batch [null; cond], eps = first half of the output channels, guidance) is one ``ms.jit`` graph compiled on the
first step (``graph=False``: PyNative); the solver update is three element-wise ops outside it.
"""
import time

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ms_impl.schedulers.common import MsLatents, null_caption
from ms_impl.schedulers.iddpm import model_arguments
from opensora_dual.sampling.dpm_solver import DPMSolverSampler

F32 = ms.float32


class DPMSolverDenoiser(nn.Cell):
    """[z; z] with y = [null; cond] -> uncond + s (cond - uncond) on the first half of the output channels."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model
        self.eps_c = model.out_channels // 2

    def construct(self, z, t, guidance, *args):
        out = self.model(mint.cat([z, z], 0), mint.cat([t, t], 0), *args).astype(F32)[:, :self.eps_c]
        b = z.shape[0]
        return out[:b] + guidance * (out[b:] - out[:b])


class CondDenoiser(nn.Cell):
    """guidance == 1: upstream's single conditional forward."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model
        self.eps_c = model.out_channels // 2

    def construct(self, z, t, *args):
        return self.model(z, t, *args).astype(F32)[:, :self.eps_c]


class DPM_SOLVER(MsLatents, DPMSolverSampler):
    def __init__(self, num_sampling_steps=None, cfg_scale=4.0, **kwargs):
        super().__init__(num_sampling_steps, cfg_scale)
        self.graph = kwargs.get("graph", True)
        self._denoisers = {}
        self.compile_seconds = None

    def denoiser(self, model, conditional_only=False):
        key = (id(model), conditional_only)
        if key not in self._denoisers:
            d = CondDenoiser(model) if conditional_only else DPMSolverDenoiser(model)
            d.set_train(False)
            self._denoisers[key] = (d, ms.jit(d.construct) if self.graph else d.construct)
        return self._denoisers[key][1]

    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        B = z.shape[0]
        state = self.run_schedule(B, mask)
        y = y if isinstance(y, ms.Tensor) else ms.Tensor(np.asarray(y, np.float32))
        y_null = null_caption(model, y_null, B)   # upstream: text_encoder.null(n) = the model's y_embedding
        g = self.guidance(guidance_scale)
        values = {"mask": y_mask}
        values.update({k: np.asarray(v) for k, v in (additional_args or {}).items()})
        state.update(y=y, y_cfg=mint.cat([y_null.astype(y.dtype), y], 0), values=values, guidance_value=g,
                     guidance=ms.Tensor(np.float32(g)), history=None)
        return state

    def step(self, model, z, i, state, noise=None):
        z = self.as_latent(z)
        c = state["coef"][i]
        t = ms.Tensor(state["timesteps"][i])
        start = time.perf_counter()
        if state["guidance_value"] == 1.0:
            eps = self.denoiser(model, True)(z, t, *model_arguments(model, dict(state["values"], y=state["y"])))
        else:
            eps = self.denoiser(model)(z, t, state["guidance"],
                                       *model_arguments(model, dict(state["values"], y=state["y_cfg"])))
        m = (z - ms.Tensor(c["sigma"]) * eps) / ms.Tensor(c["alpha"])
        out = ms.Tensor(c["cx"]) * z - ms.Tensor(c["cm"]) * m
        if c["order"] == 2:
            out = out - ms.Tensor(c["cd"]) * (ms.Tensor(c["inv_r0"]) * (m - state["history"]))
        state["history"] = m
        return self.timed(i, start, out)



DMP_SOLVER = DPM_SOLVER   # upstream's spelling
