"""The engine can fail, and says where: perturbed twins fail with the broken module named as the first jump;
identical twins pass; NaN-position, shape and dtype mismatches fail; odd call signatures and tuple/dict results
work; the session cache builds once."""
import dataclasses

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import mint, nn as mnn
from torch import nn as tnn

import ms_impl.layers as M
import pt_reference.layers as P
from parity_tests import engine
from parity_tests.engine import Case, assert_case, run_case

D = 16


# ------------------------------------------------------------------ a small chain built from the layer kit
class PtChain(tnn.Module):
    """fc_in -> norm -> act -> fc_mid -> norm (again) -> fc_out; returns (out, hidden)."""

    def __init__(self):
        super().__init__()
        self.fc_in = P.Linear(D, 2 * D)
        self.norm = P.LayerNorm(2 * D)
        self.act = P.GELU(approximate="tanh")
        self.fc_mid = P.Linear(2 * D, 2 * D)
        self.fc_out = P.Linear(2 * D, D)

    def forward(self, x, scale=1.0):
        h = self.act(self.norm(self.fc_in(x)))
        h = self.norm(self.fc_mid(h)) * scale
        return self.fc_out(h), h

    def encode(self, x):
        return {"mean": self.fc_in(x), "hidden": self.act(self.fc_in(x))}


class _BrokenLinear(M.Linear):
    """A Linear that forgets its bias: the kind of bug the engine must point at."""

    def construct(self, x):
        return mint.nn.functional.linear(self._cast(x), self._cast(self.weight), None)


class _NaNAt(mnn.Cell):
    """Returns its input with element [0, 0] set to NaN."""

    def construct(self, x):
        mask = ms.Tensor(np.eye(x.shape[0], x.shape[1], dtype=bool))
        return x.masked_fill(mask, float("nan"))


class MsChain(mnn.Cell):
    def __init__(self, eps=1e-5, broken_mid=False, out_dtype=None, nan_out=False, cut_out=False):
        super().__init__()
        self.fc_in = M.Linear(D, 2 * D)
        self.norm = M.LayerNorm(2 * D, eps=eps)
        self.act = M.GELU(approximate="tanh")
        self.fc_mid = _BrokenLinear(2 * D, 2 * D) if broken_mid else M.Linear(2 * D, 2 * D)
        self.fc_out = M.Linear(2 * D, D)
        self.out_dtype, self.nan_out, self.cut_out = out_dtype, nan_out, cut_out
        self.nan = _NaNAt()

    def construct(self, x, scale=1.0):
        h = self.act(self.norm(self.fc_in(x)))
        h = self.norm(self.fc_mid(h)) * scale
        out = self.fc_out(h)
        if self.nan_out:
            out = self.nan(out)
        if self.cut_out:
            out = out[:, :-1]
        if self.out_dtype is not None:
            out = out.astype(self.out_dtype)
        return out, h

    def encode(self, x):
        return {"mean": self.fc_in(x), "hidden": self.act(self.fc_in(x))}


def chain_inputs(rng):
    return {"x": rng.standard_normal((4, D)), "scale": 0.5}


def chain_case(name="chain", ms_kwargs=None, **kw):
    ms_kwargs = ms_kwargs or {}
    return Case(name, PtChain, lambda: MsChain(**ms_kwargs), chain_inputs, level="block", **kw)


# ------------------------------------------------------------------ identical twins pass
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_identical_chain_passes(mode, dtype):
    res = assert_case(chain_case(mode=mode, dtype=dtype))
    keys = [r.key for r in res.rows]
    assert keys == ["fc_in", "norm#0", "act", "fc_mid", "norm#1", "fc_out"]  # the norm is compared per call
    assert [o.path for o in res.outputs] == ["[0]", "[1]"]                    # tuple results, leaf by leaf
    assert res.first_jump is None and not res.unmatched
    if mode == "graph":
        assert res.graph_vs_pynative and all(o.verdict.passed for o in res.graph_vs_pynative)
    if dtype == "fp16":
        assert res.outputs[0].metrics.dtype_port == "float16"
        nf = res.outputs[0].noise_floor
        assert nf is not None and nf["torch_floor"] > 0 and nf["passed"]


def test_weights_really_go_through_the_transfer():
    """Without the transfer the port keeps its own random init, and the engine must see that."""
    res = run_case(chain_case(transfer_weights=False))
    assert not res.passed
    assert res.first_jump.name == "fc_in"


