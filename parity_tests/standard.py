"""The parity standard in code: metrics and the ONE ceiling table (shared/parity_standard.md).

Every parity comparison in the project takes its numbers from here. Metrics are computed in float64 on the
host with the PyTorch output as the reference and the MindSpore output as the port. ``judge(metrics, level,
dtype)`` applies the hard gates (shape, dtype, NaN/Inf positions) and the ceiling of one table cell.

Nothing in this module is tuned to make a test pass: the numbers are those of the standard, cell by cell.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

LEVELS = ("op", "layer", "block", "model_small", "model_full", "sampling_teacher_forced", "sampling_free_running")
DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Ceiling:
    """One cell of the ceiling table. ``None`` means the standard sets no bound for that metric."""

    rel_fro: Optional[float] = None      # rel_fro <= this
    cosine: Optional[float] = None       # cosine >= this (the bracketed floor)
    allclose: Optional[Tuple[float, float]] = None  # (rtol, atol): single ops in fp32
    psnr: Optional[float] = None         # decoded frames, dB, >= this
    ssim: Optional[float] = None         # decoded frames, >= this
    note: str = ""

    def describe(self) -> str:
        parts = []
        if self.rel_fro is not None:
            parts.append(f"rel_fro<={self.rel_fro:.0e}")
        if self.cosine is not None:
            parts.append(f"cos>={self.cosine:g}")
        if self.allclose is not None:
            parts.append(f"allclose(rtol={self.allclose[0]:.0e},atol={self.allclose[1]:.0e})")
        if self.psnr is not None:
            parts.append(f"PSNR>={self.psnr:g}dB")
        if self.ssim is not None:
            parts.append(f"SSIM>={self.ssim:g}")
        return " & ".join(parts) if parts else "-"


# Single ops in fp32 are also gated by allclose with these tolerances (parity_standard.md, first row).
OP_FP32_ALLCLOSE = (1e-5, 1e-6)

# THE table (parity_standard.md, "Ceilings"). A missing cell ("—" in the standard) has no entry: judging it
# is an error, never a pass.
CEILINGS: Dict[str, Dict[str, Ceiling]] = {
    "op": {
        "fp32": Ceiling(rel_fro=1e-6, allclose=OP_FP32_ALLCLOSE, note="identical inputs"),
        "fp16": Ceiling(rel_fro=5e-4),
        "bf16": Ceiling(rel_fro=4e-3),
    },
    "layer": {
        "fp32": Ceiling(rel_fro=1e-5),
        "fp16": Ceiling(rel_fro=2e-3),
        "bf16": Ceiling(rel_fro=1e-2, cosine=0.9999),
    },
    "block": {
        "fp32": Ceiling(rel_fro=5e-5),
        "fp16": Ceiling(rel_fro=5e-3),
        "bf16": Ceiling(rel_fro=2e-2, cosine=0.9998),
    },
    "model_small": {
        "fp32": Ceiling(rel_fro=1e-5),
        "fp16": Ceiling(rel_fro=5e-3),
        "bf16": Ceiling(rel_fro=5e-2, cosine=0.999),
    },
    "model_full": {
        "fp32": Ceiling(rel_fro=5e-4, cosine=0.9999),
        "fp16": Ceiling(rel_fro=5e-3),
        "bf16": Ceiling(rel_fro=5e-2, cosine=0.999),
    },
    "sampling_teacher_forced": {
        "fp32": Ceiling(rel_fro=5e-4, note="per step"),
        "fp16": Ceiling(rel_fro=5e-2, note="per step"),
        "bf16": Ceiling(rel_fro=5e-2, note="per step"),
    },
    "sampling_free_running": {
        "fp32": Ceiling(cosine=0.9999, psnr=40.0, note="cosine on the latent, PSNR on decoded frames"),
        "bf16": Ceiling(cosine=0.999, psnr=30.0, ssim=0.95, note="cosine on the latent, PSNR/SSIM on decoded frames"),
    },
}

# Noise-floor ratio gate for low precision: err(port in dtype vs fp64 ref) / err(PyTorch in dtype vs fp64 ref).
NOISE_FLOOR_GATES = {"default": 2.0, "matmul": 1.2, "norm": 1.2, "attention": 1.2}

# Elementwise relative errors (max_rel, err_ratio) divide by |ref| only where |ref| is not tiny: an element
# counts as tiny when |ref| < SMALL_REL * rms(ref). Those elements are left out of max_rel and err_ratio
# (their absolute error still enters rel_fro, cosine and max_abs).
SMALL_REL = 1e-3
ERR_RATIO_KS = (2, 3)


def ceiling(level: str, dtype: str) -> Ceiling:
    if level not in CEILINGS:
        raise KeyError(f"unknown parity level {level!r}; levels: {LEVELS}")
    if dtype not in DTYPES:
        raise KeyError(f"unknown dtype {dtype!r}; dtypes: {DTYPES}")
    if dtype not in CEILINGS[level]:
        raise KeyError(f"the parity standard sets no ceiling for level {level!r} in {dtype} (a '—' cell)")
    return CEILINGS[level][dtype]


# --------------------------------------------------------------------------------------------- metrics
def _f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def rel_fro(port, ref) -> float:
    p, r = _f64(port).ravel(), _f64(ref).ravel()
    return float(np.linalg.norm(p - r) / max(np.linalg.norm(r), np.finfo(np.float64).tiny))


def cosine(port, ref) -> float:
    p, r = _f64(port).ravel(), _f64(ref).ravel()
    np_, nr = np.linalg.norm(p), np.linalg.norm(r)
    if np_ == 0.0 and nr == 0.0:
        return 1.0
    if np_ == 0.0 or nr == 0.0:
        return 0.0
    return float(np.dot(p, r) / (np_ * nr))


def max_abs(port, ref) -> float:
    d = np.abs(_f64(port) - _f64(ref))
    return float(d.max()) if d.size else 0.0


def _not_tiny(r: np.ndarray) -> np.ndarray:
    rms = math.sqrt(float(np.mean(r * r))) if r.size else 0.0
    return np.abs(r) >= max(SMALL_REL * rms, np.finfo(np.float64).tiny)


def max_rel(port, ref) -> float:
    p, r = _f64(port), _f64(ref)
    keep = _not_tiny(r)
    if not keep.any():
        return 0.0
    return float((np.abs(p - r)[keep] / np.abs(r[keep])).max())


def err_ratio(port, ref, k: int) -> float:
    """Fraction of (not tiny) elements whose relative error is above 10**-k."""
    p, r = _f64(port), _f64(ref)
    keep = _not_tiny(r)
    if not keep.any():
        return 0.0
    rel = np.abs(p - r)[keep] / np.abs(r[keep])
    return float(np.mean(rel > 10.0 ** (-k)))


def allclose_ratio(port, ref, rtol: float = OP_FP32_ALLCLOSE[0], atol: float = OP_FP32_ALLCLOSE[1]) -> float:
    """max(|port - ref| / (atol + rtol*|ref|)); numpy.allclose(port, ref, rtol, atol) holds iff this is <= 1."""
    p, r = _f64(port), _f64(ref)
    if not p.size:
        return 0.0
    return float((np.abs(p - r) / (atol + rtol * np.abs(r))).max())


def noise_floor_ratio(port, ref_same_dtype, ref_fp64) -> float:
    """err(port in dtype vs fp64 ref) / err(PyTorch in the same dtype vs fp64 ref), both as rel_fro."""
    floor = rel_fro(ref_same_dtype, ref_fp64)
    err = rel_fro(port, ref_fp64)
    if floor == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return err / floor


def psnr(port, ref, data_range: float = 255.0) -> float:
    mse = float(np.mean((_f64(port) - _f64(ref)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range ** 2 / mse)


def mean_abs_diff(port, ref) -> float:
    """Mean absolute difference (frames on the 0-255 scale)."""
    return float(np.mean(np.abs(_f64(port) - _f64(ref))))


def ssim(port, ref, data_range: float = 255.0, channel_axis: Optional[int] = -1) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) over the last two
    spatial axes, averaged over frames and channels. Frames are [..., H, W, C] (channel_axis=-1) or [..., H, W]."""
    from scipy.ndimage import gaussian_filter

    p, r = _f64(port), _f64(ref)
    if channel_axis is not None:
        p, r = np.moveaxis(p, channel_axis, 0), np.moveaxis(r, channel_axis, 0)
    p = p.reshape(-1, *p.shape[-2:])
    r = r.reshape(-1, *r.shape[-2:])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for a, b in zip(p, r):
        f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5)  # noqa: E731 (host numpy, not graph code)
        mu_a, mu_b = f(a), f(b)
        var_a = f(a * a) - mu_a ** 2
        var_b = f(b * b) - mu_b ** 2
        cov = f(a * b) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


