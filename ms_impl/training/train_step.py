"""One Open-Sora training step (rectified flow for 1.2, the default; IDDPM for 1.0 / 1.1), MindSpore port of
``pt_reference/training/train_step.py``.

Same class name, constructor arguments and ``step(batch, noise)`` contract as the reference; same losses (upstream
``RFLOW.training_losses``; with ``objective="iddpm"`` the hybrid loss of ``IDDPM.training_losses`` through
``ms_impl.schedulers.iddpm.IDDPMLoss``), same AdamW update (torch's, written out: see ``AdamWUpdate``), same global-norm
clipping, LinearWarmupLR and EMA rule (``opensora_dual.training``). What the port adds:

- graphs: the forward + backward of a micro-batch is one ``ms.jit`` graph per input signature (shapes, dtypes,
  which optional inputs are present), compiled on first use and cached on the model (a new TrainStep on the
  same model reuses it; replacing weights with ``set_data`` -- the converters' path -- invalidates it, as a
  compiled graph keeps reading the old data: use ``load_weights`` / ``load_weights_inplace`` to load weights
  into a model whose graphs are compiled); the gradient norm and the optimizer/EMA update are two more graphs
  compiled once per TrainStep (``jit_update``, default = ``jit``; False: PyNative, ~1.5 s per step for
  STDiT3-S/2 on this CPU, no compile);
- mixed precision: ``compute_dtype="fp16"`` calls ``ms_impl.layers.set_compute_dtype(model, ms.float16)``
  (matmuls/convs in fp16; norms, softmax, the model output and the loss in fp32; weights, gradients, Adam
  moments and the EMA stay fp32);
- dynamic loss scaling (default with fp16): the loss is multiplied by the scale before the backward pass and
  the gradients divided by it; a step whose gradients are not finite is skipped -- weights, Adam moments, EMA
  and the lr schedule position unchanged -- counted in ``skipped_steps``, and the scale divided by
  ``scale_factor``; after ``scale_window`` good steps in a row it is multiplied by it (the rule of
  ``mindspore.amp.DynamicLossScaler``; kept on the host so the skip decision needs no graph control flow);
- recompute: ``recompute=True`` calls ``model.set_recompute(True)`` (every block's activations recomputed in
  the backward pass);
- gradient accumulation: ``grad_accum=k`` splits the batch into k micro-batches, each loss scaled by 1/k,
  gradients summed, one update;
- divergence: a NaN/Inf loss (or a non-finite gradient without loss scaling) raises
  ``TrainingDivergedError`` naming the step, before anything is updated.

Open-Sora 2.0 (``objective="flow_matching"``, the MMDiT): the model inputs and the target are built in numpy by
``opensora_dual.training.flow_matching_inputs`` (the same numbers as the reference), the loss cell is
``FlowMatchingLoss`` (plain fp32 MSE); the rest of the step (graphs, AdamW, clipping, EMA, loss scaling,
accumulation, recompute = ``model.set_recompute(True)``) is shared.

Model arguments: a graph has one fixed positional signature, so the loss cells take the model's arguments after
``y`` positionally, in the order of the model's ``construct`` (resolved once at construction with
``ms_impl.schedulers.iddpm.model_argument_names``): STDiT (mask), STDiT2 (mask, x_mask, num_frames, height,
width, ar, fps), STDiT3 (mask, x_mask, fps, height, width); trailing Nones are dropped (the model's defaults).
"""
from typing import Dict, Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops

from ms_impl.schedulers.iddpm import IDDPM, IDDPMLoss, model_argument_names
from opensora_dual.training.flow_matching import (OBJECTIVE as FLOW_MATCHING, TrainStepInputs, flow_matching_settings,
                                                  objective_key)
from opensora_dual.training.iddpm import integer_timesteps, objective_settings
from opensora_dual.training.rflow import (TrainBatchNoise, TrainingDivergedError, ema_tracked, linear_warmup_lr,
                                          split_batch)

