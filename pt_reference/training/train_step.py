"""One Open-Sora training step, the reference: rectified flow (1.2, the default) or IDDPM (1.0 / 1.1).
Mirrors ``v1.2.0:scripts/train.py``'s inner loop and ``opensora/schedulers/rf/__init__.py::RFLOW.training_losses``:

    x_t = (1 - t/1000) x0 + (t/1000) noise      (frames with x_mask False: x0 exactly)
    loss = mean over the batch of [ sum over x_mask-True frames of (v_pred - (x0 - noise))^2
                                    / (mask.sum(1) * C * H * W) ]     (no mask: plain MSE)
    AdamW (eps 1e-15) -> global-norm clipping (1.0) -> LinearWarmupLR -> EMA (fp32 copy, decay 0.99)

With ``objective="iddpm"`` the loss is upstream's hybrid loss (``v1.0.0`` / ``v1.1.0``
``IDDPM.training_losses(...)["loss"].mean()``: MSE on eps + the variational bound in bits; t integer in
[0, 1000); v1.1 frame masks: mask-False frames get q_sample(x0, 0, noise) and no loss), computed by
``pt_reference.schedulers.iddpm.IDDPM`` (unrespaced). Everything else is shared by both objectives.

With ``objective="flow_matching"`` (Open-Sora 2.0, the MMDiT) the batch is 2.0's (x0 unpacked, txt, y_vec,
txt_null, y_vec_null, optional ref), the randoms a ``FlowMatchingBatchNoise`` (t, x1, the two dropout uniform
vectors, the condition types), and ``opensora_dual.training.flow_matching_inputs`` builds the packed model inputs
and the target in numpy (both twins the same numbers); the loss is ``F.mse_loss(pred.float(), v)`` (plain mean).

Every random number (t, noise, caption drop, frame masks) comes from ``opensora_dual.training.TrainBatchNoise``
(IDDPM: ``iddpm_noise``), drawn in numpy, so the MindSpore port (``ms_impl.training``) can be fed the same numbers.

The model call works for the three families: the keyword arguments the model's ``forward`` takes are resolved
once (STDiT: y, mask; STDiT2: y, mask, x_mask, num_frames, height, width, ar, fps; STDiT3: y, mask, x_mask, fps,
height, width) and only those are passed.
"""
import copy
import inspect
from typing import Dict, Optional

import numpy as np
import torch
import torch.utils.checkpoint

from opensora_dual.training.flow_matching import (OBJECTIVE as FLOW_MATCHING, TrainStepInputs, flow_matching_settings)
from opensora_dual.training.iddpm import integer_timesteps, objective_settings
from opensora_dual.training.rflow import (TrainBatchNoise, TrainingDivergedError, ema_tracked, linear_warmup_lr,
                                          split_batch)

# batch entries a model may take, with their dtype ("ar": STDiT2's aspect ratio; x_mask comes from the noise)
MODEL_INPUTS = {"y": torch.float32, "mask": None, "fps": torch.float32, "height": torch.float32,
                "width": torch.float32, "num_frames": torch.float32, "ar": torch.float32}


def rflow_training_loss(model, x0, noise, t, timepoints, model_kwargs, x_mask=None, drop_ids=None):
    """Upstream's ``training_losses(...)["loss"].mean()`` in fp32.

    ``timepoints`` = 1 - t/num_timesteps ([B] float32, ``TrainBatchNoise.timepoints()``); ``drop_ids`` [B]
    (1 = replace the caption by ``model.y_embedder.y_embedding`` through the model's own ``token_drop``, i.e.
    upstream's caption dropout with the decision made outside); ``x_mask`` [B, T] bool (True = generated).
    The velocity is the first C output channels (upstream ``chunk(2, dim=1)[0]``: the same for pred_sigma)."""
    model_kwargs = dict(model_kwargs)
    tp = timepoints.reshape(-1, 1, 1, 1, 1)
    x_t = tp * x0 + (1 - tp) * noise
    if x_mask is not None:
        x_t = torch.where(x_mask[:, None, :, None, None], x_t, x0)   # add_noise(x0, noise, 0) == x0
        model_kwargs["x_mask"] = x_mask
    if drop_ids is not None:
        model_kwargs["y"] = model.y_embedder.token_drop(model_kwargs["y"], drop_ids)
    out = model(x_t, t, **model_kwargs)
    pred = out[:, :x0.shape[1]].float()
    err = (pred - (x0 - noise)).pow(2)
    if x_mask is None:
        per_sample = err.mean(dim=list(range(1, err.dim())))
    else:  # mean_flat(..., mask): "b c t h w -> b t (c h w)"
        B, C, T = err.shape[:3]
        err = err.permute(0, 2, 1, 3, 4).reshape(B, T, -1)
        m = x_mask.to(err.dtype)
        denom = m.sum(dim=1) * err.shape[-1]
        per_sample = (err * m.unsqueeze(2)).sum(dim=1).sum(dim=1) / denom
    return per_sample.mean()


