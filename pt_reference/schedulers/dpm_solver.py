"""DPM-Solver sampler (Open-Sora 1.0 / 1.1 ``dpm-solver``), ``opensora/schedulers/dpms/__init__.py`` (upstream's
class is spelled ``DMP_SOLVER``; both names are exported) with ``dpm_solver.py`` (``DPMS``: DPM-Solver++,
multistep order 2, time-uniform).

The schedule and every per-step coefficient are ``opensora_dual.sampling.dpm_solver``, shared with the MindSpore
twin. Here: the CFG forward (batch [null; cond], the first half of the output channels = eps, guided) and the
update. ``state["history"]`` carries the previous step's data prediction m_{i-1} (the multistep memory):
``step(i)`` evaluates the model at (z_i, t_i) and updates with m_i and m_{i-1}. Driven step by step with the
reference latent fed in (teacher-forced parity), the history is the port's own data prediction of the previous
reference latent, i.e. what the reference computed at that step up to the port's error.
"""
import numpy as np
import torch

from opensora_dual.sampling.dpm_solver import DPMSolverSampler
from pt_reference.schedulers.common import TorchLatents, cfg_text_inputs


class DPM_SOLVER(TorchLatents, DPMSolverSampler):
    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        B = z.shape[0]
        state = self.run_schedule(B, mask)
        # upstream: text_encoder.null(n) = the model's y_embedding repeated
        y, y_null, model_args = cfg_text_inputs(model, y, y_null, y_mask, additional_args, B)
        state.update(y=y, y_null=y_null, model_args=model_args,
                     guidance=self.guidance(guidance_scale), history=None)
        return state

    def noise_prediction(self, model, z, t, state):
        """model_wrapper(classifier-free): [z; z] with y = [null; cond], eps = the first half of the output
        channels (``forward_with_dpmsolver``), uncond + s (cond - uncond); s == 1: one conditional forward."""
        g = state["guidance"]
        with torch.no_grad():
            if g == 1.0:
                out = model(z, torch.as_tensor(t), state["y"], **state["model_args"]).float()
                return out.chunk(2, dim=1)[0]
            out = model(torch.cat([z, z], 0), torch.as_tensor(np.concatenate([t, t])),
                        torch.cat([state["y_null"], state["y"]], 0), **state["model_args"]).float()
        noise_uncond, noise_cond = out.chunk(2, dim=1)[0].chunk(2, dim=0)
        return noise_uncond + g * (noise_cond - noise_uncond)

    def step(self, model, z, i, state, noise=None):
        c = state["coef"][i]
        eps = self.noise_prediction(model, z, state["timesteps"][i], state)
        m = (z - torch.tensor(c["sigma"]) * eps) / torch.tensor(c["alpha"])   # data prediction (DPM-Solver++)
        out = torch.tensor(c["cx"]) * z - torch.tensor(c["cm"]) * m
        if c["order"] == 2:
            d1 = torch.tensor(c["inv_r0"]) * (m - state["history"])
            out = out - torch.tensor(c["cd"]) * d1
        state["history"] = m
        return out


DMP_SOLVER = DPM_SOLVER   # upstream's spelling
