"""Layer-kit parity: every layer type of ``pt_reference.layers`` against its ``ms_impl.layers`` twin, at level
``op``, PyNative and graph, fp32 and (where the CPU has the kernels) fp16. One table of rows; one test body.

Plus bounded hypothesis shape tests and the attention backend switch (``flash`` is the Ascend-only path: on
CPU it must raise, and the ``math`` path is what this suite proves)."""
import mindspore as ms
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mindspore import nn as mnn
from torch import nn as tnn

import ms_impl.layers as M
import pt_reference.layers as P
from ms_impl.layers.basic import CONV_IMPLS
from parity_tests.engine import Args, Case, assert_case


class PtAttention(tnn.Module):
    """The attention core as a module, so the engine can call it like any layer."""

    def __init__(self, backend="math"):
        super().__init__()
        self.backend = backend

    def forward(self, q, k, v, mask=None):
        return P.scaled_dot_product_attention(q, k, v, mask=mask, backend=self.backend)


class MsAttention(mnn.Cell):
    def __init__(self, backend="math"):
        super().__init__()
        self.backend = backend

    def construct(self, q, k, v, mask=None):
        return M.scaled_dot_product_attention(q, k, v, mask=mask, backend=self.backend)


def normal(*shape):
    return lambda rng: [rng.standard_normal(shape)]


def qkv(b=2, h=3, nq=7, nk=5, d=8, masked=False):
    def draw(rng):
        q, k, v = (rng.standard_normal((b, h, n, d)) for n in (nq, nk, nk))
        if not masked:
            return Args(q, k, v)
        mask = rng.random((b, 1, nq, nk)) < 0.6
        mask[..., 0] = True  # every query attends to something (a fully masked row: see test below)
        return Args(q, k, v, mask=mask)
    return draw


def ids(*shape, high=11):
    return lambda rng: [rng.integers(0, high, size=shape).astype(np.int64)]


def pair(name, *args, **kwargs):
    """Both twins of a layer-kit type from one constructor call (same names, same arguments)."""
    return (lambda: getattr(P, name)(*args, **kwargs)), (lambda: getattr(M, name)(*args, **kwargs))


def conv_with(impl, name, *args, **kwargs):
    """A conv pair whose port computes with ``impl`` (the conv_impl switch; the plain rows run the default)."""
    pt_f, ms_f = pair(name, *args, **kwargs)
    return pt_f, (lambda: M.set_conv_impl(ms_f(), impl))


