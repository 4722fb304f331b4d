"""The sampling loop every sampler twin shares (rectified flow, IDDPM, DPM-Solver).

A sampler twin implements three things with its framework's tensors:

- ``as_latent(z)``: numpy or framework array -> the twin's tensor;
- ``prepare(z, y, y_mask, additional_args, mask, guidance_scale, y_null, model)`` -> ``state``: a dict with
  everything one run needs besides the model and the latent, at least ``state["timesteps"]`` ([steps, B], what
  the model receives at each step) -- the parity engine (``parity_tests.sampling``) prepares once and then
  drives ``step`` itself, feeding the reference latent at every step;
- ``step(model, z, i, state, noise)`` -> the latent after step ``i``. Every random number is drawn from
  ``noise.randn(shape)`` (``opensora_dual.sampling.noise``), the same number of draws at every step.

``needs_noise(state)`` says whether the run draws at all (a run that does and has no source is an error).
"""


class SamplerBase:
    num_sampling_steps: int
    cfg_scale: float

    def guidance(self, guidance_scale=None):
        """``guidance_scale`` overrides ``cfg_scale`` (upstream's ``sample`` argument)."""
        return self.cfg_scale if guidance_scale is None else guidance_scale

    def as_latent(self, z):
        """numpy or framework array -> the twin's tensor (twins override)."""
        raise NotImplementedError

    def needs_noise(self, state) -> bool:
        return False

    def noise_draws(self, batch: int, latent_shape, has_mask: bool) -> list:
        """The shapes of the draws one run takes from the noise source after the starting latent, in order
        (``scripts/sample.py`` replays them for skipped samples so the stream stays aligned)."""
        return []

    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        raise NotImplementedError

    def step(self, model, z, i, state, noise=None):
        raise NotImplementedError

    def sample(self, model, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, noise=None,
               progress=True, y_null=None, callback=None):
        """z [B, C, T, H, W] starting noise (reference latents already pasted by ``apply_mask_strategy``);
        y [B, 1, L, C] caption features; mask [B, T] conditioning mask (None = plain t2v, no x_mask).
        ``callback(i, z)`` after every step. The twins' ``prepare`` and ``step`` do the tensor work."""
        from tqdm import tqdm

        z = self.as_latent(z)
        state = self.prepare(z, y, y_mask, additional_args, mask, guidance_scale, y_null, model)
        if noise is None and self.needs_noise(state):
            raise ValueError(self.noise_error)
        for i in tqdm(range(len(state["timesteps"])), desc="steps", leave=False, disable=not progress):
            z = self.step(model, z, i, state, noise)
            if callback is not None:
                callback(i, z)
        return z

    noise_error = "this sampler draws random numbers during the run: pass a noise source"