F32 = ms.float32
# batch entries a model may take after y, with their dtype (x_mask comes from the noise; "ar": STDiT2)
MODEL_INPUTS = {"mask": np.int32, "fps": np.float32, "height": np.float32, "width": np.float32,
                "num_frames": np.float32, "ar": np.float32}


def model_tail_names(model):
    """The model's ``construct`` arguments after (x, timestep, y), in order."""
    names = model_argument_names(model)
    if not names or names[0] != "y":
        raise ValueError(f"{type(model).__name__}.construct must take (x, timestep, y, ...), got {names}")
    return names[1:]


class RFlowLoss(nn.Cell):
    """Upstream's ``training_losses(...)["loss"].mean()`` (fp32), same arithmetic as the reference's
    ``rflow_training_loss``. Inputs: x0, noise [B, C, T, H, W]; t, timepoints (1 - t/1000) [B]; drop_ids [B]
    int (1 = null caption via the model's ``token_drop``) or None; x_mask [B, T] bool or None (the loss's frame
    mask); y [B, 1, L, Cc]; ``model_tail``: the model's arguments after y in its ``construct`` order
    (``model_tail_names``; x_mask among them for the models that take it)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names
        self.model = model
        self.out_c = model.in_channels

    def construct(self, x0, noise, t, timepoints, drop_ids, x_mask, y, *model_tail):
        B, T = x0.shape[0], x0.shape[2]
        tp = timepoints.reshape(B, 1, 1, 1, 1)
        x_t = tp * x0 + (1 - tp) * noise
        if x_mask is not None:
            x_t = mint.where(x_mask.reshape(B, 1, T, 1, 1), x_t, x0)
        if drop_ids is not None:
            y = self.model.y_embedder.token_drop(y, drop_ids)
        out = self.model(x_t, t, y, *model_tail)
        pred = out[:, :self.out_c].astype(F32)
        d = pred - (x0 - noise)
        err = d * d
        if x_mask is None:
            per_sample = err.reshape(B, -1).mean(axis=1)
        else:
            err = mint.permute(err, (0, 2, 1, 3, 4)).reshape(B, T, -1)
            m = x_mask.astype(F32)
            denom = m.sum(axis=1) * err.shape[-1]
            per_sample = (err * m.reshape(B, T, 1)).sum(axis=1).sum(axis=1) / denom
        return per_sample.mean()


class IDDPMTrainLoss(nn.Cell):
    """Upstream's IDDPM ``training_losses(...)["loss"].mean()`` (v1.0 / v1.1 hybrid loss), same inputs as
    ``RFlowLoss``: t is int32 [B] (indices of the unrespaced ``schedule``), ``timepoints`` is unused (None);
    x_mask [B, T] is the v1.1 frame mask (mask-False frames: q_sample(x0, 0, noise), no loss). The caption
    dropout goes through the model's ``token_drop``; the loss itself is ``ms_impl.schedulers.iddpm.IDDPMLoss``."""

    def __init__(self, model, schedule):
        super().__init__(auto_prefix=False)
        self.hybrid = IDDPMLoss(model, schedule)

    def construct(self, x0, noise, t, timepoints, drop_ids, x_mask, y, *model_tail):
        if drop_ids is not None:
            y = self.hybrid.model.y_embedder.token_drop(y, drop_ids)
        loss, _, _ = self.hybrid(x0, noise, t, x_mask, y, *model_tail)
        return loss.mean()


