"""Open-Sora 2.0 sampling pipeline, PyTorch reference. The orchestration is
``opensora_dual.pipelines.opensora_v2``; the tensor parts are the 1.x twin's (``pt_reference.pipelines.opensora``)
with the HunyuanVideo VAE's calls and the T5 / CLIP embedders of 2.0."""
import numpy as np
import torch

from opensora_dual.pipelines.opensora import PipelineOutput  # noqa: F401
from opensora_dual.pipelines.opensora_v2 import OpenSoraV2PipelineBase, encode_kwargs, text_kind_options
from pt_reference.pipelines.opensora import OpenSoraPipeline


class OpenSoraV2Pipeline(OpenSoraV2PipelineBase, OpenSoraPipeline):
    backend = "pt"

    @torch.no_grad()
    def encode_video(self, x):
        """The posterior mode (upstream samples the posterior; see docs/sampling.md); the DC-AE has none."""
        return self.vae.encode(torch.as_tensor(np.asarray(x, np.float32)), **encode_kwargs(self.vae)).float().numpy()

    @torch.no_grad()
    def decode_latents(self, z, num_frames):
        return self.vae.decode(torch.as_tensor(np.asarray(z, np.float32))).float().numpy()[:, :, :num_frames]

    @classmethod
    def make_text_embedder(cls, net, tokenizer_folder, max_length, kind="t5"):
        from opensora_dual.text.tokenization import load_tokenizer
        from pt_reference.models.text_encoder import runtime

        net.eval()
        return runtime.make_text_embedder(net, load_tokenizer(tokenizer_folder), max_length, **text_kind_options(kind))

    @classmethod
    def load_text_embedder(cls, weights, tokenizer_folder, max_length, dtype="fp32", kind="t5"):
        from pt_reference.models.text_encoder import runtime

        net = runtime.load_text_encoder(weights=weights, dtype="fp16" if dtype == "fp16" else "fp32")
        return cls.make_text_embedder(net, tokenizer_folder, max_length, kind=kind)


def write_random_pipeline(folder, tokenizer=None, clip_tokenizer=None, seed=0, **build_kwargs):
    """A small random 2.0 pipeline (MMDiT-S, HunyuanVAE-S, T5-S, CLIP-S-text; ``build_random``) written with
    ``save_pretrained`` so either twin loads the same weights; returns the reference pipeline. Zero-initialised
    parameters get small random values (every weight counts). Tokenizers default to toy ones trained into
    ``folder/../tokenizer`` and ``folder/../clip_tokenizer``."""
    import os

    from opensora_dual.text.toy_tokenizers import build_clip_tokenizer_folder, build_t5_tokenizer_folder
    from pt_reference.init_utils import fill_zero_parameters

    parent = os.path.dirname(os.path.abspath(folder))
    if tokenizer is None:
        tokenizer = build_t5_tokenizer_folder(os.path.join(parent, "tokenizer"), vocab_size=512)
    if clip_tokenizer is None:
        clip_tokenizer = build_clip_tokenizer_folder(os.path.join(parent, "clip_tokenizer"))
    torch.manual_seed(seed)
    pipe = OpenSoraV2Pipeline.build_random(tokenizer=tokenizer, clip_tokenizer=clip_tokenizer, **build_kwargs)
    for net in (pipe.model, pipe.image_model):
        if net is not None:
            fill_zero_parameters(net, seed=seed)
    pipe.save_pretrained(folder)
    return pipe
