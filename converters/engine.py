"""Planning a conversion: map every source key through a dialect onto the target spec and collect problems
(missing / unexpected / mis-shaped / wrong-dtype / duplicate keys) from metadata alone, before any data is read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from converters import dtypes, rules
from converters.errors import ConversionError
from converters.rules import Dropped, Item


@dataclass
class Plan:
    dialect: rules.Dialect
    mapping: Dict[str, Tuple[str, Item]] = field(default_factory=dict)   # our name -> (source name, item)
    dropped: List[Tuple[str, str]] = field(default_factory=list)          # (source name, reason)
    unexpected: List[str] = field(default_factory=list)                   # source names (after decoding: our)
    missing: List[str] = field(default_factory=list)
    misshaped: List[Tuple[str, tuple, tuple]] = field(default_factory=list)   # (our name, file shape, model shape)
    wrong_dtype: List[Tuple[str, str, str]] = field(default_factory=list)     # (our name, file dtype, model dtype)
    duplicates: List[Tuple[str, str, str]] = field(default_factory=list)
    derived: List[str] = field(default_factory=list)    # model keys the source lacks that the model computes itself

    @property
    def score(self):
        return len(self.mapping) - len(self.misshaped)

    def problems(self, allow_missing=False, allow_unexpected=False):
        p = {}
        if self.missing and not allow_missing:
            p["missing"] = self.missing
        if self.unexpected and not allow_unexpected:
            p["unexpected"] = self.unexpected
        if self.misshaped:
            p["mis-shaped"] = [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.misshaped]
        if self.wrong_dtype:
            p["wrong dtype"] = [f"{k}: file {a} vs model {b}" for k, a, b in self.wrong_dtype]
        if self.duplicates:
            p["duplicate"] = [f"{a} and {b} both map to {c}" for a, b, c in self.duplicates]
        return p

    def reshaped(self):
        return [(src, it.name, [lbl for lbl, _ in it.ops]) for k, (src, it) in self.mapping.items() if it.ops]


def make_plan(metas, spec, dialect, derived=()) -> Plan:
    """metas: iterable of (source name, shape, dtype). ``derived``: model keys the model computes from its
    config (a family's ``extra["converter"]["derived"]``, e.g. fixed position tables): a source that has them
    provides them (checked like any key; shaped for another input size they are dropped by the family's
    ``DropMisshaped`` rule); one that lacks them is fine (``plan.derived``, not missing)."""
    plan = Plan(dialect)
    for src, shape, dt in metas:
        it = dialect.decode(src, shape, dt, spec)
        if isinstance(it, Dropped):
            plan.dropped.append((src, it.reason))
            continue
        if it.name in plan.mapping:
            plan.duplicates.append((plan.mapping[it.name][0], src, it.name))
            continue
        if it.name not in spec:
            plan.unexpected.append(src if src == it.name else f"{src} (as {it.name})")
            continue
        plan.mapping[it.name] = (src, it)
        ps = spec.params[it.name]
        if tuple(it.shape) != tuple(ps.shape):
            plan.misshaped.append((it.name, tuple(it.shape), tuple(ps.shape)))
        if dtypes.kind(dt) != dtypes.kind(ps.dtype):
            plan.wrong_dtype.append((it.name, dt, ps.dtype))
    missing = [k for k in spec.params if k not in plan.mapping]
    derived = set(derived or ())
    plan.derived = [k for k in missing if k in derived]
    plan.missing = [k for k in missing if k not in derived]
    return plan


def choose_plan(metas, spec, hooks, dialect=None) -> Plan:
    """A named dialect, or ``None``/"auto": the candidate (ours, mindone) that maps the most keys."""
    metas = list(metas)
    derived = tuple((hooks or {}).get("derived") or ())
    if dialect and dialect != "auto":
        if dialect not in rules.DIALECTS:
            raise ConversionError(f"unknown source dialect {dialect!r}; known: {sorted(rules.DIALECTS)}")
        return make_plan(metas, spec, rules.DIALECTS[dialect](hooks), derived)
    best = None
    for name in ("ours", "mindone"):
        p = make_plan(metas, spec, rules.DIALECTS[name](hooks), derived)
        if best is None or p.score > best.score:
            best = p
    return best


def _listing(label, items, limit=8):
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {len(items)} {label}: " + ", ".join(items[:limit]) + more


def problem_message(src_desc, origin, problems, hint=""):
    lines = [f"{src_desc} does not match {origin}:"]
    for label, items in problems.items():
        lines.append(_listing(label + (" keys" if label in ("missing", "unexpected") else ""), items))
    if hint:
        lines.append(hint)
    return "\n".join(lines)
