"""The declarative rule engine.

A *dialect* is an ordered list of rules between our names (= the PyTorch reference's state-dict keys) and the
names/layouts some other checkpoint uses. Each rule can ``decode`` (dialect -> ours, used when reading) and
``encode`` (ours -> dialect, used when writing); ``encode`` runs the rules in reverse order, and every
invertible rule's ``decode(encode(x)) == x`` exactly (renames and reshapes never touch the bytes).

Rules that depend on the model read the target ``ModelSpec``: *which* parameters are called gamma/beta or
embedding_table in the mindone dialect is decided by the module type that owns them (LayerNorm, GroupNorm,
BatchNorm, Embedding), and the patch-embedder layout rule applies to Conv3d weights whose kernel equals their
stride - never by matching substrings of names.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import numpy as np


@dataclass
class Item:
    name: str
    shape: tuple
    dtype: str
    ops: List[Tuple[str, Callable]] = field(default_factory=list)   # (label, raw ndarray -> raw ndarray)

    def with_op(self, name, shape, label, fn):
        return Item(name, tuple(shape), self.dtype, self.ops + [(label, fn)])

    def renamed(self, name):
        return Item(name, self.shape, self.dtype, list(self.ops))

    @property
    def same_bytes(self):
        """True when every op only reshapes (the bytes pass through unchanged)."""
        return all(getattr(fn, "same_bytes", False) for _, fn in self.ops)

    def apply(self, raw):
        for _, fn in self.ops:
            raw = fn(raw)
        return raw


@dataclass
class Dropped:
    reason: str


class Rule:
    invertible = True

    def decode(self, item: Item, spec):
        return item

    def encode(self, item: Item, spec):
        return item

    def describe(self):
        return type(self).__name__


def _reshape(shape):
    shape = tuple(shape)

    def fn(a):
        return a.reshape(shape)

    fn.same_bytes = True   # C-order reshape: the file bytes are unchanged
    return fn


class StripPrefix(Rule):
    """decode: strip leading wrapper prefixes (``network.``, ``_backbone.``, ``module.``); encode: add ``add``."""

    def __init__(self, prefixes=("network.", "_backbone.", "module."), add=""):
        self.prefixes, self.add = tuple(prefixes), add

    def decode(self, item, spec):
        n = item.name
        changed = True
        while changed:
            changed = False
            for p in self.prefixes:
                if n.startswith(p):
                    n, changed = n[len(p):], True
        return item if n == item.name else item.renamed(n)

    def encode(self, item, spec):
        return item.renamed(self.add + item.name) if self.add else item

    def describe(self):
        return f"strip prefixes {list(self.prefixes)}" + (f", write with prefix {self.add!r}" if self.add else "")


class ModuleParamRename(Rule):
    """Rename a parameter by the type of the module that owns it: ``{kind: {our_local: dialect_local}}``."""

    def __init__(self, table):
        self.table = table
        self._cache = None

    def _maps(self, spec):
        if self._cache is None or self._cache[0] is not spec:
            enc = {}
            for name, p in spec.params.items():
                new = self.table.get(p.kind, {}).get(p.local)
                if new:
                    enc[name] = name[: len(name) - len(p.local)] + new
            self._cache = (spec, enc, {v: k for k, v in enc.items()})
        return self._cache[1], self._cache[2]

    def decode(self, item, spec):
        _, dec = self._maps(spec)
        return item.renamed(dec[item.name]) if item.name in dec else item

    def encode(self, item, spec):
        enc, _ = self._maps(spec)
        return item.renamed(enc[item.name]) if item.name in enc else item

    def describe(self):
        return "by module type: " + "; ".join(f"{k}: " + ", ".join(f"{a}->{b}" for a, b in v.items())
                                              for k, v in self.table.items())


class PrefixAlias(Rule):
    """decode ``src.`` -> ``dst.`` only when the target model has no ``src.`` names but has ``dst.`` names
    (e.g. ``blocks.`` -> ``spatial_blocks.``). One-way: encode leaves names alone."""

    invertible = True   # encode is the identity and decode never fires on our names

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self._cache = None

    def _applies(self, spec):
        if self._cache is None or self._cache[0] is not spec:
            keys = spec.params
            ok = not any(k.startswith(self.src) for k in keys) and any(k.startswith(self.dst) for k in keys)
            self._cache = (spec, ok)
        return self._cache[1]

    def decode(self, item, spec):
        if item.name.startswith(self.src) and self._applies(spec):
            return item.renamed(self.dst + item.name[len(self.src):])
        return item

    def describe(self):
        return f"{self.src}* -> {self.dst}* (when the model has no {self.src}*)"


class RegexRename(Rule):
    """decode ``re.sub(pattern, repl)``; encode with ``inverse=(pattern, repl)`` if given (else one-way)."""

    def __init__(self, pattern, repl, inverse=None):
        self.pattern, self.repl, self.inverse = re.compile(pattern), repl, inverse
        self.invertible = inverse is not None

    def decode(self, item, spec):
        n = self.pattern.sub(self.repl, item.name)
        return item if n == item.name else item.renamed(n)

    def encode(self, item, spec):
        if self.inverse:
            n = re.sub(self.inverse[0], self.inverse[1], item.name)
            return item if n == item.name else item.renamed(n)
        return item

    def describe(self):
        return f"s/{self.pattern.pattern}/{self.repl}/"


class Drop(Rule):
    """decode: drop source keys matching any glob (unless the model has that key; ``force=True`` drops them
    even then, e.g. PixArt's ``pos_embed`` for STDiT, whose own table of that name is derived from its config)."""

    invertible = True

    def __init__(self, patterns, reason, force=False):
        self.patterns, self.reason, self.force = tuple(patterns), reason, force

    def decode(self, item, spec):
        if ((self.force or item.name not in spec)
                and any(fnmatch.fnmatchcase(item.name, p) for p in self.patterns)):
            return Dropped(self.reason)
        return item

    def describe(self):
        return f"drop {list(self.patterns)} ({self.reason})"


class DropMisshaped(Rule):
    """decode: drop a model-derived key (a fixed table the model computes from its config, e.g. STDiT's
    ``pos_embed``) whose source shape differs from the model's: the source was built for another input size,
    and the model keeps its own table (upstream v1.0 deletes these keys before loading). Same shape: kept."""

    invertible = True   # encode is the identity and decode never fires on a key of the model's own shape

    def __init__(self, names, reason):
        self.names, self.reason = tuple(names), reason

    def decode(self, item, spec):
        p = spec.params.get(item.name)
        if item.name in self.names and p is not None and tuple(item.shape) != tuple(p.shape):
            return Dropped(f"{self.reason}: file {list(item.shape)} vs model {list(p.shape)}")
        return item

    def describe(self):
        return f"drop {list(self.names)} when shaped for another input size (the model computes its own)"


def _is_patch_conv(p):
    return (p.kind == "conv3d" and p.local == "weight" and p.info.get("kernel_size") is not None
            and tuple(p.info["kernel_size"]) == tuple(p.info.get("stride") or ()))


class PatchLayout(Rule):
    """Conv3d patch embedder weight [C, Cin, kt, kh, kw] <-> Linear [C, Cin*kt*kh*kw] or Conv2d [C, Cin, kh, kw]
    (kt = 1). decode accepts any of the three; encode writes ``form`` ("conv3d", "linear" or "conv2d")."""

    FORMS = ("conv3d", "linear", "conv2d")

    def __init__(self, form="conv3d", accept=("linear", "conv2d")):
        if form not in self.FORMS:
            raise ValueError(f"patch layout form must be one of {self.FORMS}")
        self.form, self.accept = form, tuple(accept)

    @staticmethod
    def _alt_shapes(shape):
        c, cin, kt, kh, kw = shape
        out = {"linear": (c, cin * kt * kh * kw)}
        if kt == 1:
            out["conv2d"] = (c, cin, kh, kw)
        return out

    def decode(self, item, spec):
        p = spec.params.get(item.name)
        if p is None or not _is_patch_conv(p) or item.shape == p.shape or len(p.shape) != 5:
            return item
        for form, shp in self._alt_shapes(p.shape).items():
            if form in self.accept and item.shape == shp:
                return item.with_op(item.name, p.shape, f"{form} {list(shp)} -> conv3d {list(p.shape)}",
                                    _reshape(p.shape))
        return item

    def encode(self, item, spec):
        p = spec.params.get(item.name)
        if self.form == "conv3d" or p is None or not _is_patch_conv(p) or len(p.shape) != 5:
            return item
        shp = self._alt_shapes(p.shape).get(self.form)
        if shp is None:
            return item
        return item.with_op(item.name, shp, f"conv3d -> {self.form} {list(shp)}", _reshape(shp))

    def describe(self):
        return f"Conv3d patch weight: accept {list(self.accept)}, write {self.form}"


class ResizeRows(Rule):
    """decode: a table with the right row width but another row count gets its last row repeated or is cut
    (PixArt ``y_embedding`` [120, 4096] -> model_max_length rows). One-way."""

    invertible = False

    def __init__(self, names):
        self.names = tuple(names)

    def decode(self, item, spec):
        p = spec.params.get(item.name)
        if (p is None or item.name not in self.names or item.shape == p.shape or len(item.shape) != len(p.shape)
                or item.shape[1:] != p.shape[1:] or not item.shape[0]):
            return item
        rows = p.shape[0]

        def fn(a, rows=rows):
            if a.shape[0] >= rows:
                return np.ascontiguousarray(a[:rows])
            return np.concatenate([a, np.repeat(a[-1:], rows - a.shape[0], axis=0)], axis=0)

        how = "cut" if item.shape[0] > rows else "last row repeated"
        return item.with_op(item.name, p.shape, f"rows {item.shape[0]} -> {rows} ({how})", fn)

    def describe(self):
        return f"resize rows of {list(self.names)} to the model's (repeat last row / cut)"


@dataclass
class Dialect:
    name: str
    rules: List[Rule]
    description: str = ""

    def decode(self, name, shape, dtype, spec):
        """One source key -> an Item (our name), a Dropped, or -- when a rule splits a fused tensor
        (``SplitRows``) -- a list of Items, each carried through the remaining rules."""
        return self._decode_from(Item(name, tuple(shape), dtype), 0, spec)

    def _decode_from(self, item, start, spec):
        for i in range(start, len(self.rules)):
            item = self.rules[i].decode(item, spec)
            if isinstance(item, Dropped):
                return item
            if isinstance(item, list):   # one-to-many: the rest of the chain runs on each part
                out = []
                for part in item:
                    d = self._decode_from(part, i + 1, spec)
                    if isinstance(d, list):
                        out.extend(d)
                    elif not isinstance(d, Dropped):
                        out.append(d)
                return out
        return item

    def encode(self, name, shape, dtype, spec):
        item = Item(name, tuple(shape), dtype)
        for r in reversed(self.rules):
            item = r.encode(item, spec)
        return item

    @property
    def invertible(self):
        return all(r.invertible for r in self.rules)


def _rows_op(start, stop, label):
    def fn(a, start=start, stop=stop):
        return np.ascontiguousarray(a[start:stop])

    return label, fn


class SplitRows(Rule):
    """decode (one-to-many): a fused source tensor whose rows stack several of our tensors -- BFL Flux's
    ``img_attn.qkv`` [3C, C] -> ``q_proj``/``k_proj``/``v_proj``, ``linear1`` [3C + M, C] -> ``q_proj``/``k_proj``/
    ``v_mlp`` -- is cut into them, when the target model has the parts and not the fused name. Row counts come
    from the target spec. ``pattern`` matches the source name; ``parts`` are ``re.sub`` replacements giving
    our names, in row order. encode leaves our names alone (re-fusing needs several source tensors:
    ``converters.engine.ConcatRowsView``), and decode never fires on our own names."""

    invertible = True

    def __init__(self, pattern, parts):
        self.pattern, self.parts = re.compile(pattern), tuple(parts)

    def decode(self, item, spec):
        m = self.pattern.fullmatch(item.name)
        if m is None or item.name in spec:
            return item
        names = [m.expand(p) for p in self.parts]
        specs = [spec.params.get(n) for n in names]
        if any(p is None for p in specs) or any(tuple(p.shape[1:]) != tuple(item.shape[1:]) for p in specs):
            return item
        if sum(p.shape[0] for p in specs) != item.shape[0]:
            return item   # left as is: the plan reports it (unexpected / missing)
        out, start = [], 0
        for n, p in zip(names, specs):
            stop = start + p.shape[0]
            label, fn = _rows_op(start, stop, f"rows {start}:{stop} of {item.name} {list(item.shape)}")
            out.append(Item(n, tuple(p.shape), item.dtype, item.ops + [(label, fn)]))
            start = stop
        return out

    def describe(self):
        return f"split {self.pattern.pattern} into {list(self.parts)} (by the model's row counts)"


def rope_pair_index(head_dim, to):
    """The head-dim permutation between the two RoPE pairings (upstream ``math.rearrange_tensor`` and its
    reverse): ``to="liger"``: new[d] = old[2d], new[D/2 + d] = old[2d + 1] (Flux's adjacent pairs (2d, 2d+1)
    become rotate-half pairs (d, d + D/2)); ``to="adjacent"``: the inverse."""
    D = head_dim
    if D % 2:
        raise ValueError(f"head_dim {D} must be even")
    liger = np.concatenate([np.arange(0, D, 2), np.arange(1, D, 2)])
    return liger if to == "liger" else np.argsort(liger)


class RopePairing(Rule):
    """decode: permute the head dims of q/k projections (weight rows, bias) and of the QK-norm scales from one
    RoPE pairing to the other, so a checkpoint trained with Flux's adjacent pairs gives the same attention in a
    model applying rotate-half (liger) RoPE (``to="liger"``), or the reverse (``to="adjacent"``). q.k and the
    RMSNorm are invariant under one permutation applied to both q and k; v is untouched. Fused tensors
    (``qkv``: q and k blocks; ``linear1``: its first 2C rows) are permuted in place. encode applies the inverse,
    so decode(encode(x)) == x bit for bit (an index permutation)."""

    invertible = True
    ROW_PATTERNS = (r".*\.(q_proj|k_proj)\.(weight|bias)", )
    FUSED = ((r".*_attn\.qkv\.(weight|bias)", 2), (r".*\.linear1\.(weight|bias)", 2))
    SCALE_PATTERN = r".*\.norm\.(query_norm|key_norm)\.scale"

    def __init__(self, to):
        if to not in ("liger", "adjacent"):
            raise ValueError("RopePairing(to=...) must be 'liger' or 'adjacent'")
        self.to = to

    @staticmethod
    def _head_dim(spec):
        for n, p in spec.params.items():
            if n.endswith("query_norm.scale"):
                return int(p.shape[0])
        return None

    def _op(self, item, spec, to):
        D = self._head_dim(spec)
        name = item.name
        if D is None or name not in spec:
            return item
        if re.fullmatch(self.SCALE_PATTERN, name):
            rows = None                     # a [D] scale: permute it
        elif any(re.fullmatch(p, name) for p in self.ROW_PATTERNS):
            rows = item.shape[0]            # every row: [H*D] -> permute D within each head
        else:
            rows = None
            for pat, k in self.FUSED:
                if re.fullmatch(pat, name):
                    C = self._hidden(spec, name)
                    if C is None:
                        return item
                    rows = k * C            # the q and k rows; v (and the MLP rows) untouched
                    break
            if rows is None:
                return item
        idx = rope_pair_index(D, to)

        def fn(a, idx=idx, rows=rows, D=D):
            if rows is None:
                return np.ascontiguousarray(a[idx])
            head = a[:rows].reshape((rows // D, D) + a.shape[1:])[:, idx].reshape((rows,) + a.shape[1:])
            return np.ascontiguousarray(np.concatenate([head, a[rows:]], axis=0))

        return item.with_op(name, item.shape, f"RoPE head dims -> {to} pairing", fn)

    @staticmethod
    def _hidden(spec, name):
        base = name.rsplit(".", 2)[0]            # ...img_attn (of .qkv.weight) / single_blocks.N (of .linear1.*)
        for cand in (base + ".proj.weight", base + ".linear2.weight"):
            if cand in spec.params:
                return int(spec.params[cand].shape[0])
        return None

    def decode(self, item, spec):
        return self._op(item, spec, self.to)

    def encode(self, item, spec):
        return self._op(item, spec, "adjacent" if self.to == "liger" else "liger")

    def describe(self):
        return f"q/k head dims and QK-norm scales permuted to the {self.to} RoPE pairing"


# --- the dialects -------------------------------------------------------------------------------------------
MINDONE_PARAM_NAMES = {
    "layernorm": {"weight": "gamma", "bias": "beta"},
    "groupnorm": {"weight": "gamma", "bias": "beta"},
    "batchnorm": {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                  "running_var": "moving_variance"},
    "embedding": {"weight": "embedding_table"},
}


def family_rules(hooks) -> List[Rule]:
    """Source rules a family plugs in through ``Family.extra["converter"]``."""
    rules = list(hooks.get("source_rules") or [])
    for r in rules:
        if not isinstance(r, Rule):
            raise TypeError(f"Family.extra['converter']['source_rules'] must hold converters.rules.Rule objects, "
                            f"got {r!r}")
    if hooks.get("ignore"):
        rules.append(Drop(hooks["ignore"], "ignored by the family's converter rules"))
    if hooks.get("derived"):
        rules.append(DropMisshaped(hooks["derived"], "derived table of another input size; the model computes "
                                                     "its own from the config"))
    return rules


def ours(hooks=None) -> Dialect:
    return Dialect("ours", [StripPrefix(("module.",))] + family_rules(hooks or {}),
                   "our names = the PyTorch reference's state-dict keys (MindSpore twin uses the same)")


def mindone(hooks=None, patch_form="conv3d", prefix="") -> Dialect:
    return Dialect("mindone", [StripPrefix(("network.", "_backbone.", "module."), add=prefix)]
                   + family_rules(hooks or {})
                   + [PrefixAlias("blocks.", "spatial_blocks."), ModuleParamRename(MINDONE_PARAM_NAMES),
                      PatchLayout(form=patch_form)],
                   "mindone (mindspore-lab) names: gamma/beta for norms, embedding_table for embeddings, "
                   "optional network./_backbone. prefixes, patch conv as Linear/Conv2d")


def pixart(hooks=None) -> Dialect:
    return Dialect("pixart", [StripPrefix(("network.", "_backbone.", "module."))] + family_rules(hooks or {})
                   + [PrefixAlias("blocks.", "spatial_blocks."), PatchLayout(form="conv3d", accept=("conv2d",)),
                      Drop(("pos_embed", "pos_embed_temporal"), "PixArt positional table; recomputed by the model",
                           force=True),
                      ResizeRows(("y_embedder.y_embedding",))],
                   "PixArt-alpha/Sigma 2D checkpoint used to initialise STDiT3 (blocks. -> spatial_blocks.) or "
                   "STDiT (blocks. kept; temporal attentions fresh)")


DIALECTS = {"ours": ours, "mindone": mindone, "pixart": pixart}