# ------------------------------------------------------------------ perturbed twins fail, at the right module
def test_wrong_eps_fails_at_the_norm():
    res = run_case(chain_case(ms_kwargs=dict(eps=1e-1)))
    assert not res.passed
    assert (res.first_jump.name, res.first_jump.call) == ("norm", 0)
    assert res.rows[0].verdict.passed  # fc_in, upstream of the bug, is fine


def test_broken_module_in_the_middle_is_the_first_jump():
    case = chain_case(ms_kwargs=dict(broken_mid=True))
    res = run_case(case)
    assert not res.passed
    assert res.first_jump.name == "fc_mid"
    assert [r.verdict.passed for r in res.rows][:3] == [True, True, True]  # fc_in, norm#0, act
    with pytest.raises(AssertionError) as e:
        assert_case(case)
    msg = str(e.value)
    assert "first jump: fc_mid (Linear)" in msg and "<-- first jump" in msg and "rel_fro" in msg
    assert msg.count("\n") >= 8  # the per-layer table, not just "not close"


def test_broken_module_fails_in_graph_mode_too():
    res = run_case(chain_case(ms_kwargs=dict(broken_mid=True), mode="graph"))
    assert not res.passed and not res.outputs[0].verdict.passed
    assert res.first_jump.name == "fc_mid"  # rows come from the PyNative run with hooks


def test_fp16_perturbation_fails():
    res = run_case(chain_case(ms_kwargs=dict(eps=1e-1), dtype="fp16"))
    assert not res.passed and res.first_jump.key == "norm#0"


# ------------------------------------------------------------------ hard gates
def test_nan_position_mismatch_fails():
    res = run_case(chain_case(ms_kwargs=dict(nan_out=True)))
    assert not res.passed
    final = res.outputs[0]
    assert not final.metrics.nonfinite_ok and "NaN/Inf positions" in final.verdict.reasons[0]
    assert "nan (MindSpore only)" in res.unmatched  # the cell that made the NaN exists on the port only


def test_shape_mismatch_fails():
    res = run_case(chain_case(ms_kwargs=dict(cut_out=True)))
    assert not res.passed
    assert not res.outputs[0].metrics.shape_ok
    assert "shape" in res.outputs[0].verdict.reasons[0]
    assert res.outputs[1].verdict.passed  # the other leaf is still compared


def test_dtype_gate():
    # an fp16 case whose port returns fp32: numbers are fine, the dtype gate is not
    res = run_case(chain_case(ms_kwargs=dict(out_dtype=ms.float32), dtype="fp16"))
    assert not res.outputs[0].verdict.passed
    assert any("dtype float32 != expected float16" in r for r in res.outputs[0].verdict.reasons)
    # declared on purpose: the case may say which dtype the port returns
    res = run_case(chain_case(ms_kwargs=dict(out_dtype=ms.float32), dtype="fp16", out_dtype="float32"))
    assert res.outputs[0].verdict.passed


def test_structure_mismatch_is_a_failure():
    """The port returns one leaf fewer: the missing one fails the shape gate."""
    case = chain_case(outputs=(lambda r: r, lambda r: r[0]))
    res = run_case(case)
    assert not res.passed and not res.outputs[1].metrics.shape_ok


# ------------------------------------------------------------------ call signatures and result types
def encode_hidden(model, x):
    return model.encode(x)["hidden"]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_call_by_method_name_and_dict_result(mode):
    res = assert_case(Case("encode", PtChain, MsChain, lambda rng: {"x": rng.standard_normal((3, D))},
                           level="layer", call="encode", mode=mode))
    assert [o.path for o in res.outputs] == ["['mean']", "['hidden']"]
    assert [r.key for r in res.rows] == ["fc_in#0", "fc_in#1", "act"]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_call_by_function_and_extractor(mode):
    res = assert_case(Case("fn", PtChain, MsChain, lambda rng: {"x": rng.standard_normal((3, D))}, level="layer",
                           call=encode_hidden, mode=mode, outputs=lambda r: r))
    assert len(res.outputs) == 1


@dataclasses.dataclass
class _Out:
    sample: object
    aux: object = None


def test_dataclass_results_are_flattened():
    leaves = engine.flatten_leaves(_Out(torch.ones(2), (torch.zeros(1), None)))
    assert [(l.path, l.array.shape) for l in leaves] == [(".sample", (2,)), (".aux[0]", (1,))]