# id, (pt_factory, ms_factory), inputs, dtypes, noise-floor kind (standard: 1.2 for matmul, norms, attention)
LAYERS = [
    ("Linear", pair("Linear", 24, 40), normal(3, 5, 24), ("fp32", "fp16"), "matmul"),
    ("Linear-nobias", pair("Linear", 24, 8, bias=False), normal(6, 24), ("fp32", "fp16"), "matmul"),
    ("Linear-mlp", pair("Linear", 96, 384), normal(2, 50, 96), ("fp32", "fp16"), "matmul"),  # STDiT3-S/2 MLP fc1
    ("LayerNorm-affine", pair("LayerNorm", 32, eps=1e-6), normal(2, 7, 32), ("fp32", "fp16"), "norm"),
    ("LayerNorm-noaffine", pair("LayerNorm", 32, eps=1e-6, elementwise_affine=False), normal(2, 7, 32),
     ("fp32", "fp16"), "norm"),
    ("RMSNorm", pair("RMSNorm", 16, eps=1e-6), normal(2, 3, 5, 16), ("fp32", "fp16"), "norm"),
    ("GroupNorm-4D", pair("GroupNorm", 4, 16), normal(2, 16, 6, 5), ("fp32", "fp16"), "norm"),
    ("GroupNorm-5D", pair("GroupNorm", 4, 16, eps=1e-6), normal(2, 16, 3, 6, 5), ("fp32", "fp16"), "norm"),
    ("Conv2d", pair("Conv2d", 4, 8, 3), normal(2, 4, 9, 8), ("fp32", "fp16"), "matmul"),
    ("Conv2d-stride-pad", pair("Conv2d", 4, 8, 3, stride=2, padding=1), normal(2, 4, 9, 8), ("fp32", "fp16"),
     "matmul"),
    ("Conv3d", pair("Conv3d", 4, 6, 3), normal(1, 4, 5, 6, 7), ("fp32", "fp16"), "matmul"),
    ("Conv3d-stride-pad", pair("Conv3d", 4, 6, (1, 2, 2), stride=(1, 2, 2), padding=(0, 1, 1)),
     normal(2, 4, 3, 8, 9), ("fp32", "fp16"), "matmul"),
    ("Conv3d-patchify", pair("Conv3d", 4, 12, (1, 2, 2), stride=(1, 2, 2)), normal(1, 4, 3, 8, 6),
     ("fp32", "fp16"), "matmul"),
    # every other conv form (conv_impl switch; the rows above run the default, "native" on CPU and Ascend)
    *[row for impl in CONV_IMPLS if impl != "native" for row in (
        (f"Conv2d-{impl}", conv_with(impl, "Conv2d", 4, 8, 3), normal(2, 4, 9, 8), ("fp32", "fp16"), "matmul"),
        (f"Conv2d-{impl}-stride-pad", conv_with(impl, "Conv2d", 4, 8, 3, stride=2, padding=1), normal(2, 4, 9, 8),
         ("fp32", "fp16"), "matmul"),
        (f"Conv3d-{impl}", conv_with(impl, "Conv3d", 4, 6, 3), normal(1, 4, 5, 6, 7), ("fp32", "fp16"), "matmul"),
        (f"Conv3d-{impl}-stride-pad", conv_with(impl, "Conv3d", 4, 6, (1, 2, 2), stride=(1, 2, 2), padding=(0, 1, 1)),
         normal(2, 4, 3, 8, 9), ("fp32", "fp16"), "matmul"),
    )],
    # Embedding: fp32 only. Its table is an fp32 parameter that set_compute_dtype leaves alone (a lookup has
    # no compute), so an "fp16" row would compare the same fp32 numbers again.
    ("Embedding", pair("Embedding", 11, 8), ids(3, 5), ("fp32",), "default"),
    ("GELU-none", pair("GELU"), normal(4, 33), ("fp32", "fp16"), "default"),
    ("GELU-tanh", pair("GELU", approximate="tanh"), normal(4, 33), ("fp32", "fp16"), "default"),
    ("SiLU", pair("SiLU"), normal(4, 33), ("fp32", "fp16"), "default"),
    ("Identity", pair("Identity"), normal(3, 4), ("fp32", "fp16"), "default"),
    ("attention-math", (PtAttention, MsAttention), qkv(), ("fp32", "fp16"), "attention"),
    ("attention-math-mask", (PtAttention, MsAttention), qkv(masked=True), ("fp32", "fp16"), "attention"),
    # the reference's fused SDPA against the port's math path: the backend switch must not change numbers
    ("attention-sdpa-vs-math", (lambda: PtAttention("sdpa"), MsAttention), qkv(masked=True), ("fp32",),
     "attention"),
]


# The attention core is three kernels (matmul, softmax, matmul); the standard lists attention on its "layer" row,
# and that is where it is judged. Measured why it cannot be an "op" on this CPU: MindSpore's fp32 exp is 2.8e-6
# from fp64 (torch 1.7e-8) and its softmax 3.0e-7 (torch 6.8e-8), so op-level allclose(atol 1e-6) fails on 12 of
# 200 random masked draws (rel_fro stays <= 6e-7). test_attention_at_op_level keeps that visible.
def level_of(name):
    return "layer" if name.startswith("attention") else "op"


CASES = [Case(name, factories[0], factories[1], inputs, level=level_of(name), dtype=dtype, mode=mode,
              noise_floor=kind, cache_key=f"test_layers.{name}")
         for name, factories, inputs, dtypes, kind in LAYERS for dtype in dtypes for mode in ("pynative", "graph")]

# Port defects this table found on 2026-11-25 and that ms_impl/layers now fixes (numbers are the measured
# noise-floor ratios before the fix; after it each measured 1.00): fp16 Linear with bias rounded twice (1.24),
# fp16 Conv2d/Conv3d in PyNative (1.22-1.36), fp16 SiLU computed in fp16 (2.15). No case here is marked.


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_layer_parity(case):
    assert_case(case)


def test_table_covers_the_layer_kit():
    """Every public layer-kit name has a row (a new layer without a parity row fails here)."""
    covered = {name.split("-")[0] for name, *_ in LAYERS}
    kit = set(P.__all__) - {"scaled_dot_product_attention"}
    assert kit <= covered, f"layer-kit types without a parity row: {sorted(kit - covered)}"
    assert set(P.__all__) == set(M.__all__) - {"set_compute_dtype", "set_conv_impl"}  # MindSpore-only switches


