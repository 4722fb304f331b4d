"""MMDiT (Open-Sora 2.0, Flux-like), MindSpore port of ``pt_reference/models/mmdit/model.py``.

Same constructor arguments (upstream's ``MMDiTConfig`` fields) and parameter names as the reference.
Switches (each parity-tested):
- ``ms_impl.layers.set_compute_dtype(model, ms.float16)``: fp16 matmuls; norms, RoPE and softmax in fp32;
- ``set_attention_backend("flash")``: ``ops.flash_attention_score`` (Ascend only; raises on CPU);
- ``grad_ckpt_settings=(n_double, n_single)``: ``Cell.recompute`` on the first n double / single blocks
  (upstream's selective gradient checkpointing); ``set_recompute(True)`` recomputes every block;
- graph mode: the forward compiles under ``ms.jit`` / GRAPH_MODE;
- ``set_sequence_parallel(size=None, rank=None)``: the image tokens split over the ranks of an msrun job, text
  replicated; each joint attention exchanges q/k/v and outputs between the ranks (docs/mmdit.md, "Sequence
  parallelism"). Inference only; the reference has no sequence parallelism.
"""
import mindspore as ms
from mindspore import mint, nn

from ms_impl.layers.basic import Identity, Linear
from ms_impl.models.mmdit.layers import (DoubleStreamBlock, EmbedND, LastLayer, LigerEmbedND, MLPEmbedder,
                                         SingleStreamBlock, sp_gather_tokens, sp_split, timestep_embedding)