# ------------------------------------------------------------------ inputs, cache, first-jump rule
def test_inputs_are_identical_numbers_in_the_case_dtype():
    case = Case("in", PtChain, MsChain, lambda rng: {"x": rng.standard_normal((2, 3)), "t": rng.uniform(0, 999, 2),
                                                     "ids": np.arange(3)}, level="layer", dtype="fp16",
                fp32_inputs=("t",))
    a, b = engine.make_inputs(case).kwargs, engine.make_inputs(case).kwargs
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(a["x"], a["x"].astype(np.float16).astype(np.float32))  # rounded to fp16
    assert not np.array_equal(a["t"], a["t"].astype(np.float16).astype(np.float32))  # kept fp32
    ms_in = engine.ms_inputs(a, "fp16", ("t",)).kwargs
    assert ms_in["x"].dtype == ms.float16 and ms_in["t"].dtype == ms.float32 and ms_in["ids"].dtype == ms.int64
    pt_in = engine.pt_inputs(a).kwargs
    assert pt_in["x"].dtype == torch.float32 and pt_in["ids"].dtype == torch.int64


def test_positional_inputs():
    case = Case("pos", lambda: P.Linear(D, 4), lambda: M.Linear(D, 4), lambda rng: [rng.standard_normal((2, D))],
                level="op", fp32_inputs=("0",), dtype="fp16")
    args = engine.make_inputs(case)
    assert args.args[0].dtype == np.float32 and not args.kwargs
    assert engine.ms_inputs(args, "fp16", ("0",)).args[0].dtype == ms.float32


def test_cached_pair_builds_once():
    built = []

    def pt_factory():
        built.append(1)
        return PtChain()

    case = Case("cached", pt_factory, MsChain, chain_inputs, level="block", cache_key="test_engine.cached")
    try:
        assert run_case(case).passed and run_case(case).passed
        assert len(built) == 1
        assert engine.cached_pair("k", lambda: object()) is engine.cached_pair("k", lambda: object())
    finally:
        engine.clear_cache()


def test_first_jump_rule_prefers_a_sharp_jump_over_inherited_error():
    res = run_case(chain_case(ms_kwargs=dict(eps=1e-1)))
    later = [r for r in res.rows if r.order > res.first_jump.order]
    assert all(not r.verdict.passed for r in later)  # the error propagates downstream...
    assert all(r.jump < engine.JUMP_FACTOR for r in later)  # ...but nothing downstream is a new jump


def test_case_rejects_cells_the_standard_does_not_have():
    with pytest.raises(KeyError):
        Case("x", PtChain, MsChain, chain_inputs, level="sampling_free_running", dtype="fp16")
    with pytest.raises(ValueError):
        Case("x", PtChain, MsChain, chain_inputs, level="layer", mode="eager")


def test_fill_zero_parameters():
    m = PtChain()
    with torch.no_grad():
        m.fc_out.weight.zero_()
    assert engine.fill_zero_parameters(m) == ["norm.bias", "fc_out.weight"]  # zero-init LayerNorm bias too
    assert torch.count_nonzero(m.fc_out.weight) > 0


def test_row_level_can_leave_a_module_out():
    def rows(name, module):
        return None if name == "fc_mid" else engine.default_row_level(name, module)

    res = run_case(chain_case(ms_kwargs=dict(broken_mid=True), row_level=rows))
    assert res.not_compared == ["fc_mid"] and "fc_mid" not in [r.name for r in res.rows]
    assert not res.passed and res.first_jump.key == "norm#1"  # its consumer still catches the bug
    assert "left out by the case's row_level" in res.table()


def test_skip_rows_leave_a_module_out_by_its_last_name_component():
    """Data instead of a function (a family's ``parity_case["skip_rows"]``): the same rows left out, the same
    not_compared report as a row_level returning None."""
    res = run_case(chain_case(ms_kwargs=dict(broken_mid=True), skip_rows=("fc_mid",)))
    assert res.not_compared == ["fc_mid"] and "fc_mid" not in [r.name for r in res.rows]
    assert not res.passed and res.first_jump.key == "norm#1"
    assert "left out by the case's row_level/skip_rows" in res.table()
    case = chain_case(skip_rows="fc_mid")
    assert case.skip_rows == ("fc_mid",)
    assert engine.row_level_for(case, "a.b.fc_mid", None) is None and engine.row_level_for(case, "fc_out", None)
    with pytest.raises(ValueError):
        chain_case(skip_rows=("cross_attn.kv_linear",))


def test_stdit3_family_skips_the_packed_text_projection():
    from opensora_dual.registry import get_family

    pc = get_family("stdit3").extra["parity_case"]
    assert pc["skip_rows"] == ("kv_linear",) and "row_level" not in pc
    case = chain_case(**pc)
    assert engine.row_level_for(case, "spatial_blocks.0.cross_attn.kv_linear", None) is None
    assert engine.row_level_for(case, "spatial_blocks.0.cross_attn.proj", object()) == "layer"


