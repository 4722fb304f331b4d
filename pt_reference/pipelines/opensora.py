"""Open-Sora sampling pipeline (1.0, 1.1, 1.2), PyTorch reference. The orchestration is
``opensora_dual.pipelines.opensora``; this file holds the tensor parts."""
import numpy as np
import torch

from opensora_dual.pipelines.opensora import OpenSoraPipelineBase, PipelineOutput  # noqa: F401


class OpenSoraPipeline(OpenSoraPipelineBase):
    backend = "pt"

    def __init__(self, model, vae, scheduler, text_encoder=None, recipe=None):
        super().__init__(model.eval(), vae.eval(), scheduler, text_encoder, recipe)

    @classmethod
    def wrap_video_kl(cls, autoencoder, micro_batch_size):
        from pt_reference.models.vae.vae import VideoAutoencoderKL

        return VideoAutoencoderKL.from_module(autoencoder, micro_batch_size)

    @torch.no_grad()
    def encode_video(self, x):
        return self.vae.encode(torch.as_tensor(np.asarray(x, np.float32))).float().numpy()

    @torch.no_grad()
    def decode_latents(self, z, num_frames):
        return self.vae.decode(torch.as_tensor(np.asarray(z, np.float32)), num_frames=num_frames).float().numpy()

    @torch.no_grad()
    def sample(self, z, y, y_mask, additional_args, mask, noise, guidance_scale=None, progress=True):
        out = self.scheduler.sample(self.model, z, y, y_mask, additional_args, mask=mask, noise=noise,
                                    guidance_scale=guidance_scale, progress=progress)
        return out.float().numpy()

    @classmethod
    def make_text_embedder(cls, net, tokenizer_folder, max_length):
        from opensora_dual.text.tokenization import load_tokenizer
        from pt_reference.models.text_encoder import runtime

        net.eval()
        return runtime.make_text_embedder(net, load_tokenizer(tokenizer_folder), max_length, clean=False)

    @classmethod
    def load_text_embedder(cls, weights, tokenizer_folder, max_length, dtype="fp32"):
        from pt_reference.models.text_encoder import runtime

        net = runtime.load_text_encoder(weights=weights, dtype="fp16" if dtype == "fp16" else "fp32")
        return cls.make_text_embedder(net, tokenizer_folder, max_length)

    def apply_dtype(self, dtype):
        """fp16/bf16: the diffusion model in that dtype (upstream casts the whole model); outputs stay fp32."""
        if dtype in ("fp16", "bf16"):
            self.model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
        elif dtype != "fp32":
            raise ValueError(f"dtype must be fp32, fp16 or bf16, got {dtype!r}")
        self.dtype = dtype
        return self


def write_random_pipeline(folder, tokenizer=None, seed=0, **build_kwargs):
    """A small random-weight pipeline (registered presets, ``build_random``) written with ``save_pretrained``
    so either twin loads the same weights from ``folder``; returns the reference pipeline. Zero-initialised
    parameters (upstream zeroes the final layer and some projections) get small random values, so every weight
    counts. ``tokenizer``: a folder with ``spiece.model``; None trains a tiny one into ``folder/../tokenizer``."""
    import os

    from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder
    from pt_reference.init_utils import fill_zero_parameters

    if tokenizer is None:
        tokenizer = os.path.join(os.path.dirname(os.path.abspath(folder)), "tokenizer")
        build_t5_tokenizer_folder(tokenizer, vocab_size=512)
    torch.manual_seed(seed)
    pipe = OpenSoraPipeline.build_random(tokenizer=tokenizer, **build_kwargs)
    fill_zero_parameters(pipe.model, seed=seed)
    pipe.save_pretrained(folder)
    return pipe
