"""IDDPM sampler and training loss (Open-Sora 1.0 / 1.1), ``opensora/schedulers/iddpm/__init__.py::IDDPM`` with
``gaussian_diffusion.py`` / ``respace.py``.

The schedule (respacing, coefficient tables in float64 for v1.0 or float32 for v1.1, the CFG channel rule and
the v1.1 mask schedule) is ``opensora_dual.sampling.iddpm``, shared with the MindSpore twin. Here: ancestral
``p_sample`` with the batched CFG forward, and ``training_losses``.
Differences from upstream's signature: the sampler takes caption features (``y`` [B, 1, L, C], ``y_mask``
[B, L]) instead of a text encoder and prompts, and draws random numbers from an injectable ``noise`` source.
"""
import numpy as np
import torch

from opensora_dual.sampling.iddpm import IDDPMSampler, cfg_channels, iddpm_cfg_combine
from pt_reference.schedulers.common import TorchLatents, cfg_text_inputs


def _bcast(v, x):
    """numpy [B] (or scalar) -> [B, 1, 1, 1, 1] float32 tensor."""
    return torch.as_tensor(np.asarray(v, np.float32)).reshape(-1, *([1] * (x.ndim - 1)))


def _frames(m):
    """numpy [B, T] bool -> [B, 1, T, 1, 1] tensor."""
    return torch.from_numpy(np.ascontiguousarray(m))[:, None, :, None, None]