# ------------------------------------------------------------------------ hypothesis: bounded shapes
@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=3), fin=st.integers(1, 48), fout=st.integers(1, 48),
       bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_linear_shapes(lead, fin, fout, bias, seed):
    pt_f, ms_f = pair("Linear", fin, fout, bias=bias)
    assert_case(Case(f"Linear-{fin}x{fout}", pt_f, ms_f, normal(*lead, fin), level="op", seed=seed))


@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), scale=st.sampled_from([1e-2, 1.0, 30.0]),
       offset=st.floats(0.0, 3.0), seed=st.integers(0, 2 ** 16))
def test_layernorm_shapes(lead, scale, offset, seed):
    """One LayerNorm, built once for the session; only the inputs are drawn. The mean offset is bounded
    relative to the spread (see test_layernorm_ill_conditioned for what happens beyond)."""
    pt_f, ms_f = pair("LayerNorm", 24, eps=1e-6)
    assert_case(Case("LayerNorm-24", pt_f, ms_f, lambda rng: [scale * (rng.standard_normal((*lead, 24)) + offset)],
                     level="op", seed=seed, cache_key="test_layers.hypothesis.LayerNorm-24"))


def test_layernorm_ill_conditioned():
    """Hypothesis found it: rows with mean/std = 300 (x = 3 + 0.01 z) differ by ~2e-5 between the twins, 20x
    the op ceiling. That is fp32 conditioning, not the port: the float32 reference itself is 1.4e-5 away from
    fp64 there. So this input is judged like low precision, by the noise floor: the port must be no worse than
    the reference against fp64 (default noise-floor gate)."""
    import torch

    from parity_tests import standard

    x = (0.01 * np.random.default_rng(0).standard_normal((64, 24)) + 3.0).astype(np.float32)
    ref64 = torch.nn.functional.layer_norm(torch.from_numpy(x).double(), (24,), eps=1e-6).numpy()
    ref32 = torch.nn.functional.layer_norm(torch.from_numpy(x), (24,), eps=1e-6).numpy()
    port = M.LayerNorm(24, eps=1e-6)(ms.Tensor(x)).asnumpy()
    assert standard.rel_fro(ref32, ref64) > standard.ceiling("op", "fp32").rel_fro  # the reference's own error
    assert standard.noise_floor_ratio(port, ref32, ref64) <= standard.noise_floor_gate("default")


@given(t=st.integers(1, 4), h=st.integers(2, 9), w=st.integers(2, 9), stride=st.sampled_from([1, 2]),
       pad=st.integers(0, 1), seed=st.integers(0, 2 ** 16))
def test_conv3d_shapes(t, h, w, stride, pad, seed):
    pt_f, ms_f = pair("Conv3d", 3, 4, (1, 2, 2), stride=(1, stride, stride), padding=(0, pad, pad))
    assert_case(Case("Conv3d", pt_f, ms_f, normal(1, 3, t, h, w), level="op", seed=seed,
                     cache_key=f"test_layers.hypothesis.Conv3d-{stride}-{pad}"))


@given(nq=st.integers(1, 9), nk=st.integers(1, 9), heads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_attention_shapes_with_mask(nq, nk, heads, seed):
    assert_case(Case("attention", PtAttention, MsAttention, qkv(1, heads, nq, nk, 8, masked=True),
                     level=level_of("attention"), seed=seed, cache_key="test_layers.hypothesis.attention"))


def test_attention_at_op_level():
    """The draw hypothesis found (seed 65 of 200), judged at op level. It failed (one element 1.57x over
    allclose) while the port's softmax ran in fp32 on MindSpore's CPU exp; the CPU softmax now runs in fp64."""
    assert_case(Case("attention-op", PtAttention, MsAttention, qkv(1, 3, 7, 3, 8, masked=True), level="op", seed=65))


# ------------------------------------------------------------------------ attention backend switch
def test_flash_attention_raises_on_cpu():
    """``flash`` is the Ascend-only path (ops.flash_attention_score); on CPU it must refuse, not fall back."""
    q = ms.Tensor(np.ones((1, 2, 4, 8), np.float16))
    with pytest.raises(RuntimeError, match=r"runs only on Ascend.*math"):
        M.scaled_dot_product_attention(q, q, q, backend="flash")
    with pytest.raises(RuntimeError, match="only on Ascend"):
        MsAttention("flash")(q, q, q)


def test_unknown_attention_backend_raises_in_the_reference():
    import torch

    q = torch.ones(1, 2, 4, 8)
    with pytest.raises(ValueError, match="unknown attention backend"):
        P.scaled_dot_product_attention(q, q, q, backend="flash")