class FlowMatchingLoss(nn.Cell):
    """Upstream 2.0's ``F.mse_loss(model(**inp).float(), v_t.float(), reduction="mean")``, the reference's
    ``flow_matching_training_loss``: inputs from ``flow_matching_inputs`` (cond / guidance None when the model has
    no ``cond_in`` / ``guidance_in``)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names
        self.model = model

    def construct(self, img, img_ids, txt, txt_ids, timesteps, y_vec, target, cond, guidance):
        out = self.model(img, img_ids, txt, txt_ids, timesteps, y_vec, cond, guidance)
        d = out.astype(F32) - target
        return (d * d).mean()


class AdamWUpdate(nn.Cell):
    """``torch.optim.AdamW`` (single-tensor CPU path) written out with ops, plus the clip coefficient and the
    EMA, all fp32; the state lives in Parameters written with ``ops.assign``:

        g   <- g * clip_coef
        p   <- p * (1 - lr*wd)                                 (decoupled weight decay)
        m   <- m + (1 - b1) (g - m)                            (torch's lerp)
        v   <- v * b2 + (1 - b2) g g
        p   <- p - lr/(1 - b1^n) * m / (sqrt(v)/sqrt(1 - b2^n) + eps)
        ema <- ema * decay + (1 - decay) p

    ``mindspore.nn.AdamWeightDecay`` is NOT this: it has no bias correction (its first update is
    ~(1-b1)/sqrt(1-b2) = 3.16x torch's), see docs/training.md.
    """

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-15, weight_decay=0.0, ema_decay=None):
        super().__init__(auto_prefix=False)
        self.params = ms.ParameterTuple(params)
        self.n = len(params)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        # 1 - beta in float64 on the host, as torch does: in a graph, ``1 - self.beta2`` is evaluated in float32
        # (1 - float32(0.999) = 0.000999987, 1.3e-5 off), which moved the second moment measurably.
        self.one_minus_beta1, self.one_minus_beta2 = 1.0 - self.beta1, 1.0 - self.beta2
        self.weight_decay = float(weight_decay)
        zeros = [np.zeros(p.shape, np.float32) for p in params]
        self.exp_avg = ms.ParameterTuple([Parameter(Tensor(z), name="exp_avg." + p.name, requires_grad=False)
                                          for z, p in zip(zeros, params)])
        self.exp_avg_sq = ms.ParameterTuple([Parameter(Tensor(z.copy()), name="exp_avg_sq." + p.name,
                                                       requires_grad=False) for z, p in zip(zeros, params)])
        self.use_ema = ema_decay is not None
        # The EMA tracks the parameters upstream's update_ema moves (all trainable ones but "pos_embed").
        self.ema_index = tuple(i for i, p in enumerate(params) if ema_tracked(p.name, True)) if self.use_ema else ()
        self.ema = ms.ParameterTuple([Parameter(Tensor(params[i].asnumpy().astype(np.float32)),
                                                name="ema." + params[i].name, requires_grad=False)
                                      for i in self.ema_index])

    def construct(self, grads, clip_coef, decay_factor, step_size, bc2_sqrt, ema_decay, ema_one_minus_decay):
        """All scalars are float32 tensors computed on the host in float64 (decay_factor = 1 - lr*wd, step_size
        = lr/(1 - b1^n), bc2_sqrt = sqrt(1 - b2^n), ema_one_minus_decay = 1 - decay), as torch computes them."""
        b2, c1, c2, eps = self.beta2, self.one_minus_beta1, self.one_minus_beta2, self.eps
        new_params = []
        for i in range(self.n):
            g = grads[i] * clip_coef
            p = self.params[i] * decay_factor
            m = self.exp_avg[i] + c1 * (g - self.exp_avg[i])
            v = self.exp_avg_sq[i] * b2 + c2 * (g * g)
            denom = mint.sqrt(v) / bc2_sqrt + eps
            p = p - step_size * (m / denom)
            ops.assign(self.exp_avg[i], m)
            ops.assign(self.exp_avg_sq[i], v)
            ops.assign(self.params[i], p)
            new_params.append(p)
        if self.use_ema:
            for j, i in enumerate(self.ema_index):
                ops.assign(self.ema[j], self.ema[j] * ema_decay + ema_one_minus_decay * new_params[i])
        return clip_coef


def _global_norm(grads):
    """(total 2-norm, all finite) of a gradient tuple: sqrt(sum_i ||g_i||^2), as torch's clip_grad_norm_."""
    norms = [mint.sqrt((g * g).sum()) for g in grads]
    total = mint.sqrt((ops.stack(norms) ** 2).sum())
    return total, ms.amp.all_finite(grads)


def _accumulate(acc, grads):
    return tuple(a + g for a, g in zip(acc, grads))


def _clip_coef(norm, max_norm):
    """torch: clamp(max_norm / (norm + 1e-6), max=1) (``max_norm / x`` is ``reciprocal(x) * max_norm``)."""
    return mint.clamp(ops.reciprocal(norm + 1e-6) * max_norm, max=1.0)


class DynamicLossScale:
    """Host-side dynamic loss scale, the rule of ``mindspore.amp.DynamicLossScaler``: on overflow
    scale <- max(scale / factor, 1) and the good-step counter restarts; after ``window`` finite steps in a row
    scale <- scale * factor (if that is finite)."""

    def __init__(self, init_scale=2.0 ** 16, factor=2.0, window=1000):
        self.scale, self.factor, self.window = float(init_scale), float(factor), int(window)
        self.good_steps = 0

    def update(self, finite: bool):
        if not finite:
            self.scale = max(self.scale / self.factor, 1.0)
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps >= self.window:
            if np.isfinite(self.scale * self.factor):
                self.scale *= self.factor
            self.good_steps = 0


def _ms(v, dtype):
    return None if v is None else Tensor(np.ascontiguousarray(np.asarray(v).astype(dtype)))


def _signature(args):
    return tuple(None if a is None else (tuple(a.shape), str(a.dtype)) for a in args)


def _fingerprint(params):
    """Where each parameter's data lives. ``Parameter.set_data`` (used by ``converters.load_state_into`` and
    ``ms.load_param_into_net``) moves it, and a graph compiled before keeps reading the OLD data (measured on
    MindSpore 2.10 CPU); ``ops.assign`` writes in place and stays visible. A changed fingerprint means the
    compiled graphs are stale and must be rebuilt."""
    return tuple(p.data_ptr() for p in params)


def load_weights_inplace(model, tensors, strict=True):
    """Write ``tensors`` (name -> array, e.g. ``converters.model_tensors(other, "ms")``) into ``model``'s
    parameters in place (``ops.assign``), so graphs already compiled on the model see them (``set_data``
    would detach them, see ``_fingerprint``). ``strict``: every parameter must be given, nothing else, same
    shapes. Returns the names written."""
    params = {p.name: p for p in model.get_parameters()}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    bad = sorted(k for k in set(params) & set(tensors) if tuple(np.shape(tensors[k])) != tuple(params[k].shape))
    if bad or (strict and (missing or unexpected)):
        raise ValueError(f"load_weights_inplace: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"mis-shaped {bad[:5]}")
    written = []
    for name, p in params.items():
        if name in tensors:
            ops.assign(p, Tensor(np.asarray(tensors[name]), p.dtype))
            written.append(name)
    return written


class TrainStep(TrainStepInputs):
    """Port of ``pt_reference.training.TrainStep`` (same constructor arguments and ``step`` contract).

    MindSpore-only keyword arguments: ``compute_dtype`` (None: leave the model as it is; "fp16"/"fp32"),
    ``loss_scale`` (None: dynamic when the model computes in fp16, off otherwise; "dynamic"; a number: a static
    scale; 1.0 or False: off), ``init_loss_scale`` (2**16), ``scale_factor`` (2), ``scale_window`` (1000),
    ``jit`` (True: the forward+backward is a graph; False: PyNative), ``jit_update`` (the norm, accumulation
    and AdamW/EMA update as graphs; default = ``jit``), ``seed`` (generator for noise drawn when ``step``
    gets none). ``objective`` / ``objective_kwargs``: as the reference's ("rflow" or "iddpm").

    Counters: ``global_step`` (completed ``step`` calls), ``update_count`` (updates applied: the lr schedule
    position and Adam's step), ``skipped_steps`` (overflow steps). State: ``parameters()``, ``ema_state()``,
    ``optimizer_state()`` (name -> numpy), ``loss_scale``; ``state_dict()`` / ``load_state_dict()`` for
    checkpoints (same keys as the reference's). ``set_grad_reducer`` hooks a gradient reduction (data parallel).
    """

    def __init__(self, model, lr, weight_decay=0.0, eps=1e-15, betas=(0.9, 0.999), grad_clip=1.0, warmup_steps=0,
                 ema_decay=0.99, grad_accum=1, recompute=False, *, compute_dtype=None, loss_scale=None,
                 init_loss_scale=2.0 ** 16, scale_factor=2.0, scale_window=1000, jit=True, jit_update=None,
                 seed=0, objective="rflow", objective_kwargs=None):
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.model = model
        self.objective = objective
        self.fm = None
        if objective == FLOW_MATCHING:
            self.fm = flow_matching_settings(objective_kwargs)
            iddpm_kwargs, self.model_tail = {}, []
        else:
            iddpm_kwargs = objective_settings(objective, objective_kwargs)
            self.model_tail = model_tail_names(model)
        self.base_lr, self.weight_decay, self.eps, self.betas = lr, weight_decay, eps, tuple(betas)
        self.grad_clip, self.warmup_steps = grad_clip, warmup_steps
        self.ema_decay, self.grad_accum, self.jit = ema_decay, grad_accum, jit
        self.rng = np.random.default_rng(seed)
        if compute_dtype is not None:
            from ms_impl.layers import set_compute_dtype

            dtype = {"fp16": ms.float16, "fp32": ms.float32}.get(compute_dtype, compute_dtype)
            if dtype not in (ms.float16, ms.float32):
                raise ValueError(f"compute_dtype must be 'fp32' or 'fp16' on this port (no bf16 CPU kernels), "
                                 f"got {compute_dtype!r}")
            set_compute_dtype(model, dtype)
        self.compute_dtype = getattr(model, "compute_dtype", ms.float32)
        if recompute:
            model.set_recompute(True)
        self.recompute = bool(getattr(model, "_recompute", recompute))
        if self.fm is not None:   # 2.0: the T5 / CLIP dropout of the randoms (dropout_ratio), no y_embedder
            self.caption_drop_prob = None
        else:
            self.caption_drop_prob = float(model.y_embedder.uncond_prob)
            model.y_embedder.uncond_prob = 0.0   # the step owns caption dropout (pre-drawn drop ids)
        model.set_train(True)

        if loss_scale is None:
            loss_scale = "dynamic" if self.compute_dtype == ms.float16 else False
        if loss_scale == "dynamic":
            self.scaler = DynamicLossScale(init_loss_scale, scale_factor, scale_window)
        elif loss_scale is False or loss_scale == 1.0:
            self.scaler = None
        else:  # static: the scale never changes (overflow steps are still skipped and counted)
            self.scaler = DynamicLossScale(float(loss_scale), 1.0, 2 ** 62)
        self.params = model.trainable_params()
        self.names = [p.name for p in self.params]
        if objective == "iddpm":
            self.diffusion = IDDPM(graph=False, **iddpm_kwargs)
            self.loss_cell = IDDPMTrainLoss(model, self.diffusion.schedule)
        elif self.fm is not None:
            self.diffusion = None
            self.loss_cell = FlowMatchingLoss(model)
        else:
            self.diffusion = None
            self.loss_cell = RFlowLoss(model)
        self.updater = AdamWUpdate(self.params, self.betas, eps, weight_decay, ema_decay)

        def loss_fn(loss_weight, x0, noise, t, tp, drop_ids, x_mask, y, *tail):
            loss = self.loss_cell(x0, noise, t, tp, drop_ids, x_mask, y, *tail)
            return loss * loss_weight, loss

        grad_fn = ms.value_and_grad(loss_fn, None, self.params, has_aux=True)

        def micro_step(loss_weight, inv_scale, x0, noise, t, tp, drop_ids, x_mask, y, *tail):
            (_, loss), grads = grad_fn(loss_weight, x0, noise, t, tp, drop_ids, x_mask, y, *tail)
            return loss, tuple(g * inv_scale for g in grads)

        self._micro_step = micro_step
        if self.fm is not None:
            def fm_loss_fn(loss_weight, img, img_ids, txt, txt_ids, timesteps, y_vec, target, cond, guidance):
                loss = self.loss_cell(img, img_ids, txt, txt_ids, timesteps, y_vec, target, cond, guidance)
                return loss * loss_weight, loss

            fm_grad_fn = ms.value_and_grad(fm_loss_fn, None, self.params, has_aux=True)

            def fm_micro_step(loss_weight, inv_scale, img, img_ids, txt, txt_ids, timesteps, y_vec, target, cond,
                              guidance):
                (_, loss), grads = fm_grad_fn(loss_weight, img, img_ids, txt, txt_ids, timesteps, y_vec, target,
                                              cond, guidance)
                return loss, tuple(g * inv_scale for g in grads)

            self._micro_step = fm_micro_step
        # Compiled micro steps live on the model: the forward+backward graph depends only on the model (its
        # parameters, compute dtype, recompute switch) and the input signature, not on the optimizer, so a new
        # TrainStep on the same model (new lr, reset optimizer) reuses them instead of compiling again.
        # The cache is dropped when a parameter's data was replaced since (``_fingerprint``).
        self._cache = model.__dict__.setdefault("_train_step_graphs", {"fingerprint": None, "graphs": {}})
        self._model_params = list(model.get_parameters())
        self._graph_key = (tuple(id(p) for p in self.params), str(self.compute_dtype), self.recompute, objective,
                           objective_key(self.fm) if self.fm is not None else tuple(sorted(iddpm_kwargs.items())))
        self.jit_update = jit if jit_update is None else jit_update
        if self.jit_update:
            self._norm, self._accumulate = ms.jit(_global_norm), ms.jit(_accumulate)
            self._update = ms.jit(self.updater.construct)
            self._update_fingerprint = _fingerprint(self.params)
        else:
            self._norm, self._accumulate, self._update = _global_norm, _accumulate, self.updater.construct
        self.global_step = 0     # step() calls that completed (updates + skipped)
        self.update_count = 0    # updates applied (drives the lr schedule and Adam's bias correction)
        self.skipped_steps = 0   # overflow steps skipped by the loss scaler
        self.grad_reducer = None  # set_grad_reducer: e.g. the data-parallel mean over ranks

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def loss_scale(self) -> float:
        return self.scaler.scale if self.scaler is not None else 1.0

    def lr_at(self, update: int) -> float:
        return linear_warmup_lr(update, self.base_lr, self.warmup_steps)

    def parameters(self) -> Dict[str, np.ndarray]:
        return {p.name: p.asnumpy().copy() for p in self.params}

    def ema_state(self) -> Dict[str, np.ndarray]:
        return {self.params[i].name: e.asnumpy().copy() for i, e in zip(self.updater.ema_index, self.updater.ema)}

    def optimizer_state(self) -> Dict[str, Dict[str, np.ndarray]]:
        if self.update_count == 0:
            return {}
        return {p.name: {"exp_avg": m.asnumpy().copy(), "exp_avg_sq": v.asnumpy().copy()}
                for p, m, v in zip(self.params, self.updater.exp_avg, self.updater.exp_avg_sq)}

    def state_dict(self) -> dict:
        """Everything besides the weights that the next ``step`` depends on, as numpy and plain Python:
        ``exp_avg``/``exp_avg_sq`` (name -> moment, zeros before the first update), ``ema`` (name -> EMA weight),
        ``counters`` (global_step, update_count, skipped_steps), ``loss_scale`` (scale, good_steps; None when
        off) and ``rng`` (the state of the generator that draws noise when ``step`` gets none). The same keys as
        the reference's ``TrainStep.state_dict``; ``load_state_dict`` restores it."""
        scaler = None if self.scaler is None else dict(scale=self.scaler.scale, good_steps=self.scaler.good_steps)
        return dict(
            exp_avg={p.name: m.asnumpy().copy() for p, m in zip(self.params, self.updater.exp_avg)},
            exp_avg_sq={p.name: v.asnumpy().copy() for p, v in zip(self.params, self.updater.exp_avg_sq)},
            ema=self.ema_state(),
            counters=dict(global_step=self.global_step, update_count=self.update_count,
                          skipped_steps=self.skipped_steps),
            loss_scale=scaler, rng=self.rng.bit_generator.state)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Restore ``state_dict()`` (written by either twin). Missing or unexpected parameter names raise with
        ``strict`` (the default); the moments and the EMA are written into the existing buffers, so compiled
        graphs stay valid."""
        names = set(self.names)
        for key in ("exp_avg", "exp_avg_sq"):
            got = set(state.get(key) or {})
            if strict and got != names:
                raise KeyError(f"TrainStep.load_state_dict: {key} does not match the trainable parameters "
                               f"(missing {sorted(names - got)[:5]}, unexpected {sorted(got - names)[:5]})")
        ema_names = {self.params[i].name for i in self.updater.ema_index}
        got = set(state.get("ema") or {})
        if strict and got != ema_names:
            raise KeyError(f"TrainStep.load_state_dict: ema does not match the EMA-tracked parameters "
                           f"(missing {sorted(ema_names - got)[:5]}, unexpected {sorted(got - ema_names)[:5]})")
        for i, p in enumerate(self.params):
            if p.name in (state.get("exp_avg") or {}):
                ops.assign(self.updater.exp_avg[i], Tensor(np.asarray(state["exp_avg"][p.name]), F32))
                ops.assign(self.updater.exp_avg_sq[i], Tensor(np.asarray(state["exp_avg_sq"][p.name]), F32))
        for j, i in enumerate(self.updater.ema_index):
            name = self.params[i].name
            if name in (state.get("ema") or {}):
                ops.assign(self.updater.ema[j], Tensor(np.asarray(state["ema"][name]), self.updater.ema[j].dtype))
        c = state.get("counters") or {}
        self.global_step = int(c.get("global_step", self.global_step))
        self.update_count = int(c.get("update_count", self.update_count))
        self.skipped_steps = int(c.get("skipped_steps", self.skipped_steps))
        if state.get("loss_scale") and self.scaler is not None:
            self.scaler.scale = float(state["loss_scale"]["scale"])
            self.scaler.good_steps = int(state["loss_scale"]["good_steps"])
        if state.get("rng"):
            self.rng.bit_generator.state = state["rng"]

    def set_grad_reducer(self, reducer) -> None:
        """``reducer(loss, grads) -> (loss, grads)`` applied to every micro-batch's loss and gradients before
        they are accumulated, clipped and applied (data parallel: the mean over the ranks, see
        ``scripts/train.py::dp_grad_reducer``). None removes it."""
        self.grad_reducer = reducer

    # ---- the step --------------------------------------------------------------------------------------
    def _inputs(self, batch, noise: TrainBatchNoise):
        """(x0, noise, t, timepoints, drop_ids, x_mask, y, *model tail) as tensors (see ``RFlowLoss``); 2.0:
        (img, img_ids, txt, txt_ids, timesteps, y_vec, target, cond, guidance) (see ``FlowMatchingLoss``)."""
        if self.fm is not None:
            i = self.flow_matching_inputs(batch, noise)
            return tuple(_ms(i[k], np.float32) for k in ("img", "img_ids", "txt", "txt_ids", "timesteps", "y_vec",
                                                          "target", "cond", "guidance"))
        if noise.x_mask is not None and "x_mask" not in self.model_tail:
            raise ValueError(f"{type(self.model).__name__} takes no x_mask: it cannot train with frame masks")
        x_mask = _ms(noise.x_mask, np.bool_)
        if self.objective == "iddpm":
            t, tp = _ms(integer_timesteps(noise), np.int32), None
        else:
            t, tp = _ms(noise.t, np.float32), _ms(noise.timepoints(), np.float32)
        tail = [x_mask if n == "x_mask" else _ms(batch.get(n), MODEL_INPUTS[n]) if n in MODEL_INPUTS else None
                for n in self.model_tail]
        while tail and tail[-1] is None:
            tail.pop()
        return (_ms(batch["x0"], np.float32), _ms(noise.noise, np.float32), t, tp, _ms(noise.drop_ids, np.int32),
                x_mask, _ms(batch["y"], np.float32), *tail)

    def load_weights(self, tensors, strict=True):
        """``load_weights_inplace`` on the model (graphs stay valid). The optimizer state and the EMA are kept:
        build a new TrainStep to restart them from the loaded weights."""
        return load_weights_inplace(self.model, tensors, strict)

    def _graph(self, args):
        if not self.jit:
            return self._micro_step
        fp = _fingerprint(self._model_params)
        if self._cache["fingerprint"] != fp:   # first use, or weights replaced with set_data: recompile
            self._cache["fingerprint"], self._cache["graphs"] = fp, {}
        graphs = self._cache["graphs"]
        key = (self._graph_key, _signature(args))
        if key not in graphs:
            graphs[key] = ms.jit(self._micro_step)
        return graphs[key]

    def _updater(self):
        if self.jit_update and _fingerprint(self.params) != self._update_fingerprint:
            self._update = ms.jit(self.updater.construct)
            self._update_fingerprint = _fingerprint(self.params)
        return self._update

    def step(self, batch, noise: Optional[TrainBatchNoise] = None, keep_grads=False) -> dict:
        """One optimizer step on ``batch`` (dict of numpy: x0, y, mask, fps, height, width, num_frames) with the
        pre-drawn randoms ``noise`` -> dict(loss, grad_norm, lr, skipped, loss_scale) (+ grads)."""
        if noise is None:
            noise = self.draw_noise(batch)
        k = self.grad_accum
        lr = self.lr_at(self.update_count)
        scale = self.loss_scale
        loss_weight, inv_scale = Tensor(scale / k, F32), Tensor(1.0 / scale, F32)
        acc, losses = None, []
        for i, (mb, mn) in enumerate(zip(split_batch(batch, k), noise.split(k))):
            args = self._inputs(mb, mn)
            loss, grads = self._graph(args)(loss_weight, inv_scale, *args)
            if self.grad_reducer is not None:
                loss, grads = self.grad_reducer(loss, grads)
            value = float(loss.asnumpy())
            if not np.isfinite(value):
                raise TrainingDivergedError(self.global_step, value, i, k)
            losses.append(value)
            grads = ms.mutable(grads)  # a tuple input of a graph must be mutable, else every call recompiles
            acc = grads if acc is None else ms.mutable(self._accumulate(acc, grads))
        norm, finite = self._norm(acc)
        grad_norm, finite = float(norm.asnumpy()), bool(finite.asnumpy()) and np.isfinite(float(norm.asnumpy()))
        out = dict(loss=float(np.mean(losses)), grad_norm=grad_norm, lr=lr, skipped=not finite, loss_scale=scale)
        if keep_grads:
            out["grads"] = {n: g.asnumpy().copy() for n, g in zip(self.names, acc)}
        if not finite:
            if self.scaler is None:
                raise TrainingDivergedError(self.global_step, grad_norm, what="the gradient norm (no loss scaling)")
            self.scaler.update(False)
            self.skipped_steps += 1
            self.global_step += 1
            return out
        n = self.update_count + 1
        bc1, bc2 = 1 - self.betas[0] ** n, 1 - self.betas[1] ** n
        clip = _clip_coef(norm, float(self.grad_clip)) if self.grad_clip else Tensor(1.0, F32)
        decay = self.ema_decay if self.ema_decay is not None else 0.0
        self._updater()(acc, clip, Tensor(1 - lr * self.weight_decay, F32), Tensor(lr / bc1, F32),
                        Tensor(bc2 ** 0.5, F32), Tensor(decay, F32), Tensor(1.0 - decay, F32))
        if self.scaler is not None:
            self.scaler.update(True)
        self.update_count += 1
        self.global_step += 1
        return out