class IDDPM(TorchLatents, IDDPMSampler):
    # ---- one run, step by step (teacher-forced parity drives ``step`` directly) ----------------------
    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        B = z.shape[0]
        state = self.run_schedule(B, mask)
        y, y_null, model_args = cfg_text_inputs(model, y, y_null, y_mask, additional_args, B)
        model_args["y"] = torch.cat([y, y_null], 0)
        state.update(model_args=model_args, guidance=self.guidance(guidance_scale))
        return state

    def guided_output(self, model, z, t, model_args, x_mask, guidance):
        """One forward on [z; z] with y = [cond; null] -> the cond half's output with the first ``cfg_channel``
        channels guided (upstream's ``forward_with_cfg``), [B, 2C, ...]."""
        kwargs = dict(model_args)
        if x_mask is not None:
            kwargs["x_mask"] = torch.from_numpy(np.concatenate([x_mask, x_mask]))
        with torch.no_grad():
            out = model(torch.cat([z, z], 0), torch.as_tensor(np.concatenate([t, t])), **kwargs).float()
        B = z.shape[0]
        return iddpm_cfg_combine(out[:B], out[B:], guidance, cfg_channels(self.cfg_channel, out.shape[1]),
                                 torch.cat)

    def p_mean_log_variance(self, out, z, c, i):
        """LEARNED_RANGE: (model mean, model log-variance) from the output, float32 in upstream's order."""
        C = z.shape[1]
        eps, v = out[:, :C], out[:, C:]
        frac = (v + 1) / 2
        log_var = frac * _bcast(c["log_betas"][i], z) + (1 - frac) * _bcast(c["posterior_log_variance_clipped"][i], z)
        pred_x0 = _bcast(c["sqrt_recip_alphas_cumprod"][i], z) * z - _bcast(c["sqrt_recipm1_alphas_cumprod"][i], z) * eps
        mean = _bcast(c["posterior_mean_coef1"][i], z) * pred_x0 + _bcast(c["posterior_mean_coef2"][i], z) * z
        return mean, log_var

    def draw(self, noise, z):
        return torch.from_numpy(noise.randn(self.draw_shape(z.shape))[: z.shape[0]]).to(z.dtype)

    def step(self, model, z, i, state, noise=None):
        """Respaced index ``state["indices"][i]``: (v1.1 mask: re-noise, x_mask) one CFG forward, p_sample, reset."""
        t_idx = int(state["indices"][i][0])
        c = state["coef"]
        msk = state["mask"]
        x_mask = None
        if msk.mask is not None:
            renoise, x_mask, reset = msk.step(t_idx)
            x0 = z.clone()
            x_noise = x0 * _bcast(c["sqrt_alphas_cumprod"][i], z) + self.draw(noise, z) * _bcast(
                c["sqrt_one_minus_alphas_cumprod"][i], z)
            z = torch.where(_frames(renoise), x_noise, x0)
        out = self.guided_output(model, z, state["timesteps"][i], state["model_args"], x_mask, state["guidance"])
        mean, log_var = self.p_mean_log_variance(out, z, c, i)
        eps = self.draw(noise, z)  # drawn at every step, multiplied by 0 at t = 0
        sample = mean + _bcast(state["nonzero"][i], z) * torch.exp(0.5 * log_var) * eps
        if msk.mask is not None:
            sample = torch.where(_frames(reset), x0, sample)
        return sample

    # ---- training ------------------------------------------------------------------------------------
    def training_losses(self, model, x_start, model_kwargs=None, noise=None, t=None, mask=None):
        """Upstream's hybrid loss per sample: {"loss", "mse", "vb"} ([B] each). ``t``: original timesteps
        (int [B]; this scheduler must not be respaced for training); ``mask`` [B, T] bool: frames with False
        get q_sample(x0, 0, noise) and no loss (masked mean). vb (bits) sees the eps prediction detached."""
        sched = self.schedule
        x0 = torch.as_tensor(np.asarray(x_start, np.float32)) if not torch.is_tensor(x_start) else x_start.float()
        noise = torch.as_tensor(np.asarray(noise, np.float32)) if not torch.is_tensor(noise) else noise.float()
        t = torch.as_tensor(np.asarray(t)).long()
        t_np = t.numpy()

        def g(name, idx=t_np):  # upstream's _extract_into_tensor: the table at t, as float32, broadcast
            return _bcast(sched.gather(name, idx), x0)

        x_t = g("sqrt_alphas_cumprod") * x0 + g("sqrt_one_minus_alphas_cumprod") * noise
        if mask is not None:
            t0 = np.zeros_like(t_np)
            x_t0 = g("sqrt_alphas_cumprod", t0) * x0 + g("sqrt_one_minus_alphas_cumprod", t0) * noise
            x_t = torch.where(_frames(np.asarray(mask, bool)), x_t, x_t0)
        t_model = torch.as_tensor(sched.original_timesteps(t_np))
        out = model(x_t, t_model, **(model_kwargs or {})).float()
        C = x0.shape[1]
        eps, v = out[:, :C], out[:, C:]
        # vb: the variance is learned through the bound, the mean is not (eps detached)
        true_mean = g("posterior_mean_coef1") * x0 + g("posterior_mean_coef2") * x_t
        true_log_var = g("posterior_log_variance_clipped")
        frac = (v + 1) / 2
        log_var = frac * g("log_betas") + (1 - frac) * true_log_var
        pred_x0 = g("sqrt_recip_alphas_cumprod") * x_t - g("sqrt_recipm1_alphas_cumprod") * eps.detach()
        mean = g("posterior_mean_coef1") * pred_x0 + g("posterior_mean_coef2") * x_t
        m = None if mask is None else torch.as_tensor(np.asarray(mask, bool))
        kl = 0.5 * (-1.0 + log_var - true_log_var + torch.exp(true_log_var - log_var)
                    + ((true_mean - mean) ** 2) * torch.exp(-log_var))
        kl = mean_flat(kl, m) / np.log(2.0)
        nll = mean_flat(-discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var), m) / np.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        mse = mean_flat((noise - eps) ** 2, m)
        return {"loss": mse + vb, "mse": mse, "vb": vb}


def mean_flat(x, mask=None):
    """Mean over all non-batch dims; with a frame mask [B, T]: sum over True frames / (#True * C*H*W)."""
    if mask is None:
        return x.mean(dim=list(range(1, x.ndim)))
    B, C, T = x.shape[:3]
    x = x.permute(0, 2, 1, 3, 4).reshape(B, T, -1)
    return (x * mask.unsqueeze(2)).sum(dim=1).sum(dim=1) / (mask.sum(dim=1) * x.shape[-1])


def _approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))
