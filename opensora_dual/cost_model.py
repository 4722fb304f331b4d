"""Analytic cost model of the registered presets: parameters, FLOPs, activation memory and step time.

Framework-free (no torch / mindspore): the counts come from each family's constructor kwargs, written out layer
by layer the way the twins build them, so ``param_count(preset)`` equals ``sum(p.numel())`` of a built twin (tests
check every small preset) and the published full-size counts (STDiT-XL/2 759,620,768; STDiT2-XL/2 767,452,100;
STDiT3-XL/2 1,207,643,972; OpenSora-v2-MMDiT 11,891,390,528).

Counting rules (``docs/cost_model.md``):
- matmul ``[m, k] @ [k, n]`` = 2·m·k·n FLOPs (linears, patch embeddings written as linears);
- attention = QKᵀ + AV = 4·sequences·heads·q_len·kv_len·head_dim;
- convolution = 2·C_out·(C_in/groups)·prod(kernel)·output positions;
- norms, activations, residuals and modulation are "other" (counted, not timed: memory-bound work that the
  utilisation figure absorbs);
- a train step = 3 forwards (forward + backward at 2×), 4 with recompute (the forward runs again).
Activation memory is an estimate: every linear / conv / norm / activation saves its input, attention saves
q, k, v, out (+ the probabilities on a math path); with recompute only each block's input is kept plus one
block's internals during its backward.

Use from code::

    from opensora_dual import cost_model as cm
    cm.param_count("STDiT3-XL/2")                                   # 1207643972
    case = cm.Case(batch=1, frames=51, height=720, width=1280, dtype="bf16")
    t = cm.dit_forward("STDiT3-XL/2", case)                         # a Tally: .flops(), .by_kind(), .ops
    cm.inference_step_time("STDiT3-XL/2", case, "ascend")           # seconds per sampler step (CFG batch 2)
    cm.calibration_table()                                          # predicted vs published rows
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
MATMUL_KINDS = ("linear", "attention", "conv")


# ---------------------------------------------------------------------------------------------------------------
# the tally: ops and parameters

@dataclass
class Op:
    name: str          # module path, e.g. "spatial_blocks.3.attn.qkv"
    kind: str          # "linear" | "attention" | "conv" | "other"
    flops: float       # forward FLOPs of this call
    params: int        # parameters of the module (0 for attention / other)
    act_elems: float   # elements saved for the backward pass by this call
    block: Optional[str] = None   # the recompute unit (transformer block) this op runs in


class Tally:
    """Accumulates the ops of one forward and the parameters of the modules it names. A module's parameters are
    registered by name, so a module called several times (per frame, per tile, per CFG half) counts once; a
    module called with zero rows still registers its parameters (this is how ``param_count`` walks a model)."""

    def __init__(self, flash: bool = True):
        self.ops: List[Op] = []
        self.params: Dict[str, int] = {}
        self.flash = flash                     # attention saves no probability matrix (flash / fused kernels)
        self.block: Optional[str] = None
        self.block_inputs: Dict[str, float] = {}   # recompute unit -> elements of its saved input

    # parameters and bookkeeping
    def param(self, name: str, n: int):
        self.params[name] = int(n)

    def begin_block(self, name: str, input_elems: float):
        self.block = name
        self.block_inputs[name] = self.block_inputs.get(name, 0.0) + input_elems

    def end_block(self):
        self.block = None

    def _op(self, name, kind, flops, params, act):
        self.ops.append(Op(name, kind, float(flops), int(params), float(act), self.block))

    # layers
    def linear(self, name: str, m: float, k: int, n: int, bias: bool = True):
        """``m`` rows through Linear(k, n)."""
        p = k * n + (n if bias else 0)
        self.param(name, p)
        self._op(name, "linear", 2.0 * m * k * n, p, m * k)

    def conv(self, name: str, cin: int, cout: int, kernel: Tuple[int, ...], out_positions: float,
             in_elems: float, bias: bool = True, groups: int = 1):
        """A convolution producing ``out_positions`` output positions (batch × spatial) of ``cout`` channels."""
        kvol = math.prod(kernel)
        p = cout * (cin // groups) * kvol + (cout if bias else 0)
        self.param(name, p)
        self._op(name, "conv", 2.0 * cout * (cin // groups) * kvol * out_positions, p, in_elems)

    def attention(self, name: str, seqs: float, heads: int, q_len: float, kv_len: float, head_dim: int):
        """Scaled dot-product attention over ``seqs`` independent sequences (QKᵀ and AV)."""
        flops = 4.0 * seqs * heads * q_len * kv_len * head_dim
        act = seqs * heads * head_dim * (2 * q_len + 2 * kv_len)          # q, k, v, out
        if not self.flash:
            act += seqs * heads * q_len * kv_len                          # softmax probabilities
        self._op(name, "attention", flops, 0, act)

    def other(self, name: str, elems: float, flops_per_elem: float = 5.0, params: int = 0, saves: bool = True):
        """Norms, activations, modulation: memory-bound, counted but not timed."""
        if params:
            self.param(name, params)
        self._op(name, "other", flops_per_elem * elems, params, elems if saves else 0.0)

    # summaries
    def param_total(self) -> int:
        return sum(self.params.values())

    def flops(self, kinds=None) -> float:
        return sum(o.flops for o in self.ops if kinds is None or o.kind in kinds)

    def by_kind(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for o in self.ops:
            out[o.kind] = out.get(o.kind, 0.0) + o.flops
        return out

    def activation_bytes(self, dtype: str = "bf16", recompute: bool = False) -> float:
        """Saved-for-backward bytes of one training forward (estimate)."""
        b = DTYPE_BYTES[dtype]
        if not recompute:
            return b * sum(o.act_elems for o in self.ops)
        outside = sum(o.act_elems for o in self.ops if o.block is None)
        per_block: Dict[str, float] = {}
        for o in self.ops:
            if o.block is not None:
                per_block[o.block] = per_block.get(o.block, 0.0) + o.act_elems
        inner = max(per_block.values(), default=0.0)
        return b * (outside + sum(self.block_inputs.values()) + inner)

    def merge(self, other: "Tally", prefix: str = ""):
        for k, v in other.params.items():
            self.params[prefix + k] = v
        for o in other.ops:
            self.ops.append(Op(prefix + o.name, o.kind, o.flops, o.params, o.act_elems,
                               None if o.block is None else prefix + o.block))
        for k, v in other.block_inputs.items():
            self.block_inputs[prefix + k] = v
        return self


# ---------------------------------------------------------------------------------------------------------------
# the case: what runs

@dataclass
class Case:
    """A video case in pixels: ``batch`` samples (per device) of ``frames`` × ``height`` × ``width``; ``text_len``
    caption tokens (None: the release's padded length); ``cfg`` forward passes per sampler step (None: the
    release's default: 2 for 1.x, 3 for 2.0's i2v denoiser, 1 for guidance-distilled Flux)."""
    batch: int = 1
    frames: int = 16
    height: int = 256
    width: int = 256
    text_len: Optional[int] = None
    cfg: Optional[int] = None
    dtype: str = "bf16"


def _ceil_div(a, b):
    return -(-a // b)


def _family(preset_or_family: str):
    from opensora_dual.registry import get_family, resolve

    try:
        fam, kw = resolve(preset_or_family)
        return fam.name, kw
    except KeyError:
        return get_family(preset_or_family).name, {}


def _kwargs(preset: str, overrides: Optional[dict]) -> Tuple[str, dict]:
    """(family name, full constructor kwargs with the family's defaults)."""
    fam, kw = _family(preset)
    kw.update(overrides or {})
    defaults = _DEFAULTS[fam]()
    return fam, {**defaults, **kw}


def _defaults_stdit():
    from opensora_dual.families.stdit import CONFIG_DEFAULTS
    return dict(CONFIG_DEFAULTS)


def _defaults_stdit2():
    from opensora_dual.families.stdit2 import CONSTRUCTOR_DEFAULTS
    return dict(CONSTRUCTOR_DEFAULTS)


def _defaults_stdit3():
    from opensora_dual.families.stdit3 import CONFIG_DEFAULTS
    return dict(CONFIG_DEFAULTS)


def _defaults_mmdit():
    from opensora_dual.families.mmdit import CONFIG_DEFAULTS
    return dict(CONFIG_DEFAULTS)


def _defaults_t5():
    from opensora_dual.families.t5 import CONFIG_DEFAULTS
    return dict(CONFIG_DEFAULTS)


def _defaults_clip():
    from opensora_dual.families.clip import CONFIG_DEFAULTS
    return dict(CONFIG_DEFAULTS)


def _defaults_vae2d():
    from opensora_dual.families.vae2d import SD_VAE_FT_EMA
    return dict(SD_VAE_FT_EMA)


def _defaults_vae_temporal():
    return dict(in_out_channels=4, latent_embed_dim=4, embed_dim=4, filters=128, num_res_blocks=4,
                channel_multipliers=(1, 2, 2, 4), temporal_downsample=(True, True, False), num_groups=32)


def _defaults_vae_pipeline():
    from opensora_dual.families.vae_pipeline import opensora_v1_2_config
    return opensora_v1_2_config()


def _defaults_hunyuan():
    from opensora_dual.families.hunyuan_vae import CONFIG_DEFAULTS
    return dict(CONFIG_DEFAULTS)


_DEFAULTS = {"stdit": _defaults_stdit, "stdit2": _defaults_stdit2, "stdit3": _defaults_stdit3,
             "mmdit": _defaults_mmdit, "t5": _defaults_t5, "clip_text": _defaults_clip, "vae2d": _defaults_vae2d,
             "vae_temporal": _defaults_vae_temporal, "vae_pipeline": _defaults_vae_pipeline,
             "hunyuan_vae": _defaults_hunyuan}
DIT_FAMILIES = ("stdit", "stdit2", "stdit3", "mmdit")
NOT_MODELLED = {"dc_ae": "Video DC-AE (EViT linear-attention stages): not modelled; OpenSora-v2-MMDiT-DCAE's "
                         "latent size is, its VAE cost is not"}


# ---------------------------------------------------------------------------------------------------------------
# latent sizes per release

def latent_shape(family: str, kw: dict, frames: int, height: int, width: int) -> Tuple[int, int, int, int]:
    """(channels, T, H, W) of the latent a family's release VAE makes from a ``frames × height × width`` video."""
    if family in ("stdit", "stdit2"):          # sd-vae-ft-ema, frame by frame: 1×8×8, 4 ch
        return kw["in_channels"], frames, _ceil_div(height, 8), _ceil_div(width, 8)
    if family == "stdit3":                     # OpenSoraVAE_V1_2: 17-frame chunks -> 5 latents, 8×8
        from opensora_dual.families.vae_pipeline import latent_frames
        return kw["in_channels"], latent_frames(frames), _ceil_div(height, 8), _ceil_div(width, 8)
    if family == "mmdit":                      # HunyuanVAE (4×8×8 causal, 16 ch) or DC-AE (4×32×32, 128 ch)
        p = kw["patch_size"]
        c = kw["in_channels"] // (p * p)
        d = (8 if p == 2 else 32) * p          # upstream's AE_SPATIAL_COMPRESSION · patch: 16 (Hunyuan), 32 (DC-AE)
        h16, w16 = _ceil_div(height, 16) * 16, _ceil_div(width, 16) * 16   # sample.py rounds up to 16 first
        return c, (frames - 1) // 4 + 1, p * _ceil_div(h16, d), p * _ceil_div(w16, d)
    raise ValueError(f"{family} is not a DiT family")


def token_grid(family: str, kw: dict, case: Case) -> Tuple[int, int]:
    """(T tokens, S spatial tokens per frame) after patchify."""
    _, T, H, W = latent_shape(family, kw, case.frames, case.height, case.width)
    if family == "mmdit":
        p = kw["patch_size"]
        return T, (H // p) * (W // p)
    pt, ph, pw = kw["patch_size"]
    return _ceil_div(T, pt), _ceil_div(H, ph) * _ceil_div(W, pw)


# ---------------------------------------------------------------------------------------------------------------
# DiT families

def _mlp(t: Tally, name: str, m: float, c: int, hidden: int, fc=("fc1", "fc2")):
    t.other(f"{name}.norm", m * c)
    t.linear(f"{name}.{fc[0]}", m, c, hidden)
    t.other(f"{name}.act", m * hidden, 8.0)
    t.linear(f"{name}.{fc[1]}", m, hidden, c)


def _self_attention(t, name, m, c, heads, seqs, seq_len, qk_norm, qkv="qkv", proj="proj"):
    hd = c // heads
    t.other(f"{name}.norm", m * c)
    t.linear(f"{name}.{qkv}", m, c, 3 * c)
    if qk_norm:
        t.other(f"{name}.q_norm", m * c, params=hd)
        t.other(f"{name}.k_norm", m * c, params=hd)
    t.attention(f"{name}.sdpa", seqs, heads, seq_len, seq_len, hd)
    t.linear(f"{name}.{proj}", m, c, c)


def _cross_attention(t, name, B, N, L, c, heads):
    t.linear(f"{name}.q_linear", B * N, c, c)
    t.linear(f"{name}.kv_linear", B * L, c, 2 * c)
    t.attention(f"{name}.sdpa", B, heads, N, L, c // heads)
    t.linear(f"{name}.proj", B * N, c, c)


def _timestep_mlp(t, name, B, c, freq=256, out=None):
    out = out or c
    t.linear(f"{name}.mlp.0", B, freq, out)
    t.linear(f"{name}.mlp.2", B, out, out)


def _stdit_common_top(t, kw, B, Tt, S, L):
    c = kw["hidden_size"]
    p = tuple(kw["patch_size"])
    N = Tt * S
    t.linear("x_embedder.proj", B * N, kw["in_channels"] * math.prod(p), c)   # Conv3d kernel = stride = patch
    _timestep_mlp(t, "t_embedder", B, c)
    t.linear("t_block.1", B, c, 6 * c)
    t.linear("y_embedder.y_proj.fc1", B * L, kw["caption_channels"], c)
    t.linear("y_embedder.y_proj.fc2", B * L, c, c)


def _final_layer(t, kw, B, N):
    c = kw["hidden_size"]
    out = kw["in_channels"] * (2 if kw.get("pred_sigma", True) else 1)
    t.other("final_layer.norm", B * N * c, params=2 * c)               # scale_shift_table [2, C]
    t.linear("final_layer.linear", B * N, c, math.prod(tuple(kw["patch_size"])) * out)


def _stdit_family_forward(family, kw, B, Tt, S, L, flash=True) -> Tally:
    """STDiT (1.0), STDiT2 (1.1), STDiT3 (1.2): ``B`` samples of ``Tt`` × ``S`` tokens, ``L`` caption tokens."""
    t = Tally(flash)
    c, heads, depth = kw["hidden_size"], kw["num_heads"], kw["depth"]
    hidden = int(c * kw["mlp_ratio"])
    N = Tt * S
    m = B * N
    qk = family in ("stdit2", "stdit3") and kw.get("qk_norm", family == "stdit3")
    _stdit_common_top(t, kw, B, Tt, S, L)
    if family in ("stdit2", "stdit3"):
        t.param("rope.freqs", (c // heads) // 2)
    if family == "stdit3":
        _timestep_mlp(t, "fps_embedder", B, c)
    if family == "stdit2":
        t.linear("t_block_temp.1", B, c, 3 * c)
        _timestep_mlp(t, "csize_embedder", 2 * B, c, out=c // 3)     # (height, width): 2 sizes per sample
        _timestep_mlp(t, "ar_embedder", B, c, out=c // 3)
        _timestep_mlp(t, "fl_embedder", B, c)
        _timestep_mlp(t, "fps_embedder", B, c)

    def block(prefix, spatial: bool, temporal: bool, table: int):
        t.begin_block(prefix, m * c)
        t.param(f"{prefix}.scale_shift_table", table * c)
        if spatial:
            _self_attention(t, f"{prefix}.attn", m, c, heads, B * Tt, S, qk)
        if temporal:
            name = f"{prefix}.attn" if not spatial else f"{prefix}.attn_temp"
            _self_attention(t, name, m, c, heads, B * S, Tt, qk)
        _cross_attention(t, f"{prefix}.cross_attn", B, N, L, c, heads)
        _mlp(t, f"{prefix}.mlp", m, c, hidden)
        t.end_block()

    for i in range(depth):
        if family == "stdit3":
            block(f"spatial_blocks.{i}", True, False, 6)
            block(f"temporal_blocks.{i}", False, True, 6)
        else:
            block(f"blocks.{i}", True, True, 6)
            if family == "stdit2":
                t.param(f"blocks.{i}.scale_shift_table_temporal", 3 * c)
    _final_layer(t, kw, B, N)
    return t


def _mmdit_forward(kw, B, N, L, flash=True, cond=None) -> Tally:
    """MMDiT (2.0 / Flux): ``B`` samples of ``N`` image tokens and ``L`` text tokens."""
    t = Tally(flash)
    c, heads = kw["hidden_size"], kw["num_heads"]
    hd = c // heads
    hidden = int(c * kw["mlp_ratio"])
    bias = kw.get("qkv_bias", True)
    cond = kw["cond_embed"] if cond is None else cond
    p = kw["patch_size"]
    t.linear("img_in", B * N, kw["in_channels"], c)
    t.linear("time_in.in_layer", B, 256, c)
    t.linear("time_in.out_layer", B, c, c)
    if kw["guidance_embed"]:
        t.linear("guidance_in.in_layer", B, 256, c)
        t.linear("guidance_in.out_layer", B, c, c)
    t.linear("vector_in.in_layer", B, kw["vec_in_dim"], c)
    t.linear("vector_in.out_layer", B, c, c)
    if kw["cond_embed"]:
        t.linear("cond_in", B * N if cond else 0, kw["in_channels"] + p * p, c)
    t.linear("txt_in", B * L, kw["context_in_dim"], c)
    M = N + L
    for i in range(kw["depth"]):
        pre = f"double_blocks.{i}"
        t.begin_block(pre, B * M * c)
        for s, rows in (("img", B * N), ("txt", B * L)):
            t.linear(f"{pre}.{s}_mod.lin", B, c, 6 * c)
            t.other(f"{pre}.{s}_norm1", rows * c)
            if kw["fused_qkv"]:
                t.linear(f"{pre}.{s}_attn.qkv", rows, c, 3 * c, bias)
            else:
                for q in ("q_proj", "k_proj", "v_proj"):
                    t.linear(f"{pre}.{s}_attn.{q}", rows, c, c, bias)
            t.other(f"{pre}.{s}_attn.norm.query_norm", rows * c, params=hd)
            t.other(f"{pre}.{s}_attn.norm.key_norm", rows * c, params=hd)
        t.attention(f"{pre}.attn", B, heads, M, M, hd)
        for s, rows in (("img", B * N), ("txt", B * L)):
            t.linear(f"{pre}.{s}_attn.proj", rows, c, c)
            _mlp(t, f"{pre}.{s}_mlp", rows, c, hidden, fc=("0", "2"))
        t.end_block()
    for i in range(kw["depth_single_blocks"]):
        pre = f"single_blocks.{i}"
        rows = B * M
        t.begin_block(pre, rows * c)
        t.linear(f"{pre}.modulation.lin", B, c, 3 * c)
        t.other(f"{pre}.pre_norm", rows * c)
        if kw["fused_qkv"]:
            t.linear(f"{pre}.linear1", rows, c, 3 * c + hidden)
        else:
            t.linear(f"{pre}.q_proj", rows, c, c)
            t.linear(f"{pre}.k_proj", rows, c, c)
            t.linear(f"{pre}.v_mlp", rows, c, c + hidden)
        t.other(f"{pre}.norm.query_norm", rows * c, params=hd)
        t.other(f"{pre}.norm.key_norm", rows * c, params=hd)
        t.attention(f"{pre}.attn", B, heads, M, M, hd)
        t.other(f"{pre}.mlp_act", rows * hidden, 8.0)
        t.linear(f"{pre}.linear2", rows, c + hidden, c)
        t.end_block()
    t.linear("final_layer.adaLN_modulation.1", B, c, 2 * c)
    t.other("final_layer.norm", B * N * c)
    t.linear("final_layer.linear", B * N, c, kw["in_channels"])
    return t


def dit_forward(preset: str, case: Optional[Case] = None, flash: bool = True, latent=None, **overrides) -> Tally:
    """One forward of a DiT preset on ``case.batch`` samples (no CFG doubling here: see ``inference_step``).
    ``latent`` = (T, H, W) of the latent overrides the pixel size (the CPU benchmark configs are given in
    latents). ``case`` None: zero tokens (parameters only)."""
    fam, kw = _kwargs(preset, overrides)
    if fam not in DIT_FAMILIES:
        raise ValueError(f"{preset} is a {fam} model, not a DiT")
    case = case or Case(batch=0)
    B = case.batch
    if fam == "mmdit":
        L = case.text_len if case.text_len is not None else 512
        if latent is not None:
            T, H, W = latent
            p = kw["patch_size"]
            N = T * (H // p) * (W // p)
        else:
            Tt, S = token_grid(fam, kw, case)
            N = Tt * S
        return _mmdit_forward(kw, B, N, L, flash)
    L = case.text_len if case.text_len is not None else kw["model_max_length"]
    if latent is not None:
        T, H, W = latent
        pt, ph, pw = kw["patch_size"]
        Tt, S = _ceil_div(T, pt), _ceil_div(H, ph) * _ceil_div(W, pw)
    else:
        Tt, S = token_grid(fam, kw, case)
    return _stdit_family_forward(fam, kw, B, Tt, S, L, flash)


# ---------------------------------------------------------------------------------------------------------------
# text encoders

def _t5_forward(kw, B, L, flash=True) -> Tally:
    t = Tally(flash)
    d, inner, heads = kw["d_model"], kw["num_heads"] * kw["d_kv"], kw["num_heads"]
    gated = str(kw["feed_forward_proj"]).startswith("gated")
    m = B * L
    t.param("shared", kw["vocab_size"] * d)
    for i in range(kw["num_layers"]):
        pre = f"encoder.block.{i}.layer"
        t.begin_block(f"encoder.block.{i}", m * d)
        t.other(f"{pre}.0.layer_norm", m * d, params=d)
        for q in "qkvo":
            t.linear(f"{pre}.0.SelfAttention.{q}", m, d if q != "o" else inner, inner if q != "o" else d, False)
        if i == 0:
            t.param(f"{pre}.0.SelfAttention.relative_attention_bias", kw["relative_attention_num_buckets"] * heads)
        t.attention(f"{pre}.0.sdpa", B, heads, L, L, kw["d_kv"])
        t.other(f"{pre}.1.layer_norm", m * d, params=d)
        if gated:
            t.linear(f"{pre}.1.DenseReluDense.wi_0", m, d, kw["d_ff"], False)
            t.linear(f"{pre}.1.DenseReluDense.wi_1", m, d, kw["d_ff"], False)
        else:
            t.linear(f"{pre}.1.DenseReluDense.wi", m, d, kw["d_ff"], False)
        t.other(f"{pre}.1.act", m * kw["d_ff"], 8.0)
        t.linear(f"{pre}.1.DenseReluDense.wo", m, kw["d_ff"], d, False)
        t.end_block()
    t.other("encoder.final_layer_norm", m * d, params=d)
    return t


def _clip_forward(kw, B, L, flash=True) -> Tally:
    t = Tally(flash)
    d, heads, ff = kw["hidden_size"], kw["num_attention_heads"], kw["intermediate_size"]
    m = B * L
    t.param("embeddings.token_embedding", kw["vocab_size"] * d)
    t.param("embeddings.position_embedding", kw["max_position_embeddings"] * d)
    for i in range(kw["num_hidden_layers"]):
        pre = f"encoder.layers.{i}"
        t.begin_block(pre, m * d)
        t.other(f"{pre}.layer_norm1", m * d, params=2 * d)
        for q in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t.linear(f"{pre}.self_attn.{q}", m, d, d)
        t.attention(f"{pre}.sdpa", B, heads, L, L, d // heads)
        t.other(f"{pre}.layer_norm2", m * d, params=2 * d)
        t.linear(f"{pre}.mlp.fc1", m, d, ff)
        t.other(f"{pre}.mlp.act", m * ff, 8.0)
        t.linear(f"{pre}.mlp.fc2", m, ff, d)
        t.end_block()
    t.other("final_layer_norm", m * d, params=2 * d)
    return t


# ---------------------------------------------------------------------------------------------------------------
# VAEs: shape-tracking conv walks. A feature map is (batch, C, T, H, W); 2D VAEs run frame by frame (T in batch).

class _Map:
    def __init__(self, b, c, t, h, w):
        self.b, self.c, self.t, self.h, self.w = b, c, t, h, w

    def elems(self):
        return self.b * self.c * self.t * self.h * self.w

    def positions(self):
        return self.b * self.t * self.h * self.w


def _conv(tl: Tally, name, x: _Map, cout, k=(3, 3, 3), stride=(1, 1, 1), bias=True, t_out=None) -> _Map:
    """A 'same'-padded (causal or symmetric) conv: spatial out = ceil(in / stride); time out given or same rule."""
    t_o = t_out if t_out is not None else _ceil_div(x.t, stride[0])
    y = _Map(x.b, cout, t_o, _ceil_div(x.h, stride[1]), _ceil_div(x.w, stride[2]))
    tl.conv(name, x.c, cout, k, y.positions(), x.elems(), bias)
    return y


def _gn(tl, name, x: _Map):
    tl.other(name, x.elems(), 8.0, params=2 * x.c)


def _resnet(tl, name, x: _Map, cout, k3, shortcut_name="conv_shortcut", conv_bias=True, norms=("norm1", "norm2"),
            convs=("conv1", "conv2"), suffix="") -> _Map:
    _gn(tl, f"{name}.{norms[0]}", x)
    tl.other(f"{name}.act1", x.elems(), 4.0)
    h = _conv(tl, f"{name}.{convs[0]}{suffix}", x, cout, k3, bias=conv_bias)
    _gn(tl, f"{name}.{norms[1]}", h)
    tl.other(f"{name}.act2", h.elems(), 4.0)
    h = _conv(tl, f"{name}.{convs[1]}{suffix}", h, cout, k3, bias=conv_bias)
    if x.c != cout:
        _conv(tl, f"{name}.{shortcut_name}{suffix}", x, cout, tuple(1 for _ in k3), bias=conv_bias)
    return h


def _mid_attention(tl, name, x: _Map, seqs, seq_len):
    """diffusers single-head mid-block attention over ``seq_len`` positions with C channels."""
    _gn(tl, f"{name}.group_norm", x)
    rows = x.positions()
    for q in ("to_q", "to_k", "to_v"):
        tl.linear(f"{name}.{q}", rows, x.c, x.c)
    tl.attention(f"{name}.sdpa", seqs, 1, seq_len, seq_len, x.c)
    tl.linear(f"{name}.to_out.0", rows, x.c, x.c)


def _vae2d_walk(tl: Tally, kw, frames, h, w, encode=True, decode=True):
    """diffusers AutoencoderKL on ``frames`` images of h × w (batch folded into frames)."""
    ch = tuple(kw["block_out_channels"])
    lpb, lat = kw["layers_per_block"], kw["latent_channels"]
    k = (3, 3)
    n = len(ch)
    f = 2 ** (n - 1)
    if encode:
        x = _Map(frames, kw["in_channels"], 1, h, w)
        x = _conv(tl, "encoder.conv_in", x, ch[0], k)
        for i, c in enumerate(ch):
            for j in range(lpb):
                x = _resnet(tl, f"encoder.down_blocks.{i}.resnets.{j}", x, c, k)
            if i < n - 1:
                x = _conv(tl, f"encoder.down_blocks.{i}.downsamplers.0.conv", x, c, k, stride=(1, 2, 2))
        x = _resnet(tl, "encoder.mid_block.resnets.0", x, ch[-1], k)
        _mid_attention(tl, "encoder.mid_block.attentions.0", x, x.b, x.h * x.w)
        x = _resnet(tl, "encoder.mid_block.resnets.1", x, ch[-1], k)
        _gn(tl, "encoder.conv_norm_out", x)
        x = _conv(tl, "encoder.conv_out", x, 2 * lat, k)
        if kw.get("use_quant_conv", True):
            _conv(tl, "quant_conv", x, 2 * lat, (1, 1))
    if decode:
        x = _Map(frames if decode else 0, lat, 1, _ceil_div(h, f), _ceil_div(w, f))
        if kw.get("use_post_quant_conv", True):
            x = _conv(tl, "post_quant_conv", x, lat, (1, 1))
        x = _conv(tl, "decoder.conv_in", x, ch[-1], k)
        x = _resnet(tl, "decoder.mid_block.resnets.0", x, ch[-1], k)
        _mid_attention(tl, "decoder.mid_block.attentions.0", x, x.b, x.h * x.w)
        x = _resnet(tl, "decoder.mid_block.resnets.1", x, ch[-1], k)
        rev = list(reversed(ch))
        for i, c in enumerate(rev):
            for j in range(lpb + 1):
                x = _resnet(tl, f"decoder.up_blocks.{i}.resnets.{j}", x, c, k)
            if i < n - 1:
                x = _Map(x.b, x.c, 1, 2 * x.h, 2 * x.w)
                x = _conv(tl, f"decoder.up_blocks.{i}.upsamplers.0.conv", x, c, k)
        _gn(tl, "decoder.conv_norm_out", x)
        _conv(tl, "decoder.conv_out", x, kw["out_channels"], k)


def _vae_temporal_walk(tl: Tally, kw, B, T, h, w, encode=True, decode=True, prefix=""):
    """VAE_Temporal on [B, 4, T, h, w] (T padded in front to a multiple of the time factor)."""
    filt, nrb, mults = kw["filters"], kw["num_res_blocks"], tuple(kw["channel_multipliers"])
    tdown = tuple(kw["temporal_downsample"])
    k3 = (3, 3, 3)
    nb = len(mults)
    tf = 2 ** sum(tdown)
    io, led, ed = kw["in_out_channels"], kw["latent_embed_dim"], kw["embed_dim"]
    P = prefix

    def res(name, x, cout):
        return _resnet(tl, name, x, cout, k3, shortcut_name="conv3", conv_bias=False, suffix=".conv")

    if encode:
        x = _Map(B, io, _ceil_div(T, tf) * tf, h, w)
        x = _conv(tl, f"{P}encoder.conv_in.conv", x, filt, k3, bias=False)
        for i, mlt in enumerate(mults):
            for j in range(nrb):
                x = res(f"{P}encoder.block_res_blocks.{i}.{j}", x, filt * mlt)
            if i < nb - 1 and tdown[i]:
                x = _conv(tl, f"{P}encoder.conv_blocks.{i}.conv", x, x.c, k3, stride=(2, 1, 1))
        for j in range(nrb):
            x = res(f"{P}encoder.res_blocks.{j}", x, x.c)
        _gn(tl, f"{P}encoder.norm1", x)
        x = _conv(tl, f"{P}encoder.conv2.conv", x, 2 * led, (1, 1, 1))
        _conv(tl, f"{P}quant_conv.conv", x, 2 * ed, (1, 1, 1))
    if decode:
        x = _Map(B, ed, _ceil_div(T, tf), h, w)
        x = _conv(tl, f"{P}post_quant_conv.conv", x, led, (1, 1, 1))
        top = filt * mults[-1]
        x = _conv(tl, f"{P}decoder.conv1.conv", x, top, k3)
        for j in range(nrb):
            x = res(f"{P}decoder.res_blocks.{j}", x, top)
        for i in reversed(range(nb)):
            for j in range(nrb):
                x = res(f"{P}decoder.block_res_blocks.{i}.{j}", x, filt * mults[i])
            if i > 0 and tdown[i - 1]:
                y = _conv(tl, f"{P}decoder.conv_blocks.{i - 1}.conv", x, 2 * x.c, k3)
                x = _Map(y.b, x.c, 2 * y.t, y.h, y.w)
        _gn(tl, f"{P}decoder.norm1", x)
        _conv(tl, f"{P}decoder.conv_out.conv", x, io, k3)


def _hunyuan_walk(tl: Tally, kw, B, T, h, w, encode=True, decode=True):
    """AutoencoderKLCausal3D on [B, 3, T, h, w], one tile (no tiling here: see ``vae_ops``)."""
    from opensora_dual.families.hunyuan_vae import level_factors

    ch = tuple(kw["block_out_channels"])
    lpb, lat, n = kw["layers_per_block"], kw["latent_channels"], len(ch)
    tcr, scr = kw["time_compression_ratio"], kw["spatial_compression_ratio"]
    k3 = (3, 3, 3)

    def res(name, x, cout):
        return _resnet(tl, name, x, cout, k3, suffix=".conv")

    def mid(pre, x):
        x = res(f"{pre}.resnets.0", x, x.c)
        if kw.get("mid_block_add_attention", True):
            _mid_attention(tl, f"{pre}.attentions.0", x, x.b, x.t * x.h * x.w)
        return res(f"{pre}.resnets.1", x, x.c)

    if encode:
        x = _Map(B, kw["in_channels"], T, h, w)
        x = _conv(tl, "encoder.conv_in.conv", x, ch[0], k3)
        for i, c in enumerate(ch):
            for j in range(lpb):
                x = res(f"encoder.down_blocks.{i}.resnets.{j}", x, c)
            ft, fs = level_factors(i, n, tcr, scr)
            if ft > 1 or fs > 1:
                x = _conv(tl, f"encoder.down_blocks.{i}.downsamplers.0.conv.conv", x, c, k3, stride=(ft, fs, fs),
                          t_out=(x.t - 1) // ft + 1)
        x = mid("encoder.mid_block", x)
        _gn(tl, "encoder.conv_norm_out", x)
        x = _conv(tl, "encoder.conv_out.conv", x, 2 * lat, k3)
        _conv(tl, "quant_conv", x, 2 * lat, (1, 1, 1))
    if decode:
        tf = sf = 1
        for i in range(n):
            a, b = level_factors(i, n, tcr, scr)
            tf, sf = tf * a, sf * b
        x = _Map(B, lat, (T - 1) // tf + 1, _ceil_div(h, sf), _ceil_div(w, sf))
        x = _conv(tl, "post_quant_conv", x, lat, (1, 1, 1))
        x = _conv(tl, "decoder.conv_in.conv", x, ch[-1], k3)
        x = mid("decoder.mid_block", x)
        rev = list(reversed(ch))
        for i, c in enumerate(rev):
            for j in range(lpb + 1):
                x = res(f"decoder.up_blocks.{i}.resnets.{j}", x, c)
            ft, fs = level_factors(i, n, tcr, scr)
            if ft > 1 or fs > 1:
                x = _Map(x.b, x.c, 1 + (x.t - 1) * ft, x.h * fs, x.w * fs)
                x = _conv(tl, f"decoder.up_blocks.{i}.upsamplers.0.conv.conv", x, c, k3)
        _gn(tl, "decoder.conv_norm_out", x)
        _conv(tl, "decoder.conv_out.conv", x, kw["out_channels"], k3)


def _spans(n, tile, overlap):
    """Tile extents along one axis as upstream tiles it: starts every ``tile·(1 − overlap)``, each ≤ tile."""
    if n <= tile:
        return [n]
    step = int(tile * (1 - overlap))
    return [min(tile, n - s) for s in range(0, n, step)]


def vae_ops(preset: str, mode: str = "decode", batch: int = 1, frames: int = 1, height: int = 256,
            width: int = 256, tiling: Optional[bool] = None, flash: bool = True, **overrides) -> Tally:
    """A VAE preset's encode or decode of ``batch`` videos of ``frames × height × width`` pixels. The 1.2 pipeline
    runs the 2D VAE per frame and the temporal VAE per 17-frame chunk; the HunyuanVAE tiles space (256 px tiles,
    overlap 0.25) when ``use_spatial_tiling`` (the 2.0 configs)."""
    fam, kw = _kwargs(preset, overrides)
    enc, dec = mode == "encode", mode == "decode"
    if mode not in ("encode", "decode", "both"):
        raise ValueError("mode is encode | decode | both")
    if mode == "both":
        enc = dec = True
    t = Tally(flash)
    if fam == "vae2d":
        _vae2d_walk(t, kw, batch * frames, height, width, enc, dec)
    elif fam == "vae_temporal":
        _vae_temporal_walk(t, kw, batch, frames, height, width, enc, dec)
    elif fam == "vae_pipeline":
        from opensora_dual.families.vae2d import SDXL_VAE, config_from_json
        from opensora_dual.families.vae_temporal import VAE_TEMPORAL_SD

        v2 = dict(kw["vae_2d"])
        kw2 = {**SDXL_VAE, **(config_from_json(dict(v2["vae_config"])) if v2.get("vae_config") else {})}
        vt = {k: v for k, v in dict(kw["vae_temporal"]).items() if k not in ("type", "from_pretrained")}
        kwt = {**_defaults_vae_temporal(), **(VAE_TEMPORAL_SD if not vt else vt)}
        f = 2 ** (len(kw2["block_out_channels"]) - 1)
        sub = Tally(flash)
        _vae2d_walk(sub, kw2, batch * frames, height, width, enc, dec)
        t.merge(sub, "spatial_vae.module.")
        chunk = kw.get("micro_frame_size", 17)
        full, rem = divmod(frames, chunk)
        for i, n in enumerate([chunk] * full + ([rem] if rem else []) or [0]):
            sub = Tally(flash)
            _vae_temporal_walk(sub, kwt, batch, n, _ceil_div(height, f), _ceil_div(width, f), enc, dec)
            t.merge(sub, "temporal_vae.")
    elif fam == "hunyuan_vae":
        tiling = kw.get("use_spatial_tiling", False) if tiling is None else tiling
        sf = kw["spatial_compression_ratio"]
        tile, overlap = kw["sample_size"], kw["tile_overlap_factor"]
        if tiling and (height > tile or width > tile):
            # decode tiles in latent units (tile/sf), encode in pixels; either way the same pixel tiles
            lt = tile // sf
            hs = [s * sf for s in _spans(_ceil_div(height, sf), lt, overlap)] if dec else _spans(height, tile, overlap)
            ws = [s * sf for s in _spans(_ceil_div(width, sf), lt, overlap)] if dec else _spans(width, tile, overlap)
            tiles = [(a, b) for a in hs for b in ws]
        else:
            tiles = [(height, width)]
        for a, b in tiles:
            _hunyuan_walk(t, kw, batch, frames, a, b, enc, dec)
    elif fam in NOT_MODELLED:
        raise NotImplementedError(NOT_MODELLED[fam])
    else:
        raise ValueError(f"{preset} is a {fam} model, not a VAE")
    return t


def text_ops(preset: str, batch: int = 1, length: Optional[int] = None, **overrides) -> Tally:
    fam, kw = _kwargs(preset, overrides)
    if fam == "t5":
        return _t5_forward(kw, batch, 300 if length is None else length)
    if fam == "clip_text":
        return _clip_forward(kw, batch, kw["max_position_embeddings"] if length is None else length)
    raise ValueError(f"{preset} is a {fam} model, not a text encoder")


def model_tally(preset: str, **overrides) -> Tally:
    """The parameters of any modelled preset (a zero-size walk)."""
    fam, _ = _family(preset)
    if fam in DIT_FAMILIES:
        return dit_forward(preset, None, **overrides)
    if fam in ("t5", "clip_text"):
        return text_ops(preset, 0, 0, **overrides)
    if fam in NOT_MODELLED or fam not in _DEFAULTS:
        raise NotImplementedError(NOT_MODELLED.get(fam, f"family {fam}: not modelled"))
    return vae_ops(preset, "both", 0, 1, 8, 8, tiling=False, **overrides)


def param_count(preset: str, **overrides) -> int:
    """Parameters (``sum(p.numel() for p in twin.parameters())`` of the PyTorch twin: buffers excluded)."""
    return model_tally(preset, **overrides).param_total()


# ---------------------------------------------------------------------------------------------------------------
# steps: what one sampler step / one train step runs

RELEASE_OF = {"stdit": "1.0", "stdit2": "1.1", "stdit3": "1.2", "mmdit": "2.0"}
# the VAE each release runs (live encode in training rows, decode at the end of a sample)
RELEASE_VAE = {"stdit": "sd-vae-ft-ema", "stdit2": "sd-vae-ft-ema", "stdit3": "OpenSoraVAE_V1_2",
               "mmdit": "HunyuanVAE"}
RELEASE_TEXT = {"stdit": ("T5-v1.1-XXL", 120), "stdit2": ("T5-v1.1-XXL", 200), "stdit3": ("T5-v1.1-XXL", 300),
                "mmdit": ("T5-v1.1-XXL", 512)}


def cfg_passes(preset: str, case: Case) -> int:
    """Forward passes per sampler step: classifier-free guidance batches [cond; uncond] (1.x: 2), the 2.0 i2v
    denoiser [text+image; image; none] (3), guidance-distilled Flux (1)."""
    if case.cfg is not None:
        return case.cfg
    fam, kw = _kwargs(preset, {})
    if fam == "mmdit":
        return 1 if kw["guidance_embed"] else 3
    return 2


def inference_step(preset: str, case: Case, flash: bool = True, latent=None, **overrides) -> Tally:
    """One sampler step: the DiT forward on batch × CFG passes (one batched call, as the samplers do)."""
    passes = cfg_passes(preset, case)
    big = Case(case.batch * passes, case.frames, case.height, case.width, case.text_len, case.cfg, case.dtype)
    return dit_forward(preset, big, flash=flash, latent=latent, **overrides)


def train_flops(fwd: Tally, recompute: bool) -> Dict[str, float]:
    """FLOPs of a train step by kind: forward + backward (2×) [+ the recomputed forward]."""
    mult = 4.0 if recompute else 3.0
    return {k: mult * v for k, v in fwd.by_kind().items()}


# ---------------------------------------------------------------------------------------------------------------
# devices and step time

@dataclass
class Device:
    name: str
    peak_bf16: float          # dense bf16/fp16 matmul FLOP/s
    fp32_ratio: float         # fp32 matmul peak / bf16 peak
    source: str
    utilisation: Optional[float] = None   # None: calibrated (see calibrate())


# One utilisation figure for the accelerators, calibrated from ONE MindSpore-on-Ascend row (CALIBRATION_ROW) and
# carried to the H100 as the same fraction of its own peak. The CPU's "peak" is measured at run time with a torch
# fp32 matmul (benchmarks/cost_model.py --device cpu), i.e. an achieved rate, so its utilisation is 1.
DEVICES = {
    "ascend": Device("Ascend 910B (Atlas 800T A2)", 313e12, 0.5,
                     "fp16/bf16 ~313 TFLOPS dense as commonly quoted for the 910B (third-party pages quote 280-320; "
                     "Huawei publishes no single figure); fp32 taken as half (HF32 cube mode)"),
    "h100": Device("NVIDIA H100 SXM (H800 same compute)", 989e12, 0.5,
                   "NVIDIA H100 datasheet: bf16 dense 989 TFLOPS (1979 with sparsity); TF32 dense 494 (half)"),
    "cpu": Device("this machine's CPU (2 shared cores)", 0.0, 1.0, "measured at run time (fp32 torch matmul)", 1.0),
}
# Physically motivated, applied to every row alike (documented in docs/cost_model.md):
# - attention runs at ATTENTION_EFFICIENCY of the linears' rate: short sequences (temporal attention over T tokens,
#   head_dim 72) keep the matrix units far less busy than the big GEMMs; the fused attention kernels' softmax is
#   vector work on top of the cube work;
# - fp32 matmuls at Device.fp32_ratio of the bf16 peak.
ATTENTION_EFFICIENCY = 0.5


def seconds(flops_by_kind: Dict[str, float], device: str, dtype: str = "bf16", utilisation: Optional[float] = None,
            cpu_peak: Optional[float] = None) -> float:
    """Time of the matmul-class FLOPs (linear, conv, attention) at the device's rate."""
    dev = DEVICES[device]
    peak = cpu_peak if device == "cpu" else dev.peak_bf16 * (dev.fp32_ratio if dtype == "fp32" else 1.0)
    if not peak:
        raise ValueError("the cpu device needs cpu_peak (measure it: benchmarks/cost_model.py --device cpu)")
    u = utilisation if utilisation is not None else (dev.utilisation if dev.utilisation is not None
                                                      else calibrate())
    rate = peak * u
    lin = flops_by_kind.get("linear", 0.0) + flops_by_kind.get("conv", 0.0)
    att = flops_by_kind.get("attention", 0.0)
    return lin / rate + att / (rate * ATTENTION_EFFICIENCY)


def inference_step_time(preset: str, case: Case, device: str, **kw) -> float:
    return seconds(inference_step(preset, case).by_kind(), device, case.dtype, **kw)


# ---------------------------------------------------------------------------------------------------------------
# published figures (shared/opensora_facts.md section 9) and their predictions

@dataclass
class Row:
    key: str
    label: str
    device: str              # "ascend" | "h100"
    kind: str                # "infer_step" (s per sampler step) | "infer_total" (s per video: steps + VAE decode
                             # + text encode) | "train_step" (s per step) | "train_sample" (s per sample: 1/throughput)
    preset: str
    case: Case
    published: float         # seconds (per step / per video / per sample as `kind` says)
    steps: int = 1           # sampler steps (infer_total)
    recompute: bool = True   # train rows
    vae_live: bool = True    # train rows: the VAE encodes the batch in the step
    source: str = ""


def _c(b, t, h, w, dt="bf16"):
    return Case(batch=b, frames=t, height=h, width=w, dtype=dt)


MS = "mindone examples/opensora_hpcai README (facts section 9)"
PUBLISHED: List[Row] = [
    # MindSpore on Ascend Atlas 800T A2, graph mode; per-card batch, s/step
    Row("ms-1.0-inf-16x256", "1.0 infer STDiT 1x4 16x256x256 fp32", "ascend", "infer_step", "STDiT-XL/2",
        _c(4, 16, 256, 256, "fp32"), 0.39, source=MS),
    Row("ms-1.0-inf-16x512", "1.0 infer STDiT 1x1 16x512x512 fp32", "ascend", "infer_step", "STDiT-XL/2",
        _c(1, 16, 512, 512, "fp32"), 1.85, source=MS),
    Row("ms-1.0-inf-64x512", "1.0 infer STDiT 1x1 64x512x512 bf16", "ascend", "infer_step", "STDiT-XL/2",
        _c(1, 64, 512, 512), 2.78, source=MS),
    Row("ms-1.1-inf-16x640x360", "1.1 infer STDiT2 1x1 16x640x360 bf16", "ascend", "infer_step", "STDiT2-XL/2",
        _c(1, 16, 640, 360), 1.56, source=MS),
    Row("ms-1.2-inf-51x720p", "1.2 infer STDiT3 1x1 51x720x1280 bf16", "ascend", "infer_step", "STDiT3-XL/2",
        _c(1, 51, 720, 1280), 4.83, source=MS),
    Row("ms-1.2-inf-102x720p", "1.2 infer STDiT3 1x1 102x720x1280 bf16", "ascend", "infer_step", "STDiT3-XL/2",
        _c(1, 102, 720, 1280), 8.81, source=MS),
    Row("ms-1.0-train-16x256", "1.0 train STDiT bs3 16x256x256 fp16", "ascend", "train_step", "STDiT-XL/2",
        _c(3, 16, 256, 256, "fp16"), 1.53, source=MS),
    Row("ms-1.0-train-16x512", "1.0 train STDiT bs1 16x512x512 fp16", "ascend", "train_step", "STDiT-XL/2",
        _c(1, 16, 512, 512, "fp16"), 2.47, source=MS),
    Row("ms-1.0-train-64x512", "1.0 train STDiT bs1 64x512x512 bf16", "ascend", "train_step", "STDiT-XL/2",
        _c(1, 64, 512, 512), 8.52, source=MS),
    Row("ms-1.1-train-16x512", "1.1 train STDiT2 bs1 16x512x512 bf16", "ascend", "train_step", "STDiT2-XL/2",
        _c(1, 16, 512, 512), 2.28, source=MS),
    Row("ms-1.1-train-64x512", "1.1 train STDiT2 bs1 64x512x512 bf16", "ascend", "train_step", "STDiT2-XL/2",
        _c(1, 64, 512, 512), 8.57, source=MS),
    Row("ms-1.1-train-24x576x1024", "1.1 train STDiT2 bs1 24x576x1024 bf16", "ascend", "train_step", "STDiT2-XL/2",
        _c(1, 24, 576, 1024), 8.55, source=MS),
    Row("ms-1.1-train-64x576x1024-cache", "1.1 train STDiT2 bs1 64x576x1024 bf16 VAE cache", "ascend",
        "train_step", "STDiT2-XL/2", _c(1, 64, 576, 1024), 18.94, vae_live=False, source=MS),
    Row("ms-1.2-train-51x720p", "1.2 train STDiT3 bs1 51x720x1280 bf16", "ascend", "train_step", "STDiT3-XL/2",
        _c(1, 51, 720, 1280), 11.24, source=MS),
    Row("ms-2.0-flux-t2i", "2.0 Flux-dev T2I 576x1024 50 steps (PyNative)", "ascend", "infer_total", "Flux-dev",
        _c(1, 1, 576, 1024), 14.7, steps=50, source=MS),
    Row("ms-2.0-129x192x336", "2.0 OS2 t2v 129x192x336 50 steps (PyNative)", "ascend", "infer_total",
        "OpenSora-v2-MMDiT", _c(1, 129, 192, 336), 156.0, steps=50, source=MS),
    Row("ms-2.0-77x576x1024", "2.0 OS2 t2v 77x576x1024 50 steps (PyNative)", "ascend", "infer_total",
        "OpenSora-v2-MMDiT", _c(1, 77, 576, 1024), 1453.0, steps=50, source=MS),
    Row("ms-2.0-129x576x1024", "2.0 OS2 t2v 129x576x1024 50 steps (PyNative)", "ascend", "infer_total",
        "OpenSora-v2-MMDiT", _c(1, 129, 576, 1024), 4973.0, steps=50, source=MS),
    # upstream, H100 80 GB (v1.2 README Gradio table: 30 rflow steps, whole sample)
    *[Row(f"h100-1.2-{res}-{name}", f"1.2 H100 {res} {name} ({t} frames) 30 steps", "h100", "infer_total",
          "STDiT3-XL/2", _c(1, t, h, w), sec, steps=30, source="v1.2.0 README (facts section 9)")
      for res, h, w, name, t, sec in (
          ("360p", 360, 640, "image", 1, 3.0), ("360p", 360, 640, "2s", 51, 18.0), ("360p", 360, 640, "4s", 102, 31.0),
          ("360p", 360, 640, "8s", 204, 62.0), ("360p", 360, 640, "16s", 408, 121.0),
          ("480p", 480, 854, "2s", 51, 29.0), ("480p", 480, 854, "16s", 408, 219.0),
          ("720p", 720, 1280, "image", 1, 6.0), ("720p", 720, 1280, "2s", 51, 68.0),
          ("720p", 720, 1280, "4s", 102, 130.0), ("720p", 720, 1280, "8s", 204, 260.0),
          ("720p", 720, 1280, "16s", 408, 547.0))],
    # upstream 2.0 README: H100/H800, 50 steps, t2v 129 frames, 1 GPU
    Row("h100-2.0-256px", "2.0 H100 t2v 256x256 129 frames 50 steps", "h100", "infer_total", "OpenSora-v2-MMDiT",
        _c(1, 129, 256, 256), 60.0, steps=50, source="main README (facts section 9)"),
    Row("h100-2.0-768px", "2.0 H100 t2v 768x768 129 frames 50 steps", "h100", "infer_total", "OpenSora-v2-MMDiT",
        _c(1, 129, 768, 768), 1656.0, steps=50, source="main README (facts section 9)"),
    # upstream 1.0 (H800 = H100 compute): inference 100 IDDPM steps per sample; training throughput per GPU
    *[Row(f"h800-1.0-inf-{name}", f"1.0 H800 infer {name} 100 steps", "h100", "infer_total", "STDiT-XL/2",
          _c(1, t, s, s), sec, steps=100, source="v1.0.0 README (facts section 9)")
      for name, t, s, sec in (("16x256", 16, 256, 5.0), ("16x512", 16, 512, 20.0), ("64x512", 64, 512, 40.0))],
    *[Row(f"h800-1.0-train-{name}", f"1.0 H800 train {name}{' GC' if gc else ''} (1/samples/s)", "h100",
          "train_sample", "STDiT-XL/2", _c(1, t, s, s), 1.0 / thr, recompute=gc,
          source="v1.0.0 docs/acceleration.md (facts section 9)")
      for name, t, s, thr, gc in (("16x256", 16, 256, 7.0, False), ("16x512", 16, 512, 1.45, False),
                                  ("64x512", 64, 512, 0.40, True))],
]
# Left out (see docs/cost_model.md): sequence-parallel rows (1.2 408 frames on 2/4 cards, 2.0 multi-GPU: they add
# all-to-all / ring communication the model does not count), the 1.2 dynamic-bucket training stages (unknown batch
# mix), the VAE 3D training row (a VAE training step, not a DiT one) and compile times.

CALIBRATION_ROW = "ms-1.2-inf-51x720p"     # large, bf16, graph mode, compute-bound, one card
TOLERANCE = 0.25
# Rows the model misses by more than TOLERANCE, and why (tests assert this set is exactly the set of misses).
KNOWN_MISSES: Dict[str, str] = {
    "ms-1.0-inf-16x256": ("0.39 s/step for batch 4 x CFG 2 in fp32 would need ~130 TFLOPS fp32 on one 910B; the same "
                          "table's 16x512 bs1 row (the same token count) takes 1.85 s: the figure fits '4 cards x batch 1' "
                          "(predicted ratio 0.86), not the '1 card x batch 4' of the facts' legend"),
    "ms-1.1-inf-16x640x360": ("STDiT2 inference runs 2.3x slower per FLOP than STDiT/STDiT3 in the same table (the "
                              "published 1.56 s is 57% of STDiT's 64x512 step for a quarter of its tokens): an "
                              "implementation effect (mindone's STDiT2 path), not a FLOP effect; predicted too fast"),
    "ms-1.0-train-16x512": ("fp16 training at 16x512 is 28% slower than predicted while the bf16 1.0/1.1 training rows "
                            "are within 16-21%: this row sits just past the band (bs 1, loss scaling / fp16 overflow "
                            "checks in the step)"),
    "ms-1.2-train-51x720p": ("the live 1.2 VAE encode (SDXL 2D VAE on 51 frames of 720p + the temporal VAE: 2.8e14 "
                             "conv FLOPs, 1/3 of the step) is counted at the DiT's rate; mindone micro-batches the VAE "
                             "and runs Conv3d in fp16 -- predicted too slow"),
    "ms-2.0-flux-t2i": "2.0 MMDiT (hidden 3072, head_dim 128, one long joint sequence) runs at ~2.5-4x the utilisation of the calibration model (STDiT3, hidden 1152, head_dim 72, short temporal sequences): big GEMMs and flash attention reach a much larger fraction of peak; one utilisation figure cannot serve both; predicted too slow (PyNative, 1 pass per step)",
    "ms-2.0-129x192x336": "2.0 MMDiT (hidden 3072, head_dim 128, one long joint sequence) runs at ~2.5-4x the utilisation of the calibration model (STDiT3, hidden 1152, head_dim 72, short temporal sequences): big GEMMs and flash attention reach a much larger fraction of peak; one utilisation figure cannot serve both; predicted too slow (PyNative, 3 passes per step counted)",
    "ms-2.0-77x576x1024": "2.0 MMDiT (hidden 3072, head_dim 128, one long joint sequence) runs at ~2.5-4x the utilisation of the calibration model (STDiT3, hidden 1152, head_dim 72, short temporal sequences): big GEMMs and flash attention reach a much larger fraction of peak; one utilisation figure cannot serve both; predicted too slow (PyNative, 3 passes per step counted)",
    "ms-2.0-129x576x1024": "2.0 MMDiT (hidden 3072, head_dim 128, one long joint sequence) runs at ~2.5-4x the utilisation of the calibration model (STDiT3, hidden 1152, head_dim 72, short temporal sequences): big GEMMs and flash attention reach a much larger fraction of peak; one utilisation figure cannot serve both; predicted too slow (PyNative, 3 passes per step counted)",
    "h100-1.2-360p-image": "one-frame sample: 30 steps over ~1-4k tokens are launch/overhead-bound, not FLOP-bound; predicted far too fast",
    "h100-1.2-720p-image": "one-frame sample: 30 steps over ~1-4k tokens are launch/overhead-bound, not FLOP-bound; predicted far too fast",
    **{f"h100-1.2-{k}": "H100 1.2 rows run at ~0.65-0.75 of the utilisation carried over from Ascend (upstream v1.2 PyTorch: eager rearranges / modulation / norms between small-hidden (1152) GEMMs; the H100's 3.2x peak over the 910B is not reached by this model); the model predicts too fast"
       for k in ("360p-2s", "360p-4s", "360p-8s", "360p-16s", "480p-2s", "480p-16s", "720p-2s", "720p-4s", "720p-8s",
                 "720p-16s")},
    "h100-2.0-256px": "2.0 MMDiT (hidden 3072, head_dim 128, one long joint sequence) runs at ~2.5-4x the utilisation of the calibration model (STDiT3, hidden 1152, head_dim 72, short temporal sequences): big GEMMs and flash attention reach a much larger fraction of peak; one utilisation figure cannot serve both; predicted too slow",
    "h100-2.0-768px": "2.0 MMDiT (hidden 3072, head_dim 128, one long joint sequence) runs at ~2.5-4x the utilisation of the calibration model (STDiT3, hidden 1152, head_dim 72, short temporal sequences): big GEMMs and flash attention reach a much larger fraction of peak; one utilisation figure cannot serve both; predicted too slow",
    "h800-1.0-inf-64x512": ("40 s for 64 frames is only 2x the 16x512 row's 20 s, while the DiT's linear FLOPs are 4x "
                            "and its attention FLOPs more: no FLOP model can match both rows (the 16x512 one is within "
                            "21%); predicted 2.4x too slow"),
    "h800-1.0-train-16x256": ("a per-sample time from a throughput table (8 GPUs, ZeRO-2): data loading, the optimizer "
                              "step and gradient communication are not counted, and at 0.14 s per sample they matter; "
                              "predicted too fast"),
    "h800-1.0-train-16x512": "as h800-1.0-train-16x256",
}


def row_flops(row: Row) -> Dict[str, Dict[str, float]]:
    """FLOPs by component ("dit", "vae", "text") and kind for one published row."""
    fam, _ = _family(row.preset)
    out: Dict[str, Dict[str, float]] = {}
    c = row.case
    if row.kind == "infer_step":
        out["dit"] = inference_step(row.preset, c).by_kind()
    elif row.kind == "infer_total":
        step = inference_step(row.preset, c).by_kind()
        out["dit"] = {k: v * row.steps for k, v in step.items()}
        if fam in RELEASE_VAE and fam != "mmdit" or not _kwargs(row.preset, {})[1]["guidance_embed"]:
            out["vae"] = vae_ops(RELEASE_VAE[fam], "decode", c.batch, c.frames, c.height, c.width).by_kind()
        te, n = RELEASE_TEXT[fam]
        out["text"] = text_ops(te, c.batch, n).by_kind()
    else:   # train_step / train_sample
        out["dit"] = train_flops(dit_forward(row.preset, c), row.recompute)
        if row.vae_live:
            out["vae"] = vae_ops(RELEASE_VAE[fam], "encode", c.batch, c.frames, c.height, c.width).by_kind()
    return out


def predict(row: Row, utilisation: Optional[float] = None) -> float:
    """Predicted seconds for a published row (same unit as ``row.published``)."""
    total = 0.0
    for part in row_flops(row).values():
        dtype = row.case.dtype if row.kind != "infer_total" else row.case.dtype
        total += seconds(part, row.device, dtype, utilisation=utilisation if utilisation is not None else None)
    if row.kind == "train_sample":
        total /= row.case.batch
    return total


_CALIBRATED: Dict[str, float] = {}


def calibrate(row_key: str = CALIBRATION_ROW) -> float:
    """The accelerators' utilisation: predicted-at-100% / published of the calibration row."""
    if row_key not in _CALIBRATED:
        row = next(r for r in PUBLISHED if r.key == row_key)
        _CALIBRATED[row_key] = predict(row, utilisation=1.0) / row.published
    return _CALIBRATED[row_key]


def calibration_table(row_key: str = CALIBRATION_ROW) -> List[dict]:
    """[{key, label, device, published, predicted, ratio, within, known_miss, calibration}] for every row."""
    u = calibrate(row_key)
    rows = []
    for r in PUBLISHED:
        pred = predict(r, utilisation=u)
        ratio = pred / r.published
        rows.append(dict(key=r.key, label=r.label, device=r.device, kind=r.kind, published=r.published,
                         predicted=pred, ratio=ratio, within=abs(ratio - 1.0) <= TOLERANCE,
                         known_miss=KNOWN_MISSES.get(r.key), calibration=r.key == row_key))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# this machine: the benchmark configs (benchmarks/bench_dit.py small / mid) and the step times the docs record

_MID = dict(depth=4, hidden_size=576, num_heads=8, caption_channels=1024, model_max_length=120)   # bench_dit.MID
_MID_MMDIT = dict(depth=2, depth_single_blocks=2, hidden_size=768, num_heads=8, axes_dim=(16, 40, 40))


@dataclass
class CpuRow:
    key: str
    label: str
    preset: str
    overrides: dict
    latent: Tuple[int, int, int]
    text_len: int
    batch: int               # forward batch (CFG already included)
    kind: str                # "forward" | "train_step"
    measured: float          # seconds, PyTorch eager fp32 on this 2-core machine
    source: str
    recompute: bool = False


MEASURED_CPU: List[CpuRow] = [
    CpuRow("stdit-small-fwd", "STDiT-S/2 small forward", "STDiT-S/2", {}, (3, 16, 16), 16, 1, "forward", 0.126,
           "docs/stdit.md (quieter run)"),
    CpuRow("stdit-mid-fwd", "STDiT mid forward", "STDiT-XL/2", _MID, (8, 32, 32), 120, 1, "forward", 13.2,
           "docs/stdit.md (loaded machine)"),
    CpuRow("stdit2-small-fwd", "STDiT2-S/2 small forward", "STDiT2-S/2", {}, (3, 16, 16), 16, 1, "forward", 0.387,
           "docs/stdit2.md (quieter run)"),
    CpuRow("stdit2-mid-fwd", "STDiT2 mid forward", "STDiT2-XL/2", _MID, (8, 32, 32), 120, 1, "forward", 48.3,
           "docs/stdit2.md (load 3-21)"),
    CpuRow("stdit-mid-dpm-step", "STDiT mid DPM-Solver step (CFG batch 2)", "STDiT-XL/2", _MID, (8, 32, 32), 120, 2,
           "forward", 9.40, "docs/stdit.md (load 3-6)"),
    CpuRow("stdit3-mid-rflow-step", "STDiT3 mid rflow step (CFG batch 2)", "STDiT3-XL/2", _MID, (8, 32, 32), 120, 2,
           "forward", 7.7, "docs/sampling.md"),
    CpuRow("mmdit-small-fwd", "MMDiT-S small forward", "MMDiT-S", {}, (2, 8, 8), 16, 1, "forward", 0.488,
           "docs/mmdit.md"),
    CpuRow("mmdit-mid-fwd", "MMDiT mid forward", "OpenSora-v2-MMDiT", _MID_MMDIT, (8, 32, 32), 120, 1, "forward",
           8.647, "docs/mmdit.md"),
    CpuRow("mmdit-mid-fm-step", "MMDiT mid flow-matching step (batch 3)", "OpenSora-v2-MMDiT", _MID_MMDIT,
           (8, 32, 32), 120, 3, "forward", 20.733, "docs/mmdit.md"),
    CpuRow("stdit3-mid-train", "STDiT3 mid train step (batch 2)", "STDiT3-XL/2", _MID, (8, 32, 32), 120, 2,
           "train_step", 10.3, "docs/training.md"),
    CpuRow("stdit3-mid-train-rc", "STDiT3 mid train step, recompute (batch 2)", "STDiT3-XL/2", _MID, (8, 32, 32),
           120, 2, "train_step", 12.0, "docs/training.md", recompute=True),
]
# measured process peaks of bench_train.py --configs mid (PyTorch, fp32, batch 2): docs/training.md
MEASURED_TRAIN_PEAK_GB = {"no recompute": 4.8, "recompute": 2.7}


def cpu_row_tally(row: CpuRow) -> Tally:
    return dit_forward(row.preset, Case(batch=row.batch, text_len=row.text_len, dtype="fp32"), flash=False,
                       latent=row.latent, **row.overrides)


def cpu_predict(row: CpuRow, cpu_peak: float) -> float:
    t = cpu_row_tally(row)
    flops = t.by_kind() if row.kind == "forward" else train_flops(t, row.recompute)
    return seconds(flops, "cpu", "fp32", cpu_peak=cpu_peak)


def train_memory(preset: str, case: Case, latent=None, flash: bool = True, state_bytes_per_param: int = 20,
                 **overrides) -> Dict[str, float]:
    """Estimated training memory in bytes: activations with and without recompute, and the model state
    (fp32 weights + grads + 2 AdamW moments + EMA = 20 B/param by default)."""
    t = dit_forward(preset, case, flash=flash, latent=latent, **overrides)
    return dict(activations=t.activation_bytes(case.dtype, False),
                activations_recompute=t.activation_bytes(case.dtype, True),
                state=state_bytes_per_param * t.param_total())


# per family, the default size of the summary table: the release's flagship case
DEFAULT_CASES = {"stdit": Case(1, 16, 512, 512), "stdit2": Case(1, 16, 480, 854), "stdit3": Case(1, 51, 720, 1280),
                 "mmdit": Case(1, 129, 768, 768), "t5": Case(1), "clip_text": Case(1), "vae2d": Case(1, 16, 512, 512),
                 "vae_temporal": Case(1, 17, 90, 160), "vae_pipeline": Case(1, 51, 720, 1280),
                 "hunyuan_vae": Case(1, 129, 768, 768)}


def summary(preset: str) -> dict:
    """params, forward GFLOPs at the family's default case, training activation memory (bf16) for a DiT."""
    fam, _ = _family(preset)
    row = dict(preset=preset, family=fam)
    if fam in NOT_MODELLED or fam not in _DEFAULTS:
        row.update(note=NOT_MODELLED.get(fam, f"family {fam}: not modelled"))
        return row
    c = DEFAULT_CASES[fam]
    row["params"] = param_count(preset)
    if fam in DIT_FAMILIES:
        t = dit_forward(preset, c)
        row.update(case=f"{c.frames}x{c.height}x{c.width}", tokens=math.prod(token_grid(fam, _kwargs(preset, {})[1], c)),
                   gflops=t.flops(MATMUL_KINDS) / 1e9, act_gb=t.activation_bytes("bf16") / 1e9,
                   act_rc_gb=t.activation_bytes("bf16", True) / 1e9)
    elif fam in ("t5", "clip_text"):
        t = text_ops(preset, 1)
        row.update(case="1 caption", gflops=t.flops(MATMUL_KINDS) / 1e9)
    else:
        f, h, w = (c.frames, c.height, c.width)
        t = vae_ops(preset, "decode", 1, f, h, w)
        row.update(case=f"decode {f}x{h}x{w}", gflops=t.flops(MATMUL_KINDS) / 1e9)
    return row
