"""Flow-matching sampler (Open-Sora 2.0), twin of ``pt_reference.schedulers.flow_matching.FlowMatching``.

Same plan (``opensora_dual.sampling.flow_matching``: schedule, per-step guidance scales, conditioning,
paste-back), same loop. The model call with its guidance combination is one ``ms.jit`` graph (``graph=False``:
PyNative), compiled on the first step and reused: its shapes are static per run (the image scale is always
passed as a packed [B, seq, C p^2] array, a constant fill when the temporal ramp is off -- the same products as
upstream's scalar). The model output is cast to the latent's dtype (float32) before the combination.
"""
import time

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from opensora_dual import packing
from ms_impl.schedulers.common import MsLatents
from opensora_dual.sampling.flow_matching import DISTILLED, FlowMatchingSampler


def pack(x, patch_size=2):
    """b c t (h ph) (w pw) -> b (t h w) (c ph pw)."""
    b, c, t, H, W = x.shape
    p = patch_size
    x = mint.permute(x.reshape(b, c, t, H // p, p, W // p, p), (0, 2, 3, 5, 1, 4, 6))
    return x.reshape(b, t * (H // p) * (W // p), c * p * p)


def unpack(x, t, h, w, patch_size=2):
    """b (t h w) (c ph pw) -> b c t (h ph) (w pw)."""
    b, _, d = x.shape
    p = patch_size
    c = d // (p * p)
    return mint.permute(x.reshape(b, t, h, w, c, p, p), (0, 4, 1, 2, 5, 3, 6)).reshape(b, c, t, h * p, w * p)


class GuidedVelocity(nn.Cell):
    """[prompt; neg; neg] x cond [c; c; 0] in one forward -> u2 + g_img (u - u2) + g_txt (c - u)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, img, img_ids, txt, txt_ids, t, y_vec, cond, guidance_vec, text_gs, image_gs):
        b = img.shape[0]
        x = mint.cat([img, img, img], 0)
        pred = self.model(x, img_ids, txt, txt_ids, t, y_vec, cond, guidance_vec).astype(img.dtype)
        c = pred[:b]
        u = pred[b:2 * b]
        u2 = pred[2 * b:]
        return u2 + image_gs * (u - u2) + text_gs * (c - u)


class DistilledVelocity(nn.Cell):
    """The guidance-distilled (Flux-dev) single pass: the model's output is the velocity."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, img, img_ids, txt, txt_ids, t, y_vec, guidance_vec):
        return self.model(img, img_ids, txt, txt_ids, t, y_vec, None, guidance_vec).astype(img.dtype)


class FlowMatching(MsLatents, FlowMatchingSampler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph = kwargs.get("graph", True)
        self._denoisers = {}          # (id(model), method) -> compiled construct
        self.compile_seconds = None   # wall time of the first (compiling) call of the last run

    def denoiser(self, model):
        key = (id(model), self.method)
        if key not in self._denoisers:
            d = DistilledVelocity(model) if self.method == DISTILLED else GuidedVelocity(model)
            d.set_train(False)
            self._denoisers[key] = (d, ms.jit(d.construct) if self.graph else d.construct)
        return self._denoisers[key][1]

    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        if mask is not None:
            raise ValueError("Open-Sora 2.0 conditions through cond_type and ref, not a frame mask")
        add = dict(additional_args or {})
        B = z.shape[0]
        state = self.plan(tuple(z.shape), add, guidance_scale)
        txt, vec = self.text_inputs(y, add, B, self.method, y_null)
        n = txt.shape[0]
        T, h, w = state["grid"]
        state["model_args"] = (ms.Tensor(packing.img_ids(n, T, h, w)), ms.Tensor(txt),
                               ms.Tensor(packing.txt_ids(n, txt.shape[1])), ms.Tensor(vec))
        state["guidance_vec"] = ms.Tensor(np.full((n,), state["guidance"], np.float32))
        if self.method != DISTILLED:
            cond = state["cond"]
            state["cond3"] = ms.Tensor(np.concatenate([cond, cond, np.zeros_like(cond)], 0))
            pred_shape = (B, T * h * w, state["masked_ref"].shape[1] * self.patch_size ** 2)   # packed pred
            state["scales"] = [(ms.Tensor(np.float32(g)),
                                ms.Tensor(np.broadcast_to(np.asarray(gi, np.float32), pred_shape).copy()))
                               for g, gi in state["scales"]]
        return state

    def step(self, model, z, i, state, noise=None):
        z = self.as_latent(z)
        T, h, w = state["grid"]
        img = pack(z, self.patch_size)
        n = state["guidance_vec"].shape[0]
        t_vec = ms.Tensor(np.full((n,), state["t_list"][i], np.float32))
        start = time.perf_counter()
        if self.method == DISTILLED:
            img_ids, txt, txt_ids, y_vec = state["model_args"]
            v = self.denoiser(model)(img, img_ids, txt, txt_ids, t_vec, y_vec, state["guidance_vec"])
        else:
            img_ids, txt, txt_ids, y_vec = state["model_args"]
            text_gs, image_gs = state["scales"][i]
            v = self.denoiser(model)(img, img_ids, txt, txt_ids, t_vec, y_vec, state["cond3"],
                                     state["guidance_vec"], text_gs, image_gs)
        img = self.timed(i, start, img + ms.Tensor(state["dts"][i]) * v)
        return unpack(img, T, h, w, self.patch_size)

    def to_numpy(self, z):
        return z.astype(ms.float32).asnumpy()