@torch.no_grad()
def update_ema(ema_model, model, decay):
    """Upstream's ``update_ema`` (unsharded form): ema <- decay*ema + (1-decay)*param for every named
    parameter except "pos_embed" and those with requires_grad False; buffers are not touched."""
    ema_params = dict(ema_model.named_parameters())
    for name, param in model.named_parameters():
        if not ema_tracked(name, param.requires_grad):
            continue
        ema_params[name].mul_(decay).add_(param.data.float(), alpha=1 - decay)


def model_input_names(model):
    """The keyword arguments of ``model.forward`` after (x, timestep), in order (up to *args/**kwargs)."""
    names = []
    for i, p in enumerate(inspect.signature(model.forward).parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        if i >= 2:
            names.append(p.name)
    return names


def iddpm_training_loss(diffusion, model, x0, noise, t, model_kwargs, x_mask=None, drop_ids=None):
    """Upstream's ``IDDPM.training_losses(model, x0, t, model_args, mask=x_mask)["loss"].mean()`` with the
    caption dropout decided outside (``drop_ids``, through the model's ``token_drop``); ``t`` int64 [B];
    ``x_mask`` [B, T] bool goes to the loss as the frame mask and to the model as its ``x_mask`` (v1.1)."""
    model_kwargs = dict(model_kwargs)
    if x_mask is not None:
        model_kwargs["x_mask"] = x_mask
    if drop_ids is not None:
        model_kwargs["y"] = model.y_embedder.token_drop(model_kwargs["y"], drop_ids)
    out = diffusion.training_losses(model, x0, model_kwargs=model_kwargs, noise=noise, t=t, mask=x_mask)
    return out["loss"].mean()


def flow_matching_training_loss(model, inputs):
    """Upstream 2.0's ``F.mse_loss(model(**inp).float(), v_t.float(), reduction="mean")``; ``inputs`` from
    ``flow_matching_inputs`` (numpy)."""
    out = model(_t(inputs["img"]), _t(inputs["img_ids"]), _t(inputs["txt"]), _t(inputs["txt_ids"]),
                _t(inputs["timesteps"]), _t(inputs["y_vec"]), cond=_t(inputs["cond"]), guidance=_t(inputs["guidance"]))
    return torch.nn.functional.mse_loss(out.float(), _t(inputs["target"]).float(), reduction="mean")


def _blocks(model):
    if hasattr(model, "blocks"):   # STDiT / STDiT2: one list of spatial-temporal blocks
        return list(model.blocks)
    return list(getattr(model, "spatial_blocks", [])) + list(getattr(model, "temporal_blocks", []))


def set_grad_checkpointing(model, enabled=True):
    """Recompute every block (STDiT, STDiT2, STDiT3) in the backward pass (upstream ``auto_grad_checkpoint``:
    ``torch.utils.checkpoint.checkpoint(block, ..., use_reentrant=False)``). Done by an instance-level
    ``forward`` on each block, so the model code and the state-dict keys are untouched. The MMDiT checkpoints
    its first ``grad_ckpt_settings`` = (n_double, n_single) blocks itself: enabled sets them to every block,
    disabled restores the model's own settings."""
    if hasattr(model, "double_blocks"):
        own = model.__dict__.setdefault("_own_grad_ckpt_settings", model.grad_ckpt_settings)
        model.grad_ckpt_settings = (len(model.double_blocks), len(model.single_blocks)) if enabled else own
        return model
    for block in _blocks(model):
        if "forward" in block.__dict__:          # already wrapped: restore the class forward
            del block.forward
        if enabled:
            orig = block.forward

            def forward(*args, _orig=orig, **kwargs):
                return torch.utils.checkpoint.checkpoint(_orig, *args, use_reentrant=False, **kwargs)

            block.forward = forward
    return model


def _t(v, dtype=None):
    if v is None:
        return None
    a = torch.from_numpy(np.ascontiguousarray(v))
    return a if dtype is None else a.to(dtype)


class TrainStep(TrainStepInputs):
    """Owns the optimizer, the lr schedule, the EMA copy and the step counters of one training run.

    ``step(batch, noise=None)``: ``batch`` is a dict of numpy arrays -- ``x0`` [B, C, T, H, W] latents, ``y``
    [B, 1, L, caption_channels], ``mask`` [B, L] text mask (optional), ``fps``, ``height``, ``width``,
    ``num_frames`` [B] (pixels), ``ar`` [B] (STDiT2); ``noise`` a ``TrainBatchNoise`` (None: drawn from this
    step's generator with the v1.2 defaults, or ``iddpm_noise``'s). Only the entries the model's ``forward``
    takes are passed to it. Returns ``dict(loss, grad_norm, lr, skipped)`` (``grads`` too with keep_grads=True:
    the accumulated, unclipped gradient of every trainable parameter).

    Caption dropout: the step owns it. ``model.y_embedder.uncond_prob`` is read once (``caption_drop_prob``,
    used for drawn noise) and set to 0 so the model never draws its own; the drop ids of ``noise`` are applied
    with the model's ``token_drop``.

    Objective: ``objective="rflow"`` (default) or ``"iddpm"`` with ``objective_kwargs`` (the IDDPM constructor's
    training arguments, e.g. ``version`` "v1.0"/"v1.1"; ``opensora_dual.training.objective_settings``).
    """

    def __init__(self, model, lr, weight_decay=0.0, eps=1e-15, betas=(0.9, 0.999), grad_clip=1.0, warmup_steps=0,
                 ema_decay=0.99, grad_accum=1, recompute=False, seed=0, objective="rflow", objective_kwargs=None):
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.model = model
        self.objective = objective
        self.fm = None
        if objective == FLOW_MATCHING:
            self.fm = flow_matching_settings(objective_kwargs)
            iddpm_kwargs = {}
        else:
            iddpm_kwargs = objective_settings(objective, objective_kwargs)
        self.diffusion = None
        if objective == "iddpm":
            from pt_reference.schedulers.iddpm import IDDPM

            self.diffusion = IDDPM(**iddpm_kwargs)
        self.model_inputs = model_input_names(model)
        self.base_lr, self.weight_decay, self.eps, self.betas = lr, weight_decay, eps, tuple(betas)
        self.grad_clip, self.warmup_steps = grad_clip, warmup_steps
        self.ema_decay, self.grad_accum, self.recompute = ema_decay, grad_accum, recompute
        self.rng = np.random.default_rng(seed)
        if self.fm is not None:   # 2.0: the T5 / CLIP dropout of the randoms (dropout_ratio), no y_embedder
            self.caption_drop_prob = None
        else:
            self.caption_drop_prob = float(model.y_embedder.uncond_prob)
            model.y_embedder.uncond_prob = 0.0
        model.train()
        self.named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW([p for _, p in self.named_params], lr=lr, betas=self.betas, eps=eps,
                                           weight_decay=weight_decay)
        self.ema = None
        if ema_decay is not None:  # upstream: deepcopy -> fp32 -> requires_grad False -> update_ema(decay=0)
            self.ema = copy.deepcopy(model).float().eval()
            set_grad_checkpointing(self.ema, False)
            for p in self.ema.parameters():
                p.requires_grad_(False)
        set_grad_checkpointing(model, recompute)
        self.global_step = 0     # step() calls that completed (updates + skipped)
        self.update_count = 0    # optimizer updates applied (drives the lr schedule and bias correction)
        self.skipped_steps = 0   # always 0 here (fp32, no loss scaling); kept for the port's interface

    # ---- state -----------------------------------------------------------------------------------------
    def lr_at(self, update: int) -> float:
        return linear_warmup_lr(update, self.base_lr, self.warmup_steps)

    def parameters(self) -> Dict[str, np.ndarray]:
        return {n: p.detach().float().numpy().copy() for n, p in self.named_params}

    def ema_state(self) -> Dict[str, np.ndarray]:
        if self.ema is None:
            return {}
        tracked = {n for n, _ in self.named_params if ema_tracked(n, True)}
        return {n: p.detach().numpy().copy() for n, p in self.ema.named_parameters() if n in tracked}

    def optimizer_state(self) -> Dict[str, Dict[str, np.ndarray]]:
        out = {}
        for n, p in self.named_params:
            st = self.optimizer.state.get(p, {})
            if st:
                out[n] = {"exp_avg": st["exp_avg"].numpy().copy(), "exp_avg_sq": st["exp_avg_sq"].numpy().copy()}
        return out

    def state_dict(self) -> dict:
        """Everything besides the weights that the next ``step`` depends on: ``exp_avg``/``exp_avg_sq`` (name ->
        moment; zeros before the first update), ``ema``, ``counters``, ``loss_scale`` (None: the reference
        has no loss scaling) and ``rng``. The same keys as the port's ``TrainStep.state_dict``."""
        moments = {k: {} for k in ("exp_avg", "exp_avg_sq")}
        for n, p in self.named_params:
            st = self.optimizer.state.get(p, {})
            for k in moments:
                moments[k][n] = st[k].numpy().copy() if st else np.zeros(tuple(p.shape), np.float32)
        return dict(**moments, ema=self.ema_state(),
                    counters=dict(global_step=self.global_step, update_count=self.update_count,
                                  skipped_steps=self.skipped_steps),
                    loss_scale=None, rng=self.rng.bit_generator.state)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Restore ``state_dict()`` (written by either twin): AdamW's moments and step, the EMA, the counters."""
        names = {n for n, _ in self.named_params}
        for key in ("exp_avg", "exp_avg_sq"):
            got = set(state.get(key) or {})
            if strict and got != names:
                raise KeyError(f"TrainStep.load_state_dict: {key} does not match the trainable parameters "
                               f"(missing {sorted(names - got)[:5]}, unexpected {sorted(got - names)[:5]})")
        c = state.get("counters") or {}
        self.global_step = int(c.get("global_step", self.global_step))
        self.update_count = int(c.get("update_count", self.update_count))
        self.skipped_steps = int(c.get("skipped_steps", self.skipped_steps))
        for n, p in self.named_params:
            if self.update_count and n in (state.get("exp_avg") or {}):
                self.optimizer.state[p] = {
                    "step": torch.tensor(float(self.update_count)),
                    "exp_avg": torch.as_tensor(np.array(state["exp_avg"][n], np.float32)).to(p.dtype),
                    "exp_avg_sq": torch.as_tensor(np.array(state["exp_avg_sq"][n], np.float32)).to(p.dtype)}
        if self.ema is not None and state.get("ema"):
            ema_params = dict(self.ema.named_parameters())
            tracked = {n for n, _ in self.named_params if ema_tracked(n, True)}
            got = set(state["ema"])
            if strict and got != tracked:
                raise KeyError(f"TrainStep.load_state_dict: ema does not match the EMA-tracked parameters "
                               f"(missing {sorted(tracked - got)[:5]}, unexpected {sorted(got - tracked)[:5]})")
            with torch.no_grad():
                for n in got & tracked:
                    ema_params[n].copy_(torch.as_tensor(np.asarray(state["ema"][n])))
        if state.get("rng"):
            self.rng.bit_generator.state = state["rng"]

    # ---- the step --------------------------------------------------------------------------------------
    def loss(self, batch, noise: TrainBatchNoise):
        """The fp32 loss of one (micro-)batch; differentiable."""
        if self.fm is not None:
            return flow_matching_training_loss(self.model, self.flow_matching_inputs(batch, noise))
        kwargs = {k: _t(batch.get(k), MODEL_INPUTS[k]) for k in self.model_inputs if k in MODEL_INPUTS}
        if noise.x_mask is not None and "x_mask" not in self.model_inputs:
            raise ValueError(f"{type(self.model).__name__} takes no x_mask: it cannot train with frame masks")
        x0, x_mask, drop_ids = _t(batch["x0"], torch.float32), _t(noise.x_mask), _t(noise.drop_ids.astype(np.int64))
        if self.objective == "iddpm":
            return iddpm_training_loss(self.diffusion, self.model, x0, _t(noise.noise),
                                       _t(integer_timesteps(noise)), kwargs, x_mask=x_mask, drop_ids=drop_ids)
        return rflow_training_loss(self.model, x0, _t(noise.noise), _t(noise.t), _t(noise.timepoints()), kwargs,
                                   x_mask=x_mask, drop_ids=drop_ids)

    def step(self, batch, noise: Optional[TrainBatchNoise] = None, keep_grads=False) -> dict:
        if noise is None:
            noise = self.draw_noise(batch)
        k = self.grad_accum
        micro_batches, micro_noises = split_batch(batch, k), noise.split(k)
        lr = self.lr_at(self.update_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for i, (mb, mn) in enumerate(zip(micro_batches, micro_noises)):
            loss = self.loss(mb, mn)
            value = float(loss.detach())
            if not np.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDivergedError(self.global_step, value, i, k)
            (loss / k).backward()
            losses.append(value)
        params = [p for _, p in self.named_params]
        for p in params:  # a parameter the loss does not reach has a zero gradient (as in the port)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = {n: p.grad.detach().numpy().copy() for n, p in self.named_params} if keep_grads else None
        if self.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            update_ema(self.ema, self.model, self.ema_decay)
        self.update_count += 1
        self.global_step += 1
        out = dict(loss=float(np.mean(losses)), grad_norm=float(grad_norm), lr=lr, skipped=False)
        if keep_grads:
            out["grads"] = grads
        return out