@dataclass
class Metrics:
    """All metrics of one port-vs-reference comparison (plus the hard-gate facts)."""

    shape_port: tuple = ()
    shape_ref: tuple = ()
    dtype_port: str = ""
    dtype_expected: str = ""
    shape_ok: bool = True
    dtype_ok: bool = True
    nonfinite_ok: bool = True
    n_nonfinite: int = 0
    rel_fro: float = math.nan
    cosine: float = math.nan
    max_abs: float = math.nan
    max_rel: float = math.nan
    err_ratio_2: float = math.nan
    err_ratio_3: float = math.nan
    allclose_ratio: float = math.nan
    ref_norm: float = math.nan
    extra: Dict[str, float] = field(default_factory=dict)   # psnr, ssim, noise_floor_ratio, ...

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def dtype_name(a) -> str:
    """numpy/torch/mindspore dtype -> a short name (float32, float16, bfloat16, int64, bool...)."""
    s = str(getattr(a, "dtype", a))
    for prefix in ("torch.", "mindspore."):
        s = s.replace(prefix, "")
    return {"Float32": "float32", "Float16": "float16", "BFloat16": "bfloat16", "Float64": "float64",
            "Int64": "int64", "Int32": "int32", "Bool": "bool"}.get(s, s)


CASE_DTYPE_NAME = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def compare(port, ref, expected_dtype: Optional[str] = None) -> Metrics:
    """Metrics of ``port`` against ``ref`` (numpy arrays; the reference is PyTorch).

    ``expected_dtype``: the dtype name the port output must have (e.g. "float16" in an fp16 case); None
    skips the dtype gate. NaN and +/-Inf must sit at the same positions (with the same sign); the numeric
    metrics are then taken over the positions where both are finite.
    """
    port_dtype = dtype_name(port)
    port, ref = np.asarray(port), np.asarray(ref)
    m = Metrics(shape_port=tuple(port.shape), shape_ref=tuple(ref.shape), dtype_port=port_dtype,
                dtype_expected=expected_dtype or "")
    m.dtype_ok = expected_dtype is None or port_dtype == expected_dtype
    if port.shape != ref.shape:
        m.shape_ok = False
        return m
    p, r = _f64(port), _f64(ref)
    p_nan, r_nan = np.isnan(p), np.isnan(r)
    p_inf, r_inf = np.isinf(p), np.isinf(r)
    m.n_nonfinite = int((p_nan | p_inf).sum())
    m.nonfinite_ok = bool(np.array_equal(p_nan, r_nan) and np.array_equal(p_inf, r_inf)
                          and np.array_equal(p[p_inf], r[r_inf]))
    fin = np.isfinite(p) & np.isfinite(r)
    p, r = p[fin], r[fin]
    m.rel_fro = rel_fro(p, r)
    m.cosine = cosine(p, r)
    m.max_abs = max_abs(p, r)
    m.max_rel = max_rel(p, r)
    m.err_ratio_2 = err_ratio(p, r, 2)
    m.err_ratio_3 = err_ratio(p, r, 3)
    m.allclose_ratio = allclose_ratio(p, r)
    m.ref_norm = float(np.linalg.norm(r))
    return m


