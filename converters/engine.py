"""Planning a conversion: map every source key through a dialect onto the target spec and collect problems
(missing / unexpected / mis-shaped / wrong-dtype / duplicate keys) from metadata alone, before any data is read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

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
        decoded = dialect.decode(src, shape, dt, spec)
        if isinstance(decoded, Dropped):
            plan.dropped.append((src, decoded.reason))
            continue
        for it in (decoded if isinstance(decoded, list) else [decoded]):   # a list: a split fused tensor
            _plan_item(plan, src, it, dt, spec)
    missing = [k for k in spec.params if k not in plan.mapping]
    derived = set(derived or ())
    plan.derived = [k for k in missing if k in derived]
    plan.missing = [k for k in missing if k not in derived]
    return plan


def _plan_item(plan, src, it, dt, spec):
    """Record one decoded item (a source key, or one part of a split fused source key) in ``plan``."""
    if it.name in plan.mapping:
        plan.duplicates.append((plan.mapping[it.name][0], src, it.name))
        return
    if it.name not in spec:
        plan.unexpected.append(src if src == it.name else f"{src} (as {it.name})")
        return
    plan.mapping[it.name] = (src, it)
    ps = spec.params[it.name]
    if tuple(it.shape) != tuple(ps.shape):
        plan.misshaped.append((it.name, tuple(it.shape), tuple(ps.shape)))
    if dtypes.kind(dt) != dtypes.kind(ps.dtype):
        plan.wrong_dtype.append((it.name, dt, ps.dtype))


def choose_plan(metas, spec, hooks, dialect=None) -> Plan:
    """A named dialect, or ``None``/"auto": the candidate (ours, mindone) that maps the most keys."""
    metas = list(metas)
    derived = tuple((hooks or {}).get("derived") or ())
    family_dialects = dict((hooks or {}).get("dialects") or {})   # a family's own dialects (name -> f(hooks))
    if dialect and dialect != "auto":
        if dialect in family_dialects:
            return make_plan(metas, spec, family_dialects[dialect](hooks), derived)
        if dialect not in rules.DIALECTS:
            raise ConversionError(f"unknown source dialect {dialect!r}; known: "
                                  f"{sorted(rules.DIALECTS) + sorted(family_dialects)}")
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


class ConcatRowsView:
    """A read-only source that presents groups of source tensors concatenated along their first axis as one
    fused tensor (``q_proj``, ``k_proj``, ``v_proj`` -> ``qkv``), the many-to-one direction of ``SplitRows``.
    ``source``: anything with ``keys()`` and ``read_raw(name)`` (a Checkpoint) or a dict of arrays;
    ``groups``: {fused name: [part names in row order]}. Other keys pass through. Usable wherever a dict of
    arrays is (``load_state_into``, ``verify``-style comparisons): ``keys()``, ``meta()``, ``read_raw()`` and
    the mapping protocol. Each fused tensor is assembled when read (one group in memory at a time)."""

    def __init__(self, source, groups):
        self._src = source
        self._groups = {k: list(v) for k, v in groups.items()}
        used = [p for parts in self._groups.values() for p in parts]
        src_keys = list(source.keys())
        missing = [p for p in used if p not in src_keys]
        if missing:
            raise ConversionError(f"cannot fuse: the source has no {', '.join(missing[:5])}")
        used = set(used)
        self._keys = [k for k in src_keys if k not in used] + list(self._groups)

    def _raw(self, k):
        if hasattr(self._src, "read_raw"):
            return self._src.read_raw(k)
        return dtypes.to_raw(np.asarray(self._src[k]))

    def keys(self):
        return list(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def read_raw(self, k):
        if k not in self._groups:
            return self._raw(k)
        parts = [self._raw(p) for p in self._groups[k]]
        dts = {dt for _, dt in parts}
        if len(dts) != 1:
            raise ConversionError(f"cannot fuse {k}: its parts have different dtypes {sorted(dts)}")
        return np.concatenate([a for a, _ in parts], axis=0), parts[0][1]

    def meta(self, k):
        raw, dt = self.read_raw(k)
        return tuple(raw.shape), dt

    def __getitem__(self, k):
        raw, dt = self.read_raw(k)
        return dtypes.to_numpy(raw, dt)
