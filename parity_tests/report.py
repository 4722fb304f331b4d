"""Parity report for a registered model: both twins on the same weights and inputs, every module compared.

    python -m parity_tests.report --model STDiT3-S/2 [--weights PATH] [--dtype fp32|fp16]
                                  [--mode pynative|graph] [--out outputs/parity/<name>] [--seed 0]

Writes ``report.md`` (header, final verdict, first jump, per-layer table) and ``rel_fro.png`` (rel_fro of every
module call through the depth of the network, log scale, with the ceilings), prints where they are, and exits
1 when any ceiling is exceeded (2 on a usage/conversion error).

Weights: without ``--weights`` the reference is built from the preset with random weights (all-zero
parameters, i.e. DiT zero-init layers, are filled with small random values so the comparison is not
vacuous); with ``--weights`` the reference is strict-loaded through ``converters`` (config from the folder's
config.json when there is one, else the preset). In both cases the port receives the reference's weights
through ``converters.model_tensors`` + ``load_state_into``, like every parity case.

Family hooks read from ``opensora_dual.registry.Family.extra``: ``example_inputs(kwargs, rng) -> dict``
(required), ``full_size_presets`` (which presets are judged at model_full; default: the name contains XL, 3B
or XXL), and optional ``parity_case``: extra ``Case`` fields for whole-model runs (e.g. ``fp32_inputs``,
``out_dtype``, ``row_level``, ``skip_rows``, ``call``, ``outputs``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402  (before anything that may import decord)
import numpy as np  # noqa: E402

from parity_tests import standard  # noqa: E402
from parity_tests.engine import Case, CaseResult, fill_zero_parameters, run_case  # noqa: E402

FULL_SIZE_MARKERS = ("XL", "3B", "XXL")


# ------------------------------------------------------------------------------------------ building
def model_level(name: str, family) -> str:
    full = family.extra.get("full_size_presets")
    if full is not None:
        return "model_full" if name in full else "model_small"
    return "model_full" if any(m in name for m in FULL_SIZE_MARKERS) else "model_small"


def _release_kwargs(family, path: str, preset_kwargs: dict) -> dict:
    import converters

    ckpt = converters.read_checkpoint(path)
    try:
        cfg = ckpt.config
    finally:
        close = getattr(ckpt, "close", None)
        if close:
            close()
    if cfg is not None and family.config_from_json is not None:
        return family.config_from_json(cfg)
    return dict(preset_kwargs)


def make_case(name: str, dtype: str = "fp32", mode: str = "pynative", seed: int = 0,
              weights: Optional[str] = None) -> tuple:
    """The whole-model Case for a registered preset, plus the metadata the report prints."""
    from opensora_dual import registry

    family, kwargs = registry.resolve(name)
    if "example_inputs" not in family.extra:
        raise SystemExit(f"family {family.name!r} has no extra['example_inputs']; the report cannot make inputs")
    if weights:
        kwargs = _release_kwargs(family, weights, kwargs)
    notes: Dict[str, Any] = {}

    def pt_factory():
        import torch

        torch.manual_seed(seed)
        model = family.model_class("pt")(**kwargs)
        if weights:
            import converters

            ckpt = converters.read_checkpoint(weights)
            try:
                converters.load_state_into(model, ckpt, "pt", strict=True, family=family)
            finally:
                if hasattr(ckpt, "close"):
                    ckpt.close()
            notes["weights"] = f"{weights} (strict load through converters)"
        else:
            filled = fill_zero_parameters(model, seed=seed)
            notes["weights"] = (f"random (torch.manual_seed({seed})); {len(filled)} all-zero parameters filled "
                                f"with N(0, 0.02): {', '.join(filled[:8])}{' ...' if len(filled) > 8 else ''}")
        return model

    def ms_factory():
        from mindspore.nn.utils import no_init_parameters

        with no_init_parameters():  # every weight is copied from the reference
            return family.model_class("ms")(**kwargs)

    example_inputs = family.extra["example_inputs"]
    inputs = functools.partial(_family_inputs, example_inputs, kwargs)
    extra = dict(family.extra.get("parity_case") or {})
    level = model_level(name, family)
    case = Case(name, pt_factory, ms_factory, inputs, level, dtype=dtype, mode=mode, seed=seed, **extra)
    meta = dict(model=name, family=family.name, config=kwargs, dtype=dtype, mode=mode, seed=seed, level=level,
                case_fields=sorted(extra), notes=notes)
    return case, meta


def _family_inputs(example_inputs, kwargs, rng):
    return example_inputs(kwargs, rng)


# ------------------------------------------------------------------------------------------ writing
def versions() -> Dict[str, str]:
    import torch

    v = dict(python=platform.python_version(), torch=torch.__version__, mindspore=ms.__version__,
             numpy=np.__version__, device=ms.get_context("device_target"))
    try:
        v["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parents[1], timeout=10).stdout.strip() or "?"
    except Exception:
        v["git"] = "?"
    return v


def _fmt(v, f=".2e"):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, f)


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def write_report(result: CaseResult, out_dir, meta: Optional[dict] = None) -> Dict[str, Path]:
    """Write ``report.md`` and ``rel_fro.png`` for one engine result into ``out_dir``; returns their paths."""
    meta = dict(meta or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_rel_fro(result, out / "rel_fro.png", title=meta.get("model", result.case))
    md = out / "report.md"
    md.write_text(render_markdown(result, meta, png.name))
    return {"report": md, "plot": png}


def render_markdown(result: CaseResult, meta: dict, plot_name: str = "rel_fro.png") -> str:
    v = meta.get("versions") or versions()
    verdict = "PASS" if result.passed else "FAIL"
    L = [f"# Parity report: {meta.get('model', result.case)} — {verdict}", ""]
    L.append(f"- generated: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    for key in ("model", "family", "dtype", "mode", "seed", "level"):
        if key in meta:
            L.append(f"- {key}: `{meta[key]}`")
    if "config" in meta:
        L.append(f"- config: `{meta['config']}`")
    for k, n in (meta.get("notes") or {}).items():
        L.append(f"- {k}: {n}")
    if meta.get("inputs"):
        L.append("- inputs: " + ", ".join(f"`{k}` {s}" for k, s in meta["inputs"].items()))
    if meta.get("case_fields"):
        L.append(f"- family parity settings: {', '.join(meta['case_fields'])}")
    L.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    L.append(f"- PyTorch computes in fp32; the port in {result.dtype}"
             f"{' (set_compute_dtype)' if result.dtype != 'fp32' else ''}; "
             f"{'graph = ms.jit-compiled forward; per-layer rows from a PyNative run with hooks' if result.mode == 'graph' else 'PyNative with forward hooks'}.")
    L.append(f"- timing: build {result.seconds.get('build', 0):.1f} s, run {result.seconds.get('run', 0):.1f} s, "
             f"total {result.seconds.get('total', 0):.1f} s")
    L += ["", "## Verdict", ""]
    n_fail = len(result.failing_rows)
    L.append(f"**{verdict}** — final output at level `{result.level}`/{result.dtype} "
             f"(ceiling {result.ceiling.describe()}); {len(result.rows)} module calls compared, {n_fail} over "
             f"their ceiling.")
    L += ["", "| output | rel_fro | cosine | max_abs | max_rel | err_ratio 1e-2 / 1e-3 | shape | dtype | ceiling | result |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for label, outs in (("final", result.outputs), ("graph vs pynative", result.graph_vs_pynative)):
        for o in outs:
            m = o.metrics
            L.append(f"| {label} {_md_escape(o.path)} | {_fmt(m.rel_fro)} | {_fmt(m.cosine, '.7f')} | "
                     f"{_fmt(m.max_abs)} | {_fmt(m.max_rel)} | {_fmt(m.err_ratio_2, '.3g')} / "
                     f"{_fmt(m.err_ratio_3, '.3g')} | {m.shape_port} | {m.dtype_port} | "
                     f"{o.verdict.ceiling.describe()} | {'pass' if o.verdict.passed else 'FAIL: ' + '; '.join(o.verdict.reasons)} |")
    for o in result.outputs:
        if o.noise_floor:
            nf = o.noise_floor
            L.append(f"\nNoise floor ({_md_escape(o.path)}): torch-{result.dtype} vs fp64 {nf['torch_floor']:.2e}, "
                     f"port vs fp64 {nf['port_vs_fp64']:.2e}, ratio {nf['ratio']:.3g} (gate ≤ {nf['gate']:g}, "
                     f"{nf['kind']}) — {'pass' if nf['passed'] else 'FAIL'}")
    if result.noise_floor_note:
        L.append(f"\n{result.noise_floor_note}")
    L += ["", "## First jump", "", result.first_jump_note if result.rows else "(no per-layer rows: capture off)", ""]
    L += [f"![rel_fro through the network]({plot_name})", ""]
    if result.rows:
        L += ["## Per-layer table", "",
              "Rows in execution order; `name#k` is the k-th call of a module used several times. in_err = worst "
              "rel_fro of the module's inputs.", "",
              "| # | module | type | level | in_err | rel_fro | cosine | max_abs | ceiling | result |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in result.rows:
            m = r.metrics
            res = "pass" if r.verdict.passed else "**FAIL**: " + "; ".join(r.verdict.reasons)
            if result.first_jump is r:
                res += " ← first jump"
            L.append(f"| {r.order} | `{r.key}` | {r.type} | {r.level} | {_fmt(r.in_err)} | {_fmt(m.rel_fro)} | "
                     f"{_fmt(m.cosine, '.7f')} | {_fmt(m.max_abs)} | {r.verdict.ceiling.describe()} | {res} |")
    if result.unmatched:
        L += ["", "Modules on one side only (not compared): " + ", ".join(f"`{u}`" for u in result.unmatched)]
    if result.not_compared:
        L += ["", "Left out by the family's row_level/skip_rows (not comparable by design; their consumers are compared): "
              + ", ".join(f"`{u}`" for u in result.not_compared)]
    return "\n".join(L) + "\n"


def plot_rel_fro(result: CaseResult, path, title: str = "") -> Path:
    """rel_fro of every module call in execution order (log y), ceilings as lines, failures in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    rows = result.rows
    floor = 1e-10
    fig, ax = plt.subplots(figsize=(max(8.0, min(24.0, 0.12 * len(rows) + 6)), 5.0), dpi=110)
    gate_y = 0.3   # rows that fail a hard gate (shape, NaN positions) have no rel_fro: drawn up here
    positive = [v for r in rows for v in (r.metrics.rel_fro, r.in_err) if v and not math.isnan(v)]
    positive += [o.metrics.rel_fro for o in result.outputs if o.metrics.rel_fro and not math.isnan(o.metrics.rel_fro)]
    floor = 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else floor  # exact zeros drawn here
    xs = np.arange(len(rows))
    ys = np.array([gate_y if (math.isnan(r.metrics.rel_fro) or not (r.metrics.shape_ok and r.metrics.nonfinite_ok))
                   else max(r.metrics.rel_fro, floor) for r in rows])
    ins = np.array([r.in_err if r.in_err and not math.isnan(r.in_err) else np.nan for r in rows])  # 0: not drawn
    levels = [r.level for r in rows]
    colors = {"layer": "tab:blue", "block": "tab:purple", "op": "tab:cyan"}
    if rows:
        ax.plot(xs, ins, color="0.75", lw=1, label="input error (in_err)", zorder=1)
        for lv in sorted(set(levels)):
            sel = np.array([(l == lv and r.verdict.passed) for l, r in zip(levels, rows)])
            if sel.any():
                ax.scatter(xs[sel], ys[sel], s=14 if lv != "block" else 40, color=colors.get(lv, "tab:gray"),
                           marker="o" if lv != "block" else "s", label=f"{lv} rows", zorder=3)
        bad = np.array([not r.verdict.passed for r in rows])
        if bad.any():
            ax.scatter(xs[bad], ys[bad], s=30, color="tab:red", marker="x", label="over ceiling", zorder=4)
        if (ys == gate_y).any():
            ax.axhline(gate_y, color="tab:red", lw=0.8, alpha=0.5)
            ax.text(0, gate_y * 1.4, "hard gate failed (shape / NaN positions)", color="tab:red", fontsize=7)
        for lv in sorted(set(levels)):
            c = standard.ceiling(lv, result.dtype).rel_fro
            ax.axhline(c, color=colors.get(lv, "tab:gray"), ls="--", lw=1, label=f"{lv} ceiling {c:.0e}")
        for i, r in enumerate(rows):
            if r.level == "block":
                ax.axvline(i, color="tab:purple", alpha=0.15, lw=1)
                ax.annotate(r.key, (i, ys[i]), textcoords="offset points", xytext=(0, 8), rotation=60,
                            fontsize=7, color="tab:purple", ha="left")
        if result.first_jump is not None:
            j = rows.index(result.first_jump)
            ax.annotate(f"first jump: {result.first_jump.key}", (j, ys[j]), textcoords="offset points",
                        xytext=(10, -25), fontsize=8, color="tab:red", arrowprops=dict(arrowstyle="->", color="tab:red"))
    # the final output at the model level, after the last row
    xf = len(rows) + 1
    for o in result.outputs:
        y = max(o.metrics.rel_fro, floor) if not math.isnan(o.metrics.rel_fro) else floor
        ax.scatter([xf], [y], s=120, marker="*", color="tab:green" if o.verdict.passed else "tab:red", zorder=5,
                   label=f"final output {o.path if o.path != 'out' else ''}".strip())
    cf = result.ceiling.rel_fro
    if cf is not None:
        ax.hlines(cf, xf - 0.8, xf + 0.8, color="tab:green", lw=2, label=f"{result.level} ceiling {cf:.0e}")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1.0)
    if any(r.metrics.rel_fro == 0.0 or r.in_err == 0.0 for r in rows):
        ax.text(0, floor * 1.15, "exact zeros", fontsize=6, color="0.5")
    ax.set_xlabel("module call, execution order (block rows: squares and shaded lines; final output: star)")
    ax.set_ylabel("rel_fro (port vs reference)")
    verdict = "PASS" if result.passed else "FAIL"
    ax.set_title(f"{title} {result.dtype} {result.mode}: {verdict}", fontsize=11)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ CLI
