"""Flow-matching sampler (Open-Sora 2.0), ``main:opensora/utils/sampling.py::{I2VDenoiser,DistilledDenoiser}`` and
the sampling part of ``api_fn``.

The schedule, the guidance scales of every step (text / image oscillation, the temporal ramp), the cond-type
conditioning and the paste-back are ``opensora_dual.sampling.flow_matching``, shared with the MindSpore twin.
Here: the model call and the Euler update with torch tensors.

- method "i2v" (Open-Sora 2.0): per step ONE forward over the batch [prompt; neg; neg] with cond
  [c; c; 0] (c = pack(cat(mask, masked reference latent))), v = u2 + g_img (u - u2) + g_txt (c - u);
- method "distill" (Flux-dev, t2i2v's image step): one forward on the prompt batch with the guidance vector,
  no CFG.

Differences from upstream's signature: conditioning comes in as arrays (T5 / CLIP features of the prompt and of
the negative prompt, reference latents, cond type), not prompts and paths; the latent is kept unpacked between
steps (packing is a permutation, so the numbers are upstream's).
"""
import torch

from opensora_dual import packing
from opensora_dual.sampling.flow_matching import DISTILLED, FlowMatchingSampler, guidance_combine
from pt_reference.schedulers.common import TorchLatents


def pack(x, patch_size=2):
    """b c t (h ph) (w pw) -> b (t h w) (c ph pw)."""
    b, c, t, H, W = x.shape
    p = patch_size
    x = x.reshape(b, c, t, H // p, p, W // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(b, t * (H // p) * (W // p), c * p * p)


def unpack(x, t, h, w, patch_size=2):
    """b (t h w) (c ph pw) -> b c t (h ph) (w pw)."""
    b, _, d = x.shape
    p = patch_size
    c = d // (p * p)
    return x.reshape(b, t, h, w, c, p, p).permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, t, h * p, w * p)


class FlowMatching(TorchLatents, FlowMatchingSampler):
    def prepare(self, z, y, y_mask=None, additional_args=None, mask=None, guidance_scale=None, y_null=None,
                model=None):
        """-> state: the numpy plan (``timesteps`` [steps, B], ``dts``, scales, conditioning) + the model inputs."""
        if mask is not None:
            raise ValueError("Open-Sora 2.0 conditions through cond_type and ref, not a frame mask")
        add = dict(additional_args or {})
        B = z.shape[0]
        state = self.plan(tuple(z.shape), add, guidance_scale)
        txt, vec = self.text_inputs(y, add, B, self.method, y_null)
        n = txt.shape[0]
        T, h, w = state["grid"]
        state["model_args"] = {"img_ids": torch.from_numpy(packing.img_ids(n, T, h, w)), "txt": torch.from_numpy(txt),
                               "txt_ids": torch.from_numpy(packing.txt_ids(n, txt.shape[1])),
                               "y_vec": torch.from_numpy(vec)}
        state["guidance_vec"] = torch.full((n,), state["guidance"], dtype=torch.float32)
        if self.method != DISTILLED:
            cond = torch.from_numpy(state["cond"])
            state["cond3"] = torch.cat([cond, cond, torch.zeros_like(cond)], 0)
            state["scales"] = [(g, gi if isinstance(gi, float) else torch.from_numpy(gi)) for g, gi in state["scales"]]
        return state

    def step(self, model, z, i, state, noise=None):
        """Step i: pack, one forward (3 B rows for i2v), the guidance combination, Euler, unpack."""
        T, h, w = state["grid"]
        img = pack(z, self.patch_size)
        t_curr = float(state["t_list"][i])
        with torch.no_grad():
            if self.method == DISTILLED:
                t_vec = torch.full((img.shape[0],), t_curr, dtype=img.dtype)
                pred = model(img=img, **state["model_args"], timesteps=t_vec, guidance=state["guidance_vec"])
            else:
                x = torch.cat([img, img, img], 0)
                t_vec = torch.full((x.shape[0],), t_curr, dtype=img.dtype)
                pred = model(img=x, **state["model_args"], cond=state["cond3"], timesteps=t_vec,
                             guidance=state["guidance_vec"])
                cond, uncond, uncond_2 = pred.chunk(3, dim=0)
                text_gs, image_gs = state["scales"][i]
                pred = guidance_combine(cond, uncond, uncond_2, text_gs, image_gs)
            img = img + float(state["dts"][i]) * pred
        return unpack(img, T, h, w, self.patch_size)

    def to_numpy(self, z):
        return z.float().numpy()
