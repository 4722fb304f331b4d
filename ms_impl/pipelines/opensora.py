"""Open-Sora sampling pipeline (1.0, 1.1, 1.2), MindSpore port (twin of ``pt_reference.pipelines.opensora``). The
orchestration is ``opensora_dual.pipelines.opensora``; this file holds the tensor parts. The denoiser step
is one compiled graph (``ms_impl.schedulers``); the VAE runs with its micro-batch switches."""
import mindspore as ms
import numpy as np

from opensora_dual.pipelines.opensora import OpenSoraPipelineBase, PipelineOutput  # noqa: F401


class OpenSoraPipeline(OpenSoraPipelineBase):
    backend = "ms"

    def __init__(self, model, vae, scheduler, text_encoder=None, recipe=None):
        model.set_train(False)
        vae.set_train(False)
        super().__init__(model, vae, scheduler, text_encoder, recipe)

    @classmethod
    def wrap_video_kl(cls, autoencoder, micro_batch_size):
        from ms_impl.models.vae.vae import VideoAutoencoderKL

        return VideoAutoencoderKL.from_module(autoencoder, micro_batch_size)

    def encode_video(self, x):
        return self.vae.encode(ms.Tensor(np.asarray(x, np.float32))).astype(ms.float32).asnumpy()

    def decode_latents(self, z, num_frames):
        return self.vae.decode(ms.Tensor(np.asarray(z, np.float32)), num_frames=num_frames).astype(
            ms.float32).asnumpy()

    def sample(self, z, y, y_mask, additional_args, mask, noise, guidance_scale=None, progress=True):
        out = self.scheduler.sample(self.model, z, y, y_mask, additional_args, mask=mask, noise=noise,
                                    guidance_scale=guidance_scale, progress=progress)
        return out.astype(ms.float32).asnumpy()

    @classmethod
    def make_text_embedder(cls, net, tokenizer_folder, max_length, jit=False):
        from ms_impl.models.text_encoder import runtime
        from opensora_dual.text.tokenization import load_tokenizer

        net.set_train(False)
        return runtime.make_text_embedder(net, load_tokenizer(tokenizer_folder), max_length, clean=False, jit=jit)

    @classmethod
    def load_text_embedder(cls, weights, tokenizer_folder, max_length, dtype="fp32"):
        from ms_impl.models.text_encoder import runtime

        net = runtime.load_text_encoder(weights=weights, dtype="fp16" if dtype == "fp16" else "fp32")
        return cls.make_text_embedder(net, tokenizer_folder, max_length, jit=True)

    def apply_dtype(self, dtype):
        """fp16: mixed precision (fp16 matmuls, fp32 norms/softmax/outputs); bf16 needs Ascend (MindSpore has no
        bf16 matmul/softmax on CPU). On Ascend the flash-attention kernel is selected."""
        from ms_impl.device import on_ascend
        from ms_impl.layers import set_compute_dtype

        if dtype == "bf16" and not on_ascend():
            raise ValueError("--dtype bf16 needs Ascend: MindSpore has no bf16 matmul/softmax kernels on CPU; "
                             "use fp32 or fp16")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"dtype must be fp32, fp16 or bf16, got {dtype!r}")
        if dtype != "fp32":
            set_compute_dtype(self.model, {"fp16": ms.float16, "bf16": ms.bfloat16}[dtype])
        if on_ascend():
            self.model.set_attention_backend("flash")
        self.dtype = dtype
        return self
