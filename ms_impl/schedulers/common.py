"""What the sampler twins share, MindSpore port (twin: ``pt_reference.schedulers.common``)."""
import time

import mindspore as ms
import numpy as np
from mindspore import mint


class MsLatents:
    """The latent type of the port's samplers (``SamplerBase.as_latent``) and the first-step timer: the first
    call of a run compiles the denoiser graph, so its wall time (compile + one step) is ``compile_seconds``."""

    compile_seconds = None

    def as_latent(self, z):
        return z if isinstance(z, ms.Tensor) else ms.Tensor(np.asarray(z, np.float32))

    def timed(self, i, start, out):
        """After step ``i`` started at ``start`` (``time.perf_counter()``): on step 0 sync ``out`` and record."""
        if i == 0:
            out.asnumpy()
            self.compile_seconds = time.perf_counter() - start
        return out


def null_caption(model, y_null, batch):
    """The null caption [B, 1, L, C]: given, or upstream's (the model's ``y_embedder.y_embedding`` repeated)."""
    if y_null is None:
        emb = model.y_embedder.y_embedding
        return mint.tile(emb.reshape(1, 1, *emb.shape), (batch, 1, 1, 1))
    return ms.Tensor(np.asarray(y_null, np.float32))
