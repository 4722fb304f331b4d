"""The one ceiling table equals the written standard, and the metric functions compute what they claim."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from parity_tests import standard
from parity_tests.standard import CEILINGS, Ceiling, compare, judge

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "docs" / "parity.md", Path("/work/shared/parity_standard.md")]
ROW_LEVELS = [("single op", "op"), ("layer (", "layer"), ("block (", "block"), ("small config", "model_small"),
              ("full-size config", "model_full"), ("teacher-forced", "sampling_teacher_forced"),
              ("free-running", "sampling_free_running")]
NUM = r"([0-9.]+(?:e-?[0-9]+)?)"


def parse_cell(cell: str):
    """One cell of the markdown ceiling table -> Ceiling fields (None for '—')."""
    cell = cell.strip()
    if cell in ("—", "-"):
        return None
    kw = {}
    if m := re.search(r"(?:rel_fro\s*)?≤\s*" + NUM, cell):
        kw["rel_fro"] = float(m.group(1))
    if m := re.search(r"\[" + NUM + r"\]", cell):
        kw["cosine"] = float(m.group(1))
    if m := re.search(r"allclose\(rtol\s*" + NUM + r",\s*atol\s*" + NUM + r"\)", cell):
        kw["allclose"] = (float(m.group(1)), float(m.group(2)))
    if m := re.search(r"PSNR\s*≥\s*" + NUM, cell):
        kw["psnr"] = float(m.group(1))
    if m := re.search(r"SSIM\s*≥\s*" + NUM, cell):
        kw["ssim"] = float(m.group(1))
    assert kw, f"unparsed ceiling cell {cell!r}"
    return kw


def parse_table(text: str):
    section = text.split("## Ceilings", 1)[-1] if "## Ceilings" in text else text.split("ceiling table", 1)[-1]
    table = {}
    for line in section.splitlines():
        if not line.startswith("|") or "---" in line or line.startswith("| level"):
            continue
        label, *cells = [c for c in line.strip().strip("|").split("|")]
        level = next((lv for key, lv in ROW_LEVELS if key in label), None)
        if level is None:
            continue
        table[level] = {dt: parse_cell(c) for dt, c in zip(("fp32", "fp16", "bf16"), cells)}
        if len(table) == len(ROW_LEVELS):
            break
    return table


@pytest.mark.parametrize("source", [p for p in SOURCES if p.exists()], ids=lambda p: p.name)
def test_table_equals_written_standard(source):
    written = parse_table(source.read_text())
    assert list(written) == list(standard.LEVELS) == list(CEILINGS)
    for level, cells in written.items():
        for dtype, kw in cells.items():
            if kw is None:
                assert dtype not in CEILINGS[level], f"{level}/{dtype} is '—' in the standard"
                with pytest.raises(KeyError, match="no ceiling"):
                    standard.ceiling(level, dtype)
                continue
            c = CEILINGS[level][dtype]
            got = {k: getattr(c, k) for k in ("rel_fro", "cosine", "allclose", "psnr", "ssim")
                   if getattr(c, k) is not None}
            assert got == kw, f"{level}/{dtype}: code {got} != {source.name} {kw}"


def test_shared_standard_noise_floor_and_allclose():
    assert standard.NOISE_FLOOR_GATES == {"default": 2.0, "matmul": 1.2, "norm": 1.2, "attention": 1.2}
    assert standard.OP_FP32_ALLCLOSE == (1e-5, 1e-6)
    text = (REPO / "docs" / "parity.md").read_text()
    assert "≤ 2, ≤ 1.2 for matmul, norms, attention" in text


def test_parser_reads_every_cell():
    table = parse_table((REPO / "docs" / "parity.md").read_text())
    assert sum(v is not None for cells in table.values() for v in cells.values()) == 20


# ------------------------------------------------------------------------------------------- judge
CELLS = [(lv, dt) for lv in CEILINGS for dt in CEILINGS[lv]]


def _passing_metrics(c: Ceiling) -> dict:
    return dict(rel_fro=c.rel_fro if c.rel_fro is not None else 0.0,
                cosine=c.cosine if c.cosine is not None else 1.0,
                allclose_ratio=1.0, psnr=c.psnr or 99.0, ssim=c.ssim or 1.0)


@pytest.mark.parametrize("level,dtype", CELLS)
def test_judge_boundary_of_every_cell(level, dtype):
    c = standard.ceiling(level, dtype)
    at = _passing_metrics(c)
    assert judge(at, level, dtype).passed, judge(at, level, dtype).reasons  # exactly at the bound passes
    if c.rel_fro is not None:
        v = judge({**at, "rel_fro": c.rel_fro * 1.01}, level, dtype)
        assert not v.passed and "rel_fro" in v.reasons[0]
    if c.cosine is not None:
        v = judge({**at, "cosine": c.cosine - 1e-6}, level, dtype)
        assert not v.passed and "cosine" in v.reasons[0]
    if c.allclose is not None:
        assert not judge({**at, "allclose_ratio": 1.0001}, level, dtype).passed
    if c.psnr is not None:
        assert not judge({**at, "psnr": c.psnr - 0.01}, level, dtype).passed
        assert not judge({k: v for k, v in at.items() if k != "psnr"}, level, dtype).passed  # required
    if c.ssim is not None:
        assert not judge({**at, "ssim": c.ssim - 1e-4}, level, dtype).passed
    assert not judge({**at, "rel_fro": math.nan}, level, dtype).passed or c.rel_fro is None


def test_unknown_cells_raise():
    with pytest.raises(KeyError):
        standard.ceiling("sampling_free_running", "fp16")
    with pytest.raises(KeyError):
        standard.ceiling("model", "fp32")
    with pytest.raises(KeyError):
        judge({"rel_fro": 0.0}, "layer", "fp64")


def test_hard_gates_fail_whatever_the_numbers():
    ok = dict(rel_fro=0.0, cosine=1.0, allclose_ratio=0.0)
    assert judge(ok, "model_small", "fp32").passed
    for gate in ("shape_ok", "dtype_ok", "nonfinite_ok"):
        v = judge({**ok, gate: False}, "model_small", "fp32")
        assert not v.passed, gate


# ------------------------------------------------------------------------------------------- metrics
def test_rel_fro_cosine_known_values():
    ref = np.array([3.0, 4.0])
    assert standard.rel_fro(ref, ref) == 0.0
    assert standard.rel_fro(ref + np.array([0.3, 0.4]), ref) == pytest.approx(0.1)
    assert standard.rel_fro(np.zeros(2), np.zeros(2)) == 0.0
    assert standard.rel_fro(np.ones(2), np.zeros(2)) > 1e300
    assert standard.cosine(ref, 2 * ref) == pytest.approx(1.0)
    assert standard.cosine(ref, -ref) == pytest.approx(-1.0)
    assert standard.cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    assert standard.cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert standard.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_max_abs_max_rel_err_ratio_known_values():
    ref = np.ones(100)
    port = ref.copy()
    port[:5] += 2e-2      # relative error 2e-2: above 1e-2 and 1e-3
    port[5:15] += 5e-3    # 5e-3: above 1e-3 only
    assert standard.max_abs(port, ref) == pytest.approx(2e-2)
    assert standard.max_rel(port, ref) == pytest.approx(2e-2)
    assert standard.err_ratio(port, ref, 2) == pytest.approx(0.05)
    assert standard.err_ratio(port, ref, 3) == pytest.approx(0.15)
    # a tiny reference element (|ref| < 1e-3 rms) is left out of the elementwise relative metrics
    ref2, port2 = np.array([1.0, 1.0, 1e-9]), np.array([1.1, 1.0, 1.0])
    assert standard.max_rel(port2, ref2) == pytest.approx(0.1)
    assert standard.err_ratio(port2, ref2, 2) == pytest.approx(0.5)
    assert standard.max_abs(port2, ref2) == pytest.approx(1.0)


def test_metrics_are_float64():
    ref = np.full(4, 1.0, np.float32)
    port = ref + np.float32(1e-7)
    # in float32, 1 + 1e-7 rounds to 1 + 1.19e-7; the metric sees the float32 values exactly
    assert standard.max_abs(port, ref) == pytest.approx(float(np.float32(1) + np.float32(1e-7)) - 1.0, rel=1e-12)


@given(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e3, 1e3)),
       hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e-3, 1e-3)))
def test_allclose_ratio_agrees_with_numpy(ref, noise):
    port = ref + np.resize(noise, ref.shape)
    r = standard.allclose_ratio(port, ref)
    if abs(r - 1.0) > 1e-9:
        assert (r <= 1.0) == np.allclose(port, ref, rtol=1e-5, atol=1e-6)


def test_noise_floor_ratio():
    ref64 = np.linspace(1, 2, 50)
    torch_low = ref64 * (1 + 1e-3)
    port = ref64 * (1 + 2e-3)
    assert standard.noise_floor_ratio(port, torch_low, ref64) == pytest.approx(2.0)
    assert standard.noise_floor_ratio(ref64, ref64, ref64) == 0.0
    assert standard.noise_floor_ratio(port, ref64, ref64) == math.inf
    assert standard.noise_floor_gate("attention") == 1.2
    with pytest.raises(KeyError):
        standard.noise_floor_gate("conv")


def test_psnr_ssim_mean_abs():
    ref = np.zeros((2, 16, 16, 3))
    assert standard.psnr(ref + 1, ref) == pytest.approx(10 * math.log10(255.0 ** 2))
    assert standard.psnr(ref, ref) == math.inf
    assert standard.mean_abs_diff(ref + 2, ref) == pytest.approx(2.0)
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (2, 32, 32, 3))
    assert standard.ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 40, img.shape), 0, 255)
    s = standard.ssim(noisy, img)
    assert 0.0 < s < 0.9
    assert standard.ssim(np.clip(img + rng.normal(0, 2, img.shape), 0, 255), img) > s


# ------------------------------------------------------------------------------------------- compare
def test_compare_hard_gates():
    ref = np.array([1.0, np.nan, np.inf, -2.0], np.float32)
    m = compare(ref.copy(), ref)
    assert m.shape_ok and m.nonfinite_ok and m.rel_fro == 0.0 and m.n_nonfinite == 2
    moved = np.array([np.nan, 1.0, np.inf, -2.0], np.float32)
    assert not compare(moved, ref).nonfinite_ok
    sign = np.array([1.0, np.nan, -np.inf, -2.0], np.float32)
    assert not compare(sign, ref).nonfinite_ok
    m = compare(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not m.shape_ok and not judge(m, "layer", "fp32").passed
    m = compare(np.zeros(3, np.float32), np.zeros(3, np.float32), expected_dtype="float16")
    assert not m.dtype_ok
    v = judge(m, "op", "fp16")
    assert not v.passed and v.reasons == ("dtype float32 != expected float16",)


def test_compare_numbers():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    port = ref + 1e-7 * rng.standard_normal(1000)
    m = compare(port, ref)
    assert m.rel_fro == pytest.approx(1e-7, rel=0.1)
    assert judge(m, "layer", "fp32").passed
    assert not judge(compare(ref + 1e-4 * rng.standard_normal(1000), ref), "layer", "fp32").passed