def test_out_dtype_accepts_case_dtype_names():
    assert chain_case(out_dtype="fp32").out_dtype == "float32"


# ------------------------------------------------------------------ the report
def test_write_report_for_a_failing_case(tmp_path):
    from parity_tests.report import write_report

    res = run_case(chain_case(ms_kwargs=dict(broken_mid=True)))
    paths = write_report(res, tmp_path / "rep", dict(model="chain", dtype="fp32", mode="pynative", seed=0))
    text = paths["report"].read_text()
    assert "# Parity report: chain — FAIL" in text and "← first jump" in text and "`fc_mid`" in text
    assert text.count("\n| ") >= 8  # final-output table + per-layer table rows
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["plot"].stat().st_size > 10_000


def test_model_level_rule():
    from opensora_dual.registry import Family
    from parity_tests.report import model_level

    fam = Family("f", "m:C")
    assert model_level("STDiT3-XL/2", fam) == "model_full" and model_level("T5-XXL", fam) == "model_full"
    assert model_level("STDiT3-S/2", fam) == "model_small"
    fam.extra["full_size_presets"] = ("Big",)
    assert model_level("Big", fam) == "model_full" and model_level("STDiT3-XL/2", fam) == "model_small"


@pytest.fixture
def stdit3_parity_settings(monkeypatch):
    from opensora_dual.registry import get_family

    fam = get_family("stdit3")
    if "parity_case" not in fam.extra:  # until the family declares its whole-model parity settings
        monkeypatch.setitem(fam.extra, "parity_case",
                            dict(fp32_inputs=("timestep",), out_dtype="fp32", skip_rows=("kv_linear",)))


def test_report_cli(tmp_path, stdit3_parity_settings):
    """End to end on the small STDiT3 preset: exit 0, report + plot written; unknown model: exit 2."""
    from parity_tests import report

    assert report.main(["--model", "no-such-model", "--out", str(tmp_path / "x")]) == 2
    out = tmp_path / "stdit3"
    assert report.main(["--model", "STDiT3-S/2", "--out", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "rel_fro.png").exists()
    text = (out / "report.md").read_text()
    assert "STDiT3-S/2 — PASS" in text and "all-zero parameters filled" in text


def test_report_cli_with_weights(tmp_path, stdit3_parity_settings):
    """--weights: a release folder written by the converter is strict-loaded into the reference, the port gets
    the same tensors; a missing path is a clean exit 2."""
    import torch
    from converters.api import save_release_folder
    from opensora_dual.registry import build, resolve
    from parity_tests import report

    assert report.main(["--model", "STDiT3-S/2", "--weights", str(tmp_path / "missing"),
                        "--out", str(tmp_path / "x")]) == 2
    torch.manual_seed(5)
    model = build("STDiT3-S/2", "pt")
    engine.fill_zero_parameters(model, seed=5)
    save_release_folder(model, "pt", str(tmp_path / "release"), resolve("STDiT3-S/2")[1], preset="STDiT3-S/2")
    out = tmp_path / "rep"
    code = report.main(["--model", "STDiT3-S/2", "--weights", str(tmp_path / "release"), "--out", str(out)])
    text = (out / "report.md").read_text()
    assert "(strict load through converters)" in text
    assert code == 0, text[:3000]


def test_a_stale_mindspore_error_is_not_blamed_on_the_next_case():
    a = ms.Tensor(np.ones((2, 2), np.float32)).astype(ms.bfloat16)
    mint.matmul(a, a)  # bf16 MatMul has no CPU kernel; PyNative reports it at the next sync, not here
    with pytest.warns(UserWarning, match="from before this parity case"):
        res = run_case(chain_case())
    assert res.passed
    assert engine.flush_pending_ms_error() is None


def test_input_error_compares_the_arguments_both_twins_share():
    x = np.ones((2, 3), np.float32)
    ref = engine.flatten_leaves(((x, x * 2), {}))
    port_extra_arg = engine.flatten_leaves(((x * (1 + 1e-3), x * 2, x), {}))  # the port gets one more argument
    assert engine._input_error(port_extra_arg, ref) == pytest.approx(1e-3, rel=1e-3)
    port_other_shape = engine.flatten_leaves(((x[:1], x[:, :1]), {}))
    assert np.isnan(engine._input_error(port_other_shape, ref))
    assert engine._input_error([], engine.flatten_leaves(((np.arange(3),), {}))) == 0.0  # no float input
