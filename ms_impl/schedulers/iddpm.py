"""IDDPM sampler and training loss (Open-Sora 1.0 / 1.1), twin of ``pt_reference.schedulers.iddpm.IDDPM``.

Same schedule (``opensora_dual.sampling.iddpm``), same loop, same draws. The port's additions:

- the CFG denoiser (the [z; z] forward with y = [cond; null] and the guidance on the first ``cfg_channel``
  channels) is one ``ms.jit`` graph, compiled on the first step of a run and reused (``graph=False``: PyNative);
  the p_sample update and the mask bookkeeping are a few element-wise ops outside it;
- the training loss is ``IDDPMLoss``, an ``nn.Cell`` whose coefficient tables are constant tensors and whose
  inputs are tensors only (x0, noise, t, frame mask, the model's own arguments), so a compiled train step can
  call it; the eps prediction enters the variational bound through ``ops.stop_gradient`` (upstream's detach),
  so the bound's gradient reaches only the variance channels.

Model arguments are passed positionally in the order of the model's ``construct`` signature (STDiT:
y, mask; STDiT2: y, mask, x_mask, num_frames, height, width, ar, fps; STDiT3: y, mask, x_mask, fps, height,
width), so one denoiser serves every v1.x model.
"""
import inspect
import time

import mindspore as ms
import numpy as np
from mindspore import mint, nn, ops

from ms_impl.schedulers.common import MsLatents, null_caption
from opensora_dual.sampling.iddpm import IDDPMSampler, cfg_channels

F32 = ms.float32
LOSS_TABLES = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "posterior_mean_coef1",
               "posterior_mean_coef2", "posterior_log_variance_clipped", "log_betas", "sqrt_recip_alphas_cumprod",
               "sqrt_recipm1_alphas_cumprod")


def _bcast(v, ndim):
    """numpy [B] (or scalar) -> ms [B, 1, 1, 1, 1] float32."""
    return ms.Tensor(np.asarray(v, np.float32).reshape(-1, *([1] * (ndim - 1))))


def _frames(m):
    return ms.Tensor(np.ascontiguousarray(np.asarray(m, bool)[:, None, :, None, None]))