class MMDiTModel(nn.Cell):
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
        self.depth, self.depth_single_blocks = depth, depth_single_blocks
        self.compute_dtype = ms.float32
        self._recompute = False

        pe_cls = LigerEmbedND if use_liger_rope else EmbedND
        self.pe_embedder = pe_cls(dim=pe_dim, theta=theta, axes_dim=axes_dim)
        self.img_in = Linear(in_channels, hidden_size, bias=True)
        self.time_in = MLPEmbedder(in_dim=256, hidden_dim=hidden_size)
        self.vector_in = MLPEmbedder(vec_in_dim, hidden_size)
        self.guidance_in = MLPEmbedder(in_dim=256, hidden_dim=hidden_size) if guidance_embed else Identity()
        self.cond_in = Linear(in_channels + patch_size ** 2, hidden_size, bias=True) if cond_embed else Identity()
        self.txt_in = Linear(context_in_dim, hidden_size)
        self.double_blocks = nn.CellList([
            DoubleStreamBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, fused_qkv=fused_qkv)
            for _ in range(depth)])
        self.single_blocks = nn.CellList([
            SingleStreamBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, fused_qkv=fused_qkv)
            for _ in range(depth_single_blocks)])
        self.final_layer = LastLayer(hidden_size, 1, self.out_channels)
        if cond_embed:  # upstream zero-inits cond_in (an i2v model starts as its t2v parent)
            self.cond_in.weight.set_data(mint.zeros(self.cond_in.weight.shape, dtype=ms.float32))
            self.cond_in.bias.set_data(mint.zeros(self.cond_in.bias.shape, dtype=ms.float32))
        self.grad_ckpt_settings = tuple(grad_ckpt_settings) if grad_ckpt_settings else None
        if self.grad_ckpt_settings:
            n_double, n_single = self.grad_ckpt_settings
            for block in list(self.double_blocks)[:n_double] + list(self.single_blocks)[:n_single]:
                block.recompute()
        self.sp_size, self.sp_rank = 1, 0

    # ---- switches -------------------------------------------------------------------------------------
    def set_attention_backend(self, backend):
        """"math" (CPU and Ascend) or "flash" (Ascend only: raises at the first forward elsewhere)."""
        if backend not in ("math", "flash"):
            raise ValueError(f"attention backend must be 'math' or 'flash', got {backend!r}")
        for block in list(self.double_blocks) + list(self.single_blocks):
            block.attn_backend = backend
        return self

    def set_recompute(self, enabled=True):
        """Recompute every block in the backward pass. One-way (MindSpore's Cell.recompute cannot be undone)."""
        if enabled == self._recompute:
            return self
        if not enabled:
            raise ValueError("recompute cannot be switched off once set (MindSpore Cell.recompute is one-way); "
                             "build a new model")
        n_double, n_single = self.grad_ckpt_settings or (0, 0)
        for block in list(self.double_blocks)[n_double:] + list(self.single_blocks)[n_single:]:
            block.recompute()
        self.grad_ckpt_settings = (self.depth, self.depth_single_blocks)
        self._recompute = True
        return self

    def set_sequence_parallel(self, size=None, rank=None):
        """Split the image tokens over the ranks of the (msrun) job; the text tokens stay whole on every rank.

        Every joint attention (double and single blocks) gathers the image q/k/v of all ranks, attends over
        [txt; all img] with num_heads/size heads, then gathers the heads and keeps the text and this rank's
        image tokens; everything else is token-local. The output is gathered, so the caller sees [B, N, C] on
        every rank. ``size``/``rank`` default to the job's (``mindspore.communication.init()`` first: launch
        with msrun); outside a job (MindSpore reports one rank), or with size 1, the model runs unsplit.
        Needs num_heads divisible by the size and at least ``size`` image tokens (uneven splits are fine).
        Inference only."""
        if size is None:
            try:
                from mindspore.communication import get_group_size, get_rank

                size, rank = get_group_size(), get_rank()
            except Exception as e:  # a communication backend that failed to come up
                raise RuntimeError("sequence parallelism needs mindspore.communication.init() first (launch "
                                   f"with msrun --worker_num=N): {e}") from None
        rank = 0 if rank is None else rank
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"sequence parallelism needs 0 <= rank < size, got size {size}, rank {rank}")
        if self.num_heads % size:
            raise ValueError(f"sequence parallelism over {size} ranks needs num_heads ({self.num_heads}) "
                             "divisible by it")
        self.sp_size, self.sp_rank = size, rank
        if size > 1:
            from mindspore import ops

            self.all_gather = ops.AllGather()
        for block in list(self.double_blocks) + list(self.single_blocks):
            block.set_sequence_parallel(size, rank)
        return self

    @classmethod
    def from_pretrained(cls, path, **overrides):
        from converters import from_pretrained

        return from_pretrained(cls, path, "ms", **overrides)

    # ---- forward --------------------------------------------------------------------------------------
    def prepare_block_inputs(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None):
        dtype = self.compute_dtype
        img = self.img_in(img.astype(dtype))
        if self.cond_embed:
            if cond is None:
                raise ValueError("Didn't get conditional input for conditional model.")
            img = img + self.cond_in(cond.astype(dtype))
        # the timestep stays fp32 into the sinusoid (upstream rounds it to the model dtype first)
        vec = self.time_in(timestep_embedding(timesteps.astype(ms.float32), 256))
        if self.guidance_embed:
            if guidance is None:
                raise ValueError("Didn't get guidance strength for guidance distilled model.")
            vec = vec + self.guidance_in(timestep_embedding(guidance.astype(ms.float32), 256))
        vec = vec + self.vector_in(y_vec.astype(dtype))
        txt = self.txt_in(txt.astype(dtype))
        pe = self.pe_embedder(mint.cat((txt_ids.astype(ms.float32), img_ids.astype(ms.float32)), dim=1))
        return img, txt, vec, pe

    def construct(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None):
        sizes = None
        if self.sp_size > 1:  # this rank keeps its contiguous share of the image tokens (ids stay whole: RoPE)
            sizes, starts = sp_split(img.shape[1], self.sp_size)
            start, n = starts[self.sp_rank], sizes[self.sp_rank]
            img = img[:, start:start + n]
            if cond is not None:
                cond = cond[:, start:start + n]
        img, txt, vec, pe = self.prepare_block_inputs(img, img_ids, txt, txt_ids, timesteps, y_vec, cond, guidance)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        n_txt = txt.shape[1]
        img = mint.cat((txt, img), dim=1)
        for block in self.single_blocks:
            img = block(img, vec, pe, n_txt)
        img = img[:, n_txt:]
        img = self.final_layer(img, vec)
        if self.sp_size > 1:  # every rank's tokens back in order
            img = sp_gather_tokens(self.all_gather, img, 1, sizes)
        return img
