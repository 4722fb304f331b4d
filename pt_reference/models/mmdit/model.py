"""MMDiT (Open-Sora 2.0, Flux-like), the reference. Mirrors ``main:opensora/models/mmdit/model.py``.

Constructor arguments are the fields of upstream's ``MMDiTConfig`` (``from_pretrained``/``cache_dir`` are
loader fields: use ``MMDiTModel.from_pretrained`` or ``converters``). Attribute names are BFL Flux's, so
``Open_Sora_v2.safetensors`` loads strictly into ``fused_qkv=False`` and Flux-dev files into ``fused_qkv=True``
(``converters`` maps between the layouts and the two RoPE pairings, docs/mmdit.md). Sequence parallelism
(upstream's ring attention over colossalai) is not part of the twins.
"""
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from pt_reference.layers.basic import Identity, Linear
from pt_reference.models.mmdit.layers import (DoubleStreamBlock, EmbedND, LastLayer, LigerEmbedND, MLPEmbedder,
                                              SingleStreamBlock, timestep_embedding)


class MMDiTModel(nn.Module):
    def __init__(self, in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                 num_heads=24, depth=19, depth_single_blocks=38, axes_dim=(16, 56, 56), theta=10000, qkv_bias=True,
                 guidance_embed=False, cond_embed=False, fused_qkv=True, grad_ckpt_settings=None,
                 use_liger_rope=False, patch_size=2):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.patch_size = patch_size
        self.guidance_embed, self.cond_embed = guidance_embed, cond_embed
        self.fused_qkv, self.use_liger_rope = fused_qkv, use_liger_rope
        if hidden_size % num_heads != 0:
            raise ValueError(f"Hidden size {hidden_size} must be divisible by num_heads {num_heads}")
        pe_dim = hidden_size // num_heads
        if sum(axes_dim) != pe_dim:
            raise ValueError(f"Got {list(axes_dim)} but expected positional dim {pe_dim}")
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.grad_ckpt_settings = tuple(grad_ckpt_settings) if grad_ckpt_settings else None

        pe_cls = LigerEmbedND if use_liger_rope else EmbedND
        self.pe_embedder = pe_cls(dim=pe_dim, theta=theta, axes_dim=axes_dim)
        self.img_in = Linear(in_channels, hidden_size, bias=True)
        self.time_in = MLPEmbedder(in_dim=256, hidden_dim=hidden_size)
        self.vector_in = MLPEmbedder(vec_in_dim, hidden_size)
        self.guidance_in = MLPEmbedder(in_dim=256, hidden_dim=hidden_size) if guidance_embed else Identity()
        # cond_in sees pack(cat(mask [1 ch], masked reference latent)): in_channels + patch^2 features
        self.cond_in = Linear(in_channels + patch_size ** 2, hidden_size, bias=True) if cond_embed else Identity()
        self.txt_in = Linear(context_in_dim, hidden_size)
        self.double_blocks = nn.ModuleList([
            DoubleStreamBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, fused_qkv=fused_qkv)
            for _ in range(depth)])
        self.single_blocks = nn.ModuleList([
            SingleStreamBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, fused_qkv=fused_qkv)
            for _ in range(depth_single_blocks)])
        self.final_layer = LastLayer(hidden_size, 1, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        if self.cond_embed and self.cond_in.weight.device.type != "meta":
            nn.init.zeros_(self.cond_in.weight)
            nn.init.zeros_(self.cond_in.bias)

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """A release folder / converted file; the bare ``Open_Sora_v2.safetensors`` needs ``model=<preset>``."""
        from converters import from_pretrained

        return from_pretrained(cls, path, "pt", **overrides)

    def set_attention_backend(self, backend):
        """"math" (written out, fp32 softmax) or "sdpa" (PyTorch's fused kernel)."""
        for block in list(self.double_blocks) + list(self.single_blocks):
            block.attn_backend = backend
        return self

    def prepare_block_inputs(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None):
        if img.ndim != 3 or txt.ndim != 3:
            raise ValueError("Input img and txt tensors must have 3 dimensions.")
        img = self.img_in(img)
        if self.cond_embed:
            if cond is None:
                raise ValueError("Didn't get conditional input for conditional model.")
            img = img + self.cond_in(cond)
        vec = self.time_in(timestep_embedding(timesteps, 256))
        if self.guidance_embed:
            if guidance is None:
                raise ValueError("Didn't get guidance strength for guidance distilled model.")
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256))
        vec = vec + self.vector_in(y_vec)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))    # token order [txt, img]
        return img, txt, vec, pe

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None, **kwargs):
        """img [B, N, in_channels] packed latent tokens; img_ids [B, N, 3] (t, h, w); txt [B, L, context_in_dim]
        (T5); txt_ids [B, L, 3] (zeros); timesteps [B] in [0, 1]; y_vec [B, vec_in_dim] (CLIP pooled);
        cond [B, N, in_channels + patch^2] (cond_embed); guidance [B] (guidance_embed) -> [B, N, in_channels]."""
        img, txt, vec, pe = self.prepare_block_inputs(img, img_ids, txt, txt_ids, timesteps, y_vec, cond, guidance)
        # gradient checkpointing of the first n double / single blocks (upstream's grad_ckpt_settings)
        n_double, n_single = self.grad_ckpt_settings or (0, 0)
        ckpt = self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.double_blocks):
            if ckpt and i < n_double:
                img, txt = checkpoint(block, img, txt, vec, pe, use_reentrant=False)
            else:
                img, txt = block(img, txt, vec, pe)
        img = torch.cat((txt, img), 1)
        for i, block in enumerate(self.single_blocks):
            if ckpt and i < n_single:
                img = checkpoint(block, img, vec, pe, use_reentrant=False)
            else:
                img = block(img, vec, pe)
        img = img[:, txt.shape[1]:, ...]
        return self.final_layer(img, vec)
