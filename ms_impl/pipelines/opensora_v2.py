"""Open-Sora 2.0 sampling pipeline, MindSpore port (twin of ``pt_reference.pipelines.opensora_v2``). The
orchestration is ``opensora_dual.pipelines.opensora_v2``; the tensor parts are the 1.x twin's
(``ms_impl.pipelines.opensora``: the denoiser step is one compiled graph) with the HunyuanVideo VAE's calls and
the T5 / CLIP embedders of 2.0."""
import mindspore as ms
import numpy as np

from ms_impl.pipelines.opensora import OpenSoraPipeline
from opensora_dual.pipelines.opensora import PipelineOutput  # noqa: F401
from opensora_dual.pipelines.opensora_v2 import OpenSoraV2PipelineBase, encode_kwargs, text_kind_options


class OpenSoraV2Pipeline(OpenSoraV2PipelineBase, OpenSoraPipeline):
    backend = "ms"

    def encode_video(self, x):
        """The posterior mode (upstream samples the posterior; see docs/sampling.md); the DC-AE has none."""
        return self.vae.encode(ms.Tensor(np.asarray(x, np.float32)), **encode_kwargs(self.vae)).astype(
            ms.float32).asnumpy()

    def decode_latents(self, z, num_frames):
        return self.vae.decode(ms.Tensor(np.asarray(z, np.float32))).astype(ms.float32).asnumpy()[:, :, :num_frames]

    @classmethod
    def make_text_embedder(cls, net, tokenizer_folder, max_length, kind="t5", jit=False):
        from ms_impl.models.text_encoder import runtime
        from opensora_dual.text.tokenization import load_tokenizer

        net.set_train(False)
        return runtime.make_text_embedder(net, load_tokenizer(tokenizer_folder), max_length, jit=jit,
                                          **text_kind_options(kind))

    @classmethod
    def load_text_embedder(cls, weights, tokenizer_folder, max_length, dtype="fp32", kind="t5"):
        from ms_impl.models.text_encoder import runtime

        net = runtime.load_text_encoder(weights=weights, dtype="fp16" if dtype == "fp16" else "fp32")
        return cls.make_text_embedder(net, tokenizer_folder, max_length, kind=kind, jit=True)