@dataclass
class Verdict:
    passed: bool
    level: str
    dtype: str
    ceiling: Ceiling
    reasons: Tuple[str, ...] = ()

    def __bool__(self):
        return self.passed


def judge(metrics, level: str, dtype: str) -> Verdict:
    """Hard gates + the ceiling of (level, dtype). ``metrics`` is a Metrics or a dict with the same keys."""
    c = ceiling(level, dtype)
    m = metrics.as_dict() if isinstance(metrics, Metrics) else dict(metrics)
    reasons = []
    if not m.get("shape_ok", True):
        reasons.append(f"shape {m.get('shape_port')} != reference {m.get('shape_ref')}")
    if not m.get("dtype_ok", True):
        reasons.append(f"dtype {m.get('dtype_port')} != expected {m.get('dtype_expected')}")
    if not m.get("nonfinite_ok", True):
        reasons.append("NaN/Inf positions differ from the reference")

    def need(key):
        v = m.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            reasons.append(f"{key} missing (required at {level}/{dtype})")
            return None
        return v

    if not reasons or all(r.startswith("dtype") for r in reasons):  # numeric metrics exist iff shapes match
        if c.rel_fro is not None and (v := need("rel_fro")) is not None and not v <= c.rel_fro:
            reasons.append(f"rel_fro {v:.3e} > {c.rel_fro:.0e}")
        if c.cosine is not None and (v := need("cosine")) is not None and not v >= c.cosine:
            reasons.append(f"cosine {v:.6f} < {c.cosine:g}")
        if c.allclose is not None:
            # allclose_ratio is measured with OP_FP32_ALLCLOSE, the only allclose cell of the table
            v = m.get("allclose_ratio")
            if v is None or (isinstance(v, float) and math.isnan(v)):
                reasons.append("allclose_ratio missing")
            elif not v <= 1.0:
                reasons.append(f"not allclose(rtol={c.allclose[0]:.0e}, atol={c.allclose[1]:.0e}): "
                               f"worst |d|/(atol+rtol|ref|) = {v:.3g}")
        if c.psnr is not None and (v := need("psnr")) is not None and not v >= c.psnr:
            reasons.append(f"PSNR {v:.2f} dB < {c.psnr:g} dB")
        if c.ssim is not None and (v := need("ssim")) is not None and not v >= c.ssim:
            reasons.append(f"SSIM {v:.4f} < {c.ssim:g}")
    return Verdict(passed=not reasons, level=level, dtype=dtype, ceiling=c, reasons=tuple(reasons))


def noise_floor_gate(kind: str = "default") -> float:
    if kind not in NOISE_FLOOR_GATES:
        raise KeyError(f"unknown noise-floor kind {kind!r}; kinds: {sorted(NOISE_FLOOR_GATES)}")
    return NOISE_FLOOR_GATES[kind]