def model_argument_names(model):
    """The model's ``construct`` parameters after (x, timestep), in order (up to *args/**kwargs)."""
    names = []
    for i, p in enumerate(inspect.signature(model.construct).parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        if i >= 2:
            names.append(p.name)
    return names


def _to_ms(v):
    if v is None or isinstance(v, ms.Tensor):
        return v
    a = np.asarray(v)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    elif a.dtype == np.int64:
        a = a.astype(np.int32)
    return ms.Tensor(a)


def model_arguments(model, values: dict) -> tuple:
    """Positional tail of the model call: ``values[name]`` (numpy or ms) for each signature name, None if absent;
    trailing Nones are dropped (the model's defaults). Names the model does not take are ignored, as the
    reference models' ``**kwargs`` ignore them."""
    names = model_argument_names(model)
    args = [_to_ms(values.get(n)) for n in names]
    while args and args[-1] is None:
        args.pop()
    return tuple(args)


class IDDPMDenoiser(nn.Cell):
    """[z; z] with y = [cond; null] in one forward -> the cond half's output with the first ``cfg_channel``
    channels guided, uncond + s (cond - uncond) (upstream's ``forward_with_cfg``)."""

    def __init__(self, model, cfg_channel):
        super().__init__(auto_prefix=False)
        self.model = model
        self.cfg_channel = cfg_channel

    def construct(self, z, t, guidance, *args):
        z_in = mint.cat([z, z], 0)
        t_in = mint.cat([t, t], 0)
        out = self.model(z_in, t_in, *args).astype(F32)
        b = z.shape[0]
        c = self.cfg_channel
        eps = out[b:, :c] + guidance * (out[:b, :c] - out[b:, :c])
        return mint.cat([eps, out[:b, c:]], 1)


class IDDPM(MsLatents, IDDPMSampler):
    def __init__(self, num_sampling_steps=None, timestep_respacing=None, noise_schedule="linear", use_kl=False,
                 sigma_small=False, predict_xstart=False, learn_sigma=True, rescale_learned_sigmas=False,
                 diffusion_steps=1000, cfg_scale=4.0, cfg_channel=None, version="v1.1", schedule_dtype=None,
                 **kwargs):
        super().__init__(num_sampling_steps, timestep_respacing, noise_schedule, use_kl, sigma_small,
                         predict_xstart, learn_sigma, rescale_learned_sigmas, diffusion_steps, cfg_scale,
                         cfg_channel, version, schedule_dtype)
        self.graph = kwargs.get("graph", True)
        self._denoisers = {}
        self._losses = {}
        self.compile_seconds = None

    def denoiser(self, model):
        key = id(model)
        if key not in self._denoisers:
            d = IDDPMDenoiser(model, cfg_channels(self.cfg_channel, model.out_channels))
            d.set_train(False)
            self._denoisers[key] = (d, ms.jit(d.construct) if self.graph else d.construct)
        return self._denoisers[key][1]

    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        B = z.shape[0]
        state = self.run_schedule(B, mask)
        y = y if isinstance(y, ms.Tensor) else ms.Tensor(np.asarray(y, np.float32))
        y_null = null_caption(model, y_null, B)   # upstream: the model's own null caption, repeated per prompt
        values = {"y": mint.cat([y, y_null.astype(y.dtype)], 0), "mask": y_mask}
        values.update({k: np.asarray(v) for k, v in (additional_args or {}).items()})
        state.update(values=values, guidance=ms.Tensor(np.float32(self.guidance(guidance_scale))))
        return state

    def draw(self, noise, z):
        return ms.Tensor(noise.randn(self.draw_shape(z.shape))[: z.shape[0]])

    def step(self, model, z, i, state, noise=None):
        z = z if isinstance(z, ms.Tensor) else ms.Tensor(np.asarray(z, np.float32))
        t_idx = int(state["indices"][i][0])
        c = state["coef"]
        msk = state["mask"]
        values = dict(state["values"])
        if msk.mask is not None:
            renoise, x_mask, reset = msk.step(t_idx)
            x0 = z
            x_noise = x0 * _bcast(c["sqrt_alphas_cumprod"][i], z.ndim) + self.draw(noise, z) * _bcast(
                c["sqrt_one_minus_alphas_cumprod"][i], z.ndim)
            z = mint.where(_frames(renoise), x_noise, x0)
            values["x_mask"] = np.concatenate([x_mask, x_mask])
        start = time.perf_counter()
        out = self.denoiser(model)(z, ms.Tensor(state["timesteps"][i]), state["guidance"],
                                   *model_arguments(model, values))
        C = z.shape[1]
        eps, v = out[:, :C], out[:, C:]
        frac = (v + 1) / 2
        log_var = frac * _bcast(c["log_betas"][i], z.ndim) + (1 - frac) * _bcast(
            c["posterior_log_variance_clipped"][i], z.ndim)
        pred_x0 = _bcast(c["sqrt_recip_alphas_cumprod"][i], z.ndim) * z - _bcast(
            c["sqrt_recipm1_alphas_cumprod"][i], z.ndim) * eps
        mean = _bcast(c["posterior_mean_coef1"][i], z.ndim) * pred_x0 + _bcast(
            c["posterior_mean_coef2"][i], z.ndim) * z
        sample = mean + _bcast(state["nonzero"][i], z.ndim) * mint.exp(0.5 * log_var) * self.draw(noise, z)
        if msk.mask is not None:
            sample = mint.where(_frames(reset), x0, sample)
        return self.timed(i, start, sample)

    # ---- training ------------------------------------------------------------------------------------
    def loss_cell(self, model):
        key = id(model)
        if key not in self._losses:
            self._losses[key] = IDDPMLoss(model, self.schedule)
        return self._losses[key]

    def training_losses(self, model, x_start, model_kwargs=None, noise=None, t=None, mask=None):
        """Upstream's hybrid loss per sample: {"loss", "mse", "vb"} ([B] each); see the reference twin."""
        frame_mask = None if mask is None else ms.Tensor(np.asarray(mask, bool))
        loss, mse, vb = self.loss_cell(model)(_to_ms(np.asarray(x_start, np.float32)),
                                              _to_ms(np.asarray(noise, np.float32)),
                                              ms.Tensor(np.asarray(t).astype(np.int32)), frame_mask,
                                              *model_arguments(model, dict(model_kwargs or {})))
        return {"loss": loss, "mse": mse, "vb": vb}


class IDDPMLoss(nn.Cell):
    """construct(x0, noise, t, frame_mask, *model_args) -> (loss, mse, vb), each [B]. t: int32 [B] indices of
    ``schedule`` (unrespaced for training); frame_mask: bool [B, T] or None; model_args: the model's positional
    arguments after (x, timestep). Tables are constants; everything is float32 in upstream's order."""

    def __init__(self, model, schedule):
        super().__init__(auto_prefix=False)
        self.model = model
        for name in LOSS_TABLES:
            setattr(self, "tab_" + name, ms.Tensor(schedule.table32(name)))
        self.timestep_map = ms.Tensor(schedule.timestep_map.astype(np.float32))
        self.log2 = float(np.log(2.0))

    def _g(self, table, t):
        return ops.gather(table, t, 0).reshape(-1, 1, 1, 1, 1)

    def _mean_flat(self, x, m):
        if m is None:
            return x.reshape(x.shape[0], -1).mean(1)
        B, T = x.shape[0], x.shape[2]
        x = mint.permute(x, (0, 2, 1, 3, 4)).reshape(B, T, -1)
        mf = m.astype(F32)
        return (x * mf.reshape(B, T, 1)).sum(1).sum(1) / (mf.sum(1) * x.shape[-1])

    def _cdf(self, x):
        return 0.5 * (1.0 + ops.tanh(float(np.sqrt(2.0 / np.pi)) * (x + 0.044715 * ops.pow(x, 3))))

    def _dgll(self, x, means, log_scales):
        centered = x - means
        inv_stdv = mint.exp(-log_scales)
        cdf_plus = self._cdf(inv_stdv * (centered + 1.0 / 255.0))
        cdf_min = self._cdf(inv_stdv * (centered - 1.0 / 255.0))
        log_cdf_plus = mint.log(mint.clamp(cdf_plus, min=1e-12))
        log_one_minus_cdf_min = mint.log(mint.clamp(1.0 - cdf_min, min=1e-12))
        log_delta = mint.log(mint.clamp(cdf_plus - cdf_min, min=1e-12))
        return mint.where(x < -0.999, log_cdf_plus, mint.where(x > 0.999, log_one_minus_cdf_min, log_delta))

    def construct(self, x0, noise, t, frame_mask, *model_args):
        sa = self._g(self.tab_sqrt_alphas_cumprod, t)
        s1 = self._g(self.tab_sqrt_one_minus_alphas_cumprod, t)
        x_t = sa * x0 + s1 * noise
        if frame_mask is not None:
            t0 = ops.zeros_like(t)
            x_t0 = self._g(self.tab_sqrt_alphas_cumprod, t0) * x0 + self._g(
                self.tab_sqrt_one_minus_alphas_cumprod, t0) * noise
            b, n_t = frame_mask.shape[0], frame_mask.shape[1]
            x_t = mint.where(frame_mask.reshape(b, 1, n_t, 1, 1), x_t, x_t0)
        out = self.model(x_t, ops.gather(self.timestep_map, t, 0), *model_args).astype(F32)
        C = x0.shape[1]
        eps = out[:, :C]
        v = out[:, C:]
        true_mean = self._g(self.tab_posterior_mean_coef1, t) * x0 + self._g(self.tab_posterior_mean_coef2, t) * x_t
        true_log_var = self._g(self.tab_posterior_log_variance_clipped, t)
        frac = (v + 1) / 2
        log_var = frac * self._g(self.tab_log_betas, t) + (1 - frac) * true_log_var
        pred_x0 = self._g(self.tab_sqrt_recip_alphas_cumprod, t) * x_t - self._g(
            self.tab_sqrt_recipm1_alphas_cumprod, t) * ops.stop_gradient(eps)
        mean = self._g(self.tab_posterior_mean_coef1, t) * pred_x0 + self._g(self.tab_posterior_mean_coef2, t) * x_t
        kl = 0.5 * (-1.0 + log_var - true_log_var + mint.exp(true_log_var - log_var)
                    + ((true_mean - mean) ** 2) * mint.exp(-log_var))
        kl = self._mean_flat(kl, frame_mask) / self.log2
        nll = self._mean_flat(-self._dgll(x0, mean, 0.5 * log_var), frame_mask) / self.log2
        vb = mint.where(t == 0, nll, kl)
        mse = self._mean_flat((noise - eps) ** 2, frame_mask)
        return mse + vb, mse, vb
