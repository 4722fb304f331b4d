"""The parity engine: run a PyTorch twin and its MindSpore port on the same weights and inputs, capture every
named sub-module's output on both sides, compare them by their shared dotted name, and judge everything with
the one ceiling table (``parity_tests.standard``).

A case is a row of data (``Case``); ``run_case(case)`` returns a ``CaseResult`` (per-layer rows, final
outputs, verdicts, the first module whose error jumps above its inputs' error); ``assert_case(case)`` raises
``AssertionError`` with the per-layer table as its message.

How a case runs (docs/parity.md has the long version):
1. ``torch.manual_seed(seed)``, build both twins, copy the PyTorch weights into the port through
   ``converters.model_tensors`` + ``converters.load_state_into`` (the one weight path), switch the port to
   the case dtype with ``ms_impl.layers.set_compute_dtype``.
2. Draw inputs once in numpy (``inputs(np.random.default_rng(seed))``); float arrays are rounded to the case
   dtype so both sides see identical numbers ("identical inputs"); PyTorch computes in fp32 on them, the port
   gets them in the case dtype.
3. PyNative: forward hooks (``with_kwargs``) on every named sub-module record each call's inputs and outputs
   as numpy, keyed by (dotted name, call index), so a module called twice is compared call by call.
   Graph: the port's forward is compiled with ``ms.jit``; hooks do not run there, so the final outputs of
   the compiled forward are gated against PyTorch, and also compared with the PyNative forward
   (``graph_vs_pynative``); the per-layer rows come from a PyNative run with hooks.
4. Low precision: PyTorch is also run in the dtype and in fp64 on the same weights, to measure the noise
   floor; the noise-floor ratio err(port vs fp64) / err(torch-in-dtype vs fp64) is gated (standard: <= 2,
   <= 1.2 for matmul, norms, attention).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import mindspore as ms  # noqa: F401  (import order: mindspore before anything that may pull in decord)
import torch

from parity_tests import standard
from parity_tests.standard import CASE_DTYPE_NAME, Metrics, Verdict, compare, judge
from pt_reference.init_utils import fill_zero_parameters  # noqa: F401  (re-exported: cases and scripts use it)

MS_DTYPES = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}
PT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# A module "jumps" when its output error is above its ceiling AND at least this many times its inputs' error.
JUMP_FACTOR = 10.0

CallSpec = Union[None, str, Callable, Tuple[Any, Any]]


# ---------------------------------------------------------------------------------------------- the case
@dataclass
class Case:
    """One parity comparison. Only the first five fields are required.

    pt_factory / ms_factory: build the twin modules (no weights needed on the ms side: they are copied).
    inputs: ``inputs(rng) -> dict`` of numpy arrays / python values, passed as keyword arguments to both
        (a list/tuple: positional arguments; ``Args(*args, **kwargs)``: both).
    level: a row of the ceiling table ("op", "layer", "block", "model_small", "model_full", ...).
    dtype: "fp32" | "fp16" | "bf16" -- the port's compute dtype; PyTorch always computes in fp32.
    mode: "pynative" | "graph" (graph = the port's forward under ``ms.jit``).
    call: how to call a twin: None -> ``model(**inputs)``; "encode" -> ``model.encode(**inputs)``;
        a function ``f(model, **inputs)`` (a named function, used on both sides); or a pair (pt_call, ms_call).
    capture: record every named sub-module (per-layer rows). Off: final outputs only.
    outputs: extractor ``f(result) -> array | tuple | dict | dataclass`` applied to each side's result, or a
        pair (pt_fn, ms_fn); default: every tensor leaf of the result, in order.
    row_level: ``f(dotted_name, pt_module) -> level`` for per-layer rows; default ``default_row_level``.
        Returning None leaves that module out of the rows (its outputs are not comparable by design, e.g.
        packed vs padded text); the result lists it under ``not_compared``, and its consumers are compared.
    skip_rows: last components of dotted module names left out of the per-layer rows the same way (data,
        e.g. a family's ``parity_case = {"skip_rows": ("kv_linear",)}``): ``cross_attn.kv_linear`` matches
        "kv_linear". Applied before ``row_level``.
    fp32_inputs: names of float inputs kept fp32 on the port in low-precision cases (e.g. timesteps).
    out_dtype: dtype name the port's float outputs must have (default: the case dtype).
    noise_floor: low precision only: the noise-floor gate kind ("default", "matmul", "norm", "attention")
        or False to skip measuring it (the report then says it was not measured).
    cache_key: build the pair once per session under (cache_key, dtype) (``cached_pair``).
    transfer_weights: copy the PyTorch weights into the port (False only for parameter-free modules).
    graph_vs_pynative: in graph mode, also gate the compiled forward against the PyNative forward.
    """

    name: str
    pt_factory: Callable[[], Any]
    ms_factory: Callable[[], Any]
    inputs: Callable[[np.random.Generator], Any]
    level: str
    dtype: str = "fp32"
    mode: str = "pynative"
    call: CallSpec = None
    capture: bool = True
    seed: int = 0
    outputs: Union[None, Callable, Tuple[Callable, Callable]] = None
    row_level: Optional[Callable[[str, Any], str]] = None
    skip_rows: Tuple[str, ...] = ()
    fp32_inputs: Tuple[str, ...] = ()
    out_dtype: Optional[str] = None
    noise_floor: Union[str, bool] = "default"
    cache_key: Optional[str] = None
    transfer_weights: bool = True
    graph_vs_pynative: bool = True

    def __post_init__(self):
        standard.ceiling(self.level, self.dtype)  # unknown level/dtype or a '—' cell fails at definition time
        if isinstance(self.skip_rows, str):  # ("kv_linear") is a string, not a tuple: accept it
            self.skip_rows = (self.skip_rows,)
        self.skip_rows = tuple(self.skip_rows)
        if any(not s or "." in s for s in self.skip_rows):
            raise ValueError(f"case {self.name}: skip_rows are last components of module names (no dots), "
                             f"got {self.skip_rows!r}")
        if self.out_dtype in CASE_DTYPE_NAME:  # "fp32" -> "float32"
            self.out_dtype = CASE_DTYPE_NAME[self.out_dtype]
        if self.mode not in ("pynative", "graph"):
            raise ValueError(f"case {self.name}: mode must be 'pynative' or 'graph', got {self.mode!r}")
        if self.noise_floor not in (False,) and self.noise_floor not in standard.NOISE_FLOOR_GATES:
            raise ValueError(f"case {self.name}: noise_floor {self.noise_floor!r} not in "
                             f"{sorted(standard.NOISE_FLOOR_GATES)} (or False)")

    @property
    def id(self) -> str:
        return f"{self.name}-{self.dtype}-{self.mode}"


def default_row_level(name: str, module: Any) -> str:
    """Per-layer rows: a module whose class name contains "Block" is judged at block level, others at layer."""
    return "block" if "Block" in type(module).__name__ else "layer"


def row_level_for(case: "Case", name: str, module: Any) -> Optional[str]:
    """The level of the per-layer row of module ``name`` in ``case``; None leaves it out (``not_compared``):
    its last dotted component is in ``case.skip_rows``, or ``case.row_level`` returns None."""
    if name.rsplit(".", 1)[-1] in case.skip_rows:
        return None
    return (case.row_level or default_row_level)(name, module)


# ------------------------------------------------------------------------------------- results
@dataclass
class Leaf:
    path: str
    array: np.ndarray
    dtype: str


@dataclass
class Row:
    """One call of one named sub-module, compared across the twins."""

    order: int                 # position in the PyTorch execution (completion) order
    name: str                  # shared dotted name
    call: int                  # call index of that module in this forward (0, 1, ...)
    type: str                  # PyTorch class name
    level: str                 # ceiling-table row used for this module
    metrics: Metrics           # worst output leaf
    in_err: float              # worst rel_fro over the module's float inputs (nan if not comparable)
    verdict: Verdict
    n_calls: int = 1

    @property
    def key(self) -> str:
        return self.name if self.n_calls == 1 else f"{self.name}#{self.call}"

    @property
    def jump(self) -> float:
        out = self.metrics.rel_fro
        if math.isnan(out):
            return math.inf
        if not self.in_err or math.isnan(self.in_err):
            return math.inf if out > 0 else 1.0
        return out / self.in_err


@dataclass
class OutputResult:
    path: str
    metrics: Metrics
    verdict: Verdict
    noise_floor: Optional[Dict[str, Any]] = None   # {"ratio", "gate", "torch_floor", "port_vs_fp64", "passed"}


@dataclass
class CaseResult:
    case: str
    level: str
    dtype: str
    mode: str
    rows: List[Row]
    outputs: List[OutputResult]
    passed: bool
    first_jump: Optional[Row]
    first_jump_note: str
    unmatched: List[str]
    graph_vs_pynative: List[OutputResult] = field(default_factory=list)
    not_compared: List[str] = field(default_factory=list)   # rows the case's row_level left out
    noise_floor_note: str = ""
    seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> OutputResult:
        """The worst final output (first failing one, else the largest rel_fro)."""
        failing = [o for o in self.outputs if not o.verdict.passed]
        if failing:
            return failing[0]
        return max(self.outputs, key=lambda o: _nan_big(o.metrics.rel_fro))

    @property
    def ceiling(self) -> standard.Ceiling:
        return standard.ceiling(self.level, self.dtype)

    @property
    def failing_rows(self) -> List[Row]:
        return [r for r in self.rows if not r.verdict.passed]

    def table(self, max_rows: Optional[int] = None) -> str:
        return format_result(self, max_rows=max_rows)


def _nan_big(v: float) -> float:
    return math.inf if v is None or math.isnan(v) else v


# ------------------------------------------------------------------------------------ tensors <-> numpy
def _is_pt(x) -> bool:
    return isinstance(x, torch.Tensor)


def _is_ms(x) -> bool:
    return isinstance(x, ms.Tensor)


def to_numpy(x) -> Tuple[np.ndarray, str]:
    """A torch / mindspore tensor or array -> (numpy copy, dtype name). Low-precision torch tensors are
    widened to fp32 for numpy (numpy has no bf16); the dtype name keeps what they were."""
    if _is_pt(x):
        name = standard.dtype_name(x.dtype)
        t = x.detach().cpu()
        if t.dtype in (torch.bfloat16,):
            t = t.float()
        return t.numpy().copy(), name
    if _is_ms(x):
        name = standard.dtype_name(x.dtype)
        return np.array(x.asnumpy(), copy=True), name
    a = np.asarray(x)
    return a, standard.dtype_name(a.dtype)


def flatten_leaves(obj, prefix: str = "") -> List[Leaf]:
    """Every tensor leaf of a nested result (tensor, tuple/list, dict, dataclass, ``to_tuple()`` objects)."""
    out: List[Leaf] = []
    if obj is None:
        return out
    if _is_pt(obj) or _is_ms(obj) or isinstance(obj, np.ndarray):
        a, dt = to_numpy(obj)
        out.append(Leaf(prefix or "out", a, dt))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += flatten_leaves(v, f"{prefix}[{k!r}]")
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            out += flatten_leaves(v, f"{prefix}[{i}]")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out += flatten_leaves(getattr(obj, f.name), f"{prefix}.{f.name}")
    elif hasattr(obj, "to_tuple"):
        for k in getattr(obj, "keys", lambda: range(len(obj.to_tuple())))():
            out += flatten_leaves(obj[k], f"{prefix}.{k}" if isinstance(k, str) else f"{prefix}[{k}]")
    # python scalars, strings and other objects carry no tensor to compare
    return out


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16"


def round_to_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round a float array to the case dtype and return it as float32 (identical numbers on both sides)."""
    a32 = np.asarray(a, dtype=np.float32)
    if dtype == "fp32":
        return a32
    return torch.from_numpy(a32).to(PT_DTYPES[dtype]).float().numpy()


class Args:
    """Case inputs with positional arguments: ``Args(x, mask=m)``. A plain dict means keywords only and a
    list/tuple positional only. Positional inputs are named "0", "1", ... (for ``fp32_inputs``)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = tuple(args), dict(kwargs)

    def __repr__(self):
        return f"Args({len(self.args)} positional, keywords {sorted(self.kwargs)})"

    def items(self):
        return [(str(i), v) for i, v in enumerate(self.args)] + list(self.kwargs.items())

    @classmethod
    def of(cls, raw) -> "Args":
        if isinstance(raw, Args):
            return raw
        if isinstance(raw, dict):
            return cls(**raw)
        if isinstance(raw, (list, tuple)):
            return cls(*raw)
        raise TypeError(f"case inputs must return a dict, a list/tuple or Args, got {type(raw).__name__}")

    def map(self, fn: Callable[[str, Any], Any]) -> "Args":
        return Args(*[fn(str(i), v) for i, v in enumerate(self.args)],
                    **{k: fn(k, v) for k, v in self.kwargs.items()})


def make_inputs(case: Case) -> Args:
    """The case inputs, drawn once from ``np.random.default_rng(seed)``, floats rounded to the case dtype."""
    raw = Args.of(case.inputs(np.random.default_rng(case.seed)))
    return raw.map(lambda k, v: _round_tree(v, "fp32" if k in case.fp32_inputs else case.dtype))


def _round_tree(v, dtype):
    if isinstance(v, np.ndarray) and _is_float(v):
        return round_to_dtype(v, dtype)
    if isinstance(v, (list, tuple)):
        return type(v)(_round_tree(x, dtype) for x in v)
    return v


def pt_inputs(inputs: Args, dtype: torch.dtype = torch.float32) -> Args:
    return Args.of(inputs).map(lambda k, v: _to_pt(v, dtype))


def _to_pt(v, dtype):
    if isinstance(v, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(v))
        return t.to(dtype) if _is_float(v) else t
    if isinstance(v, (list, tuple)):
        return type(v)(_to_pt(x, dtype) for x in v)
    return v


def ms_inputs(inputs: Args, dtype: str, fp32_inputs: Sequence[str] = ()) -> Args:
    return Args.of(inputs).map(lambda k, v: _to_ms(v, "fp32" if k in fp32_inputs else dtype))


def _to_ms(v, dtype):
    if isinstance(v, np.ndarray):
        if _is_float(v):
            return ms.Tensor(v.astype(np.float32)).astype(MS_DTYPES[dtype])
        return ms.Tensor(np.ascontiguousarray(v))
    if isinstance(v, (list, tuple)):
        return type(v)(_to_ms(x, dtype) for x in v)
    return v


# ------------------------------------------------------------------------------------ weights pt -> ms
def transfer_weights(pt_model, ms_model) -> None:
    """Copy a PyTorch twin's parameters and persistent buffers into its port (the converter's one path)."""
    import converters

    converters.pt_to_ms(pt_model, ms_model, strict=True)


# ------------------------------------------------------------------------------------ session cache
_SESSION_CACHE: Dict[Any, Any] = {}


def cached_pair(key, factory: Callable[[], Any]):
    """Build something expensive once per process (pytest session) under ``key``; later calls reuse it."""
    if key not in _SESSION_CACHE:
        _SESSION_CACHE[key] = factory()
    return _SESSION_CACHE[key]


def clear_cache() -> None:
    _SESSION_CACHE.clear()


def build_pair(case: Case):
    """(pt_model, ms_model) with the PyTorch weights copied into the port and the port in the case dtype."""
    def factory():
        torch.manual_seed(case.seed)
        ms.set_seed(case.seed)
        pt_model = case.pt_factory()
        ms_model = case.ms_factory()
        if hasattr(pt_model, "eval"):
            pt_model.eval()
        if hasattr(ms_model, "set_train"):
            ms_model.set_train(False)
        if case.transfer_weights:
            transfer_weights(pt_model, ms_model)
        if case.dtype != "fp32":
            from ms_impl.layers import set_compute_dtype

            set_compute_dtype(ms_model, MS_DTYPES[case.dtype])
        return pt_model, ms_model

    if case.cache_key is None:
        return factory()
    return cached_pair((case.cache_key, case.dtype), factory)


# ------------------------------------------------------------------------------------ calling and capture
def _resolve_call(call: CallSpec, side: int):
    if isinstance(call, tuple):
        call = call[side]
    return call


def _invoke(model, call, inputs: Args):
    if call is None:
        return model(*inputs.args, **inputs.kwargs)
    if isinstance(call, str):
        return getattr(model, call)(*inputs.args, **inputs.kwargs)
    return call(model, *inputs.args, **inputs.kwargs)


def _graph_fn(model, call):
    """The port's forward compiled with ms.jit (bound methods / partials: no lambdas under jit)."""
    if call is None:
        return ms.jit(model.construct)
    if isinstance(call, str):
        return ms.jit(getattr(model, call))
    return ms.jit(functools.partial(call, model))


@dataclass
class _Call:
    name: str
    call: int
    type: str
    inputs: List[Leaf]
    outputs: List[Leaf]


class _Recorder:
    """Forward hooks on every named sub-module; records (name, call index) -> inputs and outputs as numpy."""

    def __init__(self):
        self.calls: List[_Call] = []
        self.counts: Dict[str, int] = defaultdict(int)
        self.handles = []

    def _record(self, name, module, args, kwargs, output):
        idx = self.counts[name]
        self.counts[name] += 1
        self.calls.append(_Call(name, idx, type(module).__name__,
                                flatten_leaves((tuple(args), dict(kwargs or {}))), flatten_leaves(output)))

    def attach_pt(self, model):
        for name, mod in model.named_modules():
            if name == "":
                continue
            hook = functools.partial(self._pt_hook, name)
            self.handles.append(mod.register_forward_hook(hook, with_kwargs=True))
        return self

    def _pt_hook(self, name, module, args, kwargs, output):
        self._record(name, module, args, kwargs, output)

    def attach_ms(self, model):
        for name, cell in model.cells_and_names():
            if name == "":
                continue
            hook = functools.partial(self._ms_hook, name)
            self.handles.append(cell.register_forward_hook(hook, with_kwargs=True))
        return self

    def _ms_hook(self, name, cell, args, kwargs, output):
        self._record(name, cell, args, kwargs, output)

    def detach(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def _run_pt(pt_model, call, inputs: Args, capture):
    rec = _Recorder().attach_pt(pt_model) if capture else None
    try:
        with torch.no_grad():
            result = _invoke(pt_model, call, inputs)
    finally:
        if rec:
            rec.detach()
    return result, rec


def _run_ms(ms_model, call, inputs: Args, capture):
    rec = _Recorder().attach_ms(ms_model) if capture else None
    try:
        result = _invoke(ms_model, call, inputs)
        flatten_leaves(result)  # PyNative errors are asynchronous: .asnumpy() forces them out inside this case
    finally:
        if rec:
            rec.detach()
    return result, rec


# ------------------------------------------------------------------------------------ comparison
def _extract(case: Case, result, side: int) -> List[Leaf]:
    fn = case.outputs
    if isinstance(fn, tuple):
        fn = fn[side]
    if fn is not None:
        result = fn(result)
    leaves = flatten_leaves(result)
    if not leaves:
        raise ValueError(f"case {case.name}: the {'PyTorch' if side == 0 else 'MindSpore'} result has no tensor "
                         f"to compare (give the case an `outputs` extractor)")
    return leaves


def _compare_leaves(port: List[Leaf], ref: List[Leaf], expected_dtype: Optional[Callable[[Leaf], Optional[str]]]):
    """Leaf-wise metrics; a different number of leaves is a shape failure on the extra/missing ones."""
    res = []
    for i in range(max(len(port), len(ref))):
        if i >= len(port) or i >= len(ref):
            have = port[i] if i < len(port) else ref[i]
            m = Metrics(shape_port=tuple(port[i].array.shape) if i < len(port) else ("missing",),
                        shape_ref=tuple(ref[i].array.shape) if i < len(ref) else ("missing",), shape_ok=False)
            res.append((have.path, m))
            continue
        exp = expected_dtype(ref[i]) if expected_dtype else None
        m = compare(port[i].array, ref[i].array, expected_dtype=exp)
        m.dtype_port = port[i].dtype
        m.dtype_ok = exp is None or port[i].dtype == exp
        res.append((ref[i].path, m))
    return res


def _worst(metrics: List[Metrics]) -> Metrics:
    bad = [m for m in metrics if not (m.shape_ok and m.nonfinite_ok)]
    if bad:
        return bad[0]
    return max(metrics, key=lambda m: _nan_big(m.rel_fro))


def _input_error(port: List[Leaf], ref: List[Leaf]) -> float:
    """Worst rel_fro over the float inputs that are comparable: the same argument (position or keyword name)
    with the same shape on both sides. Twins whose signatures differ by design (e.g. the port receives RoPE
    angles as extra arguments) are compared on what they share; nan when no float input is comparable."""
    port_by_path = {p.path: p for p in port}
    floats = [(port_by_path[r.path], r) for r in ref if _is_float(r.array) and r.path in port_by_path]
    if not floats and any(_is_float(r.array) for r in ref):
        return math.nan
    errs = []
    for p, r in floats:
        if p.array.shape != r.array.shape:
            continue
        m = compare(p.array, r.array)
        errs.append(m.rel_fro if m.nonfinite_ok else math.inf)
    if floats and not errs:
        return math.nan
    return max(errs) if errs else 0.0


def compare_records(case: Case, pt_rec: _Recorder, ms_rec: _Recorder, pt_model
                    ) -> Tuple[List[Row], List[str], List[str]]:
    modules = dict(pt_model.named_modules())
    ms_calls = {(c.name, c.call): c for c in ms_rec.calls}
    rows, unmatched, not_compared = [], [], []
    for order, c in enumerate(pt_rec.calls):
        mc = ms_calls.pop((c.name, c.call), None)
        key = c.name if pt_rec.counts[c.name] == 1 else f"{c.name}#{c.call}"
        if mc is None:
            unmatched.append(f"{key} (PyTorch only)")
            continue
        if case.level == "op":
            level = "op"
        else:
            level = row_level_for(case, c.name, modules.get(c.name))
            if level is None:
                not_compared.append(key)
                continue
        if level is None:  # the case declares this row's layout different by design (e.g. packed vs padded)
            unmatched.append(f"{key} (layout differs by design; its consumers are compared)")
            continue
        leaf_metrics = _compare_leaves(mc.outputs, c.outputs, None)
        if not leaf_metrics:  # a module that returned no tensor (e.g. None)
            continue
        m = _worst([lm for _, lm in leaf_metrics])
        rows.append(Row(order=order, name=c.name, call=c.call, type=c.type, level=level, metrics=m,
                        in_err=_input_error(mc.inputs, c.inputs), verdict=judge(m, level, case.dtype),
                        n_calls=pt_rec.counts[c.name]))
    for (name, idx) in ms_calls:
        unmatched.append(f"{name}#{idx} (MindSpore only)" if ms_rec.counts[name] > 1 else f"{name} (MindSpore only)")
    return rows, unmatched, not_compared


def find_first_jump(rows: List[Row], factor: float = JUMP_FACTOR) -> Tuple[Optional[Row], str]:
    """The first module (execution order) whose output fails its ceiling while its inputs were fine, i.e.
    output error >= ``factor`` x input error. If errors only grow gradually, the first failing module."""
    failing = [r for r in rows if not r.verdict.passed]
    if not failing:
        return None, "no module exceeds its ceiling"
    for r in failing:
        if r.jump >= factor:
            return r, (f"{r.key} ({r.type}): output rel_fro {r.metrics.rel_fro:.3e} from input error "
                       f"{r.in_err:.3e} ({_fmt_ratio(r.jump)}); {'; '.join(r.verdict.reasons)}")
    r = failing[0]
    return r, (f"no sharp jump (error grows gradually); first module over its ceiling: {r.key} ({r.type}): "
               f"output rel_fro {r.metrics.rel_fro:.3e}, input error {r.in_err:.3e}")


def _fmt_ratio(x: float) -> str:
    return "x inf" if math.isinf(x) else f"x{x:.3g}"


# ------------------------------------------------------------------------------------ running a case
def _expected_port_dtype(case: Case):
    def f(ref_leaf: Leaf) -> Optional[str]:
        if _is_float(ref_leaf.array):
            want = case.out_dtype or case.dtype
            return CASE_DTYPE_NAME.get(want, want)  # accepts "fp32" or "float32"
        return ref_leaf.dtype
    return f


def _judge_outputs(case, port_leaves, ref_leaves, level, dtype, expected) -> List[OutputResult]:
    return [OutputResult(path, m, judge(m, level, dtype))
            for path, m in _compare_leaves(port_leaves, ref_leaves, expected)]


def _noise_floor(case: Case, pt_model, inputs, ms_leaves, outputs: List[OutputResult]) -> str:
    """Run PyTorch in the case dtype and in fp64 on the same weights; gate the port's noise-floor ratio."""
    gate = standard.noise_floor_gate(case.noise_floor)
    call = _resolve_call(case.call, 0)
    runs = {}
    try:
        low = copy.deepcopy(pt_model).to(PT_DTYPES[case.dtype])  # a half-size copy
        res, _ = _run_pt(low, call, pt_inputs(inputs, PT_DTYPES[case.dtype]), capture=False)
        runs["low"] = _extract(case, res, 0)
        del low, res
    except Exception as e:  # torch has no kernel for this dtype on CPU: say so, gate on the table only
        return f"noise floor not measured: PyTorch {case.dtype} run failed ({type(e).__name__}: {e})"
    try:
        # fp64 in place (fp32 -> fp64 -> fp32 is exact), so a full-size model is not held three times
        pt_model.to(torch.float64)
        res, _ = _run_pt(pt_model, call, pt_inputs(inputs, torch.float64), capture=False)
        runs["fp64"] = _extract(case, res, 0)
    except Exception as e:
        return f"noise floor not measured: PyTorch fp64 run failed ({type(e).__name__}: {e})"
    finally:
        pt_model.to(torch.float32)
    for o, port, low, ref64 in zip(outputs, ms_leaves, runs["low"], runs["fp64"]):
        if not (o.metrics.shape_ok and _is_float(ref64.array)):
            continue
        fin = np.isfinite(port.array) & np.isfinite(low.array) & np.isfinite(ref64.array)
        ratio = standard.noise_floor_ratio(port.array[fin], low.array[fin], ref64.array[fin])
        o.noise_floor = dict(ratio=ratio, gate=gate, kind=case.noise_floor,
                             torch_floor=standard.rel_fro(low.array[fin], ref64.array[fin]),
                             port_vs_fp64=standard.rel_fro(port.array[fin], ref64.array[fin]),
                             passed=bool(ratio <= gate))
        o.metrics.extra["noise_floor_ratio"] = ratio
        if not ratio <= gate:
            o.verdict = Verdict(False, o.verdict.level, o.verdict.dtype, o.verdict.ceiling,
                                o.verdict.reasons + (f"noise-floor ratio {ratio:.3g} > {gate:g} "
                                                     f"({case.noise_floor})",))
    return ""


def flush_pending_ms_error() -> Optional[str]:
    """PyNative errors are asynchronous: a kernel that failed earlier (outside this case) raises at the next
    op that syncs. Sync once on a trivial op so such an error is not blamed on this case; return its text."""
    try:
        (ms.Tensor(np.zeros(1, np.float32)) + 1).asnumpy()
    except Exception as e:  # noqa: BLE001 - any stale kernel error
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        warnings.warn(f"a MindSpore error from before this parity case surfaced (not caused by it): {msg}")
        return msg
    return None


def run_case(case: Case) -> CaseResult:
    flush_pending_ms_error()
    t0 = time.perf_counter()
    pt_model, ms_model = build_pair(case)
    t_build = time.perf_counter() - t0
    inputs = make_inputs(case)
    pt_call, ms_call = _resolve_call(case.call, 0), _resolve_call(case.call, 1)
    ms_kwargs = ms_inputs(inputs, case.dtype, case.fp32_inputs)

    t1 = time.perf_counter()
    pt_result, pt_rec = _run_pt(pt_model, pt_call, pt_inputs(inputs), case.capture)
    ms_result, ms_rec = _run_ms(ms_model, ms_call, ms_kwargs, case.capture)
    t_run = time.perf_counter() - t1
    ref_leaves = _extract(case, pt_result, 0)
    pyn_leaves = _extract(case, ms_result, 1)
    expected = _expected_port_dtype(case)

    gvp: List[OutputResult] = []
    if case.mode == "graph":
        t2 = time.perf_counter()
        graph_result = _graph_fn(ms_model, ms_call)(*ms_kwargs.args, **ms_kwargs.kwargs)
        port_leaves = _extract(case, graph_result, 1)
        t_run += time.perf_counter() - t2
        if case.graph_vs_pynative:
            # the compiled forward against the PyNative forward of the same port (same dtype on both)
            gvp = _judge_outputs(case, port_leaves, pyn_leaves, case.level, case.dtype, None)
    else:
        port_leaves = pyn_leaves

    outputs = _judge_outputs(case, port_leaves, ref_leaves, case.level, case.dtype, expected)
    nf_note = ""
    if case.dtype != "fp32":
        if case.noise_floor is False:
            nf_note = "noise floor not measured (case sets noise_floor=False)"
        else:
            nf_note = _noise_floor(case, pt_model, inputs, port_leaves, outputs)

    rows, unmatched, not_compared = [], [], []
    if case.capture:
        rows, unmatched, not_compared = compare_records(case, pt_rec, ms_rec, pt_model)
    first, note = find_first_jump(rows)
    if first is None and rows and not all(o.verdict.passed for o in outputs):
        note += ("; the final output fails, so the error arises outside the named sub-modules (functional code "
                 "in a parent's forward, or a module present on one side only)")
    passed = (all(o.verdict.passed for o in outputs) and all(r.verdict.passed for r in rows)
              and all(o.verdict.passed for o in gvp))
    return CaseResult(case=case.id, level=case.level, dtype=case.dtype, mode=case.mode, rows=rows,
                      outputs=outputs, passed=passed, first_jump=first, first_jump_note=note, unmatched=unmatched,
                      not_compared=not_compared,
                      graph_vs_pynative=gvp, noise_floor_note=nf_note,
                      seconds=dict(build=t_build, run=t_run, total=time.perf_counter() - t0))


def assert_case(case: Case) -> CaseResult:
    result = run_case(case)
    if not result.passed:
        raise AssertionError("\n" + format_result(result))
    return result


# ------------------------------------------------------------------------------------ formatting
def _g(v, fmt=".2e") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, fmt)


def format_result(res: CaseResult, max_rows: Optional[int] = None) -> str:
    lines = [f"parity case {res.case}: level {res.level}, dtype {res.dtype}, mode {res.mode} -> "
             f"{'PASS' if res.passed else 'FAIL'}"]
    for o in res.outputs:
        lines.append(_output_line("final output" + (o.path if o.path != "out" else ""), o))
    for o in res.graph_vs_pynative:
        lines.append(_output_line("graph vs pynative" + (o.path if o.path != "out" else ""), o))
    if res.noise_floor_note:
        lines.append(res.noise_floor_note)
    if res.rows:
        lines.append(f"first jump: {res.first_jump_note}")
        hdr = f"{'#':>4}  {'module':<40} {'type':<18} {'level':<6} {'in_err':>9} {'rel_fro':>9} {'cosine':>10} " \
              f"{'max_abs':>9} {'ceiling':<22} ok"
        lines += [hdr, "-" * len(hdr)]
        rows = res.rows
        if max_rows is not None and len(rows) > max_rows:  # keep failing rows and the first jump visible
            keep = {id(r) for r in rows[:max_rows]} | {id(r) for r in res.failing_rows[:max_rows]}
            rows = [r for r in rows if id(r) in keep]
        for r in rows:
            mark = "ok" if r.verdict.passed else "FAIL"
            if res.first_jump is r:
                mark += "  <-- first jump"
            m = r.metrics
            lines.append(f"{r.order:>4}  {r.key:<40.40} {r.type:<18.18} {r.level:<6} {_g(r.in_err):>9} "
                         f"{_g(m.rel_fro):>9} {_g(m.cosine, '.7f'):>10} {_g(m.max_abs):>9} "
                         f"{r.verdict.ceiling.describe():<22.22} {mark}")
            if not r.verdict.passed:
                lines.append(f"{'':6}{'; '.join(r.verdict.reasons)}")
        if len(rows) < len(res.rows):
            lines.append(f"... {len(res.rows) - len(rows)} passing rows not shown")
    if res.unmatched:
        lines.append("unmatched modules (on one side only, not compared): " + ", ".join(res.unmatched))
    if res.not_compared:
        lines.append("left out by the case's row_level/skip_rows (not comparable by design): " + ", ".join(res.not_compared))
    return "\n".join(lines)


def _output_line(label: str, o: OutputResult) -> str:
    m = o.metrics
    s = (f"{label}: rel_fro {_g(m.rel_fro)} cosine {_g(m.cosine, '.7f')} max_abs {_g(m.max_abs)} "
         f"max_rel {_g(m.max_rel)} err_ratio(2,3) {_g(m.err_ratio_2, '.3g')}/{_g(m.err_ratio_3, '.3g')} "
         f"shape {m.shape_port} {m.dtype_port} | ceiling {o.verdict.ceiling.describe()} "
         f"[{o.verdict.level}/{o.verdict.dtype}] -> {'PASS' if o.verdict.passed else 'FAIL'}")
    if o.noise_floor:
        nf = o.noise_floor
        s += (f"\n  noise floor: torch-{o.verdict.dtype} vs fp64 {nf['torch_floor']:.2e}, port vs fp64 "
              f"{nf['port_vs_fp64']:.2e}, ratio {nf['ratio']:.3g} (gate <= {nf['gate']:g}, {nf['kind']})")
    if not o.verdict.passed:
        s += "\n  " + "; ".join(o.verdict.reasons)
    return s