def default_out_dir(model: str, dtype: str, mode: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return Path("outputs") / "parity" / f"{slug}-{dtype}-{mode}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity_tests.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a registered preset, e.g. STDiT3-S/2")
    p.add_argument("--weights", help="release folder or checkpoint file to load into both twins (via converters)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--mode", default="pynative", choices=["pynative", "graph"])
    p.add_argument("--out", help="output folder (default outputs/parity/<model>-<dtype>-<mode>)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    from converters import ConversionError

    try:
        case, meta = make_case(a.model, a.dtype, a.mode, a.seed, a.weights)
        result = run_case(case)
    except KeyError as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from parity_tests.engine import make_inputs

    meta["inputs"] = {k: (tuple(v.shape), str(v.dtype)) if hasattr(v, "shape") else repr(v)
                      for k, v in make_inputs(case).items()}
    meta["versions"] = versions()
    paths = write_report(result, a.out or default_out_dir(a.model, a.dtype, a.mode), meta)
    print(f"{'PASS' if result.passed else 'FAIL'}: {a.model} {a.dtype} {a.mode} — final rel_fro "
          f"{result.final.metrics.rel_fro:.2e} (ceiling {result.ceiling.describe()}), "
          f"{len(result.failing_rows)}/{len(result.rows)} module calls over their ceiling")
    if not result.passed and result.rows:
        print(f"first jump: {result.first_jump_note}")
    print(f"report: {paths['report']}\nplot:   {paths['plot']}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
