"""What the sampler twins share, PyTorch reference (twin: ``ms_impl.schedulers.common``)."""
import numpy as np
import torch


class TorchLatents:
    """The latent type of the reference samplers (``SamplerBase.as_latent``): a float32 torch tensor."""

    def as_latent(self, z):
        return z if torch.is_tensor(z) else torch.as_tensor(np.asarray(z, np.float32))


def cfg_text_inputs(model, y, y_null, y_mask, additional_args, batch):
    """The 1.x samplers' conditioning -> (y, y_null, model_args): the prompts' T5 features as a tensor, the null
    caption (upstream: the model's own ``y_embedder.y_embedding`` repeated per prompt, unless given) and the other
    model arguments as tensors. The text mask is NOT duplicated for the null half: the model repeats it."""
    if y_null is None:
        y_null = model.y_embedder.y_embedding[None].repeat(batch, 1, 1)[:, None]
    y = torch.as_tensor(np.asarray(y, np.float32)) if not torch.is_tensor(y) else y
    model_args = {}
    if y_mask is not None:
        model_args["mask"] = torch.as_tensor(np.asarray(y_mask))
    for k, v in (additional_args or {}).items():
        model_args[k] = torch.as_tensor(np.asarray(v))
    return y, torch.as_tensor(y_null).to(y.dtype), model_args
