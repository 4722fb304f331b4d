"""The shape/dtype oracle: what a model's checkpoint must hold, learnt by walking the model.

A ``ModelSpec`` lists every state key (parameters and persistent buffers) with shape, dtype and the *type of
the module that owns it* (``layernorm``, ``groupnorm``, ``embedding``, ``conv3d`` + kernel/stride, ...). The
converter's dialect rules come from those module types, not from substrings of names. For a target model the
spec comes from the PyTorch twin built on the ``meta`` device (no memory, even for full size); MindSpore
names and shapes are identical by design.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Optional

from converters import dtypes
from converters.errors import ConversionError


@dataclass
class ParamSpec:
    name: str
    shape: tuple
    dtype: str
    kind: str            # owning module type: layernorm, groupnorm, batchnorm, embedding, conv3d, conv2d, linear, ...
    local: str           # attribute name inside the module: weight, bias, running_mean, ...
    info: dict = field(default_factory=dict)   # kernel_size/stride for convs


@dataclass
class ModelSpec:
    params: Dict[str, ParamSpec]
    origin: str = "the model"           # what the spec came from, for messages ("config.json of X", "--model Y")
    family: object = None
    kwargs: Optional[dict] = None
    preset: Optional[str] = None

    def __contains__(self, k):
        return k in self.params

    def __getitem__(self, k):
        return self.params[k]

    def keys(self):
        return list(self.params)


def _torch_kind(m):
    from torch import nn

    if isinstance(m, nn.LayerNorm):
        return "layernorm", {}
    if isinstance(m, nn.GroupNorm):
        return "groupnorm", {}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "batchnorm", {}
    if isinstance(m, nn.Embedding):
        return "embedding", {}
    if isinstance(m, nn.Conv3d):
        return "conv3d", {"kernel_size": tuple(m.kernel_size), "stride": tuple(m.stride)}
    if isinstance(m, nn.Conv2d):
        return "conv2d", {"kernel_size": tuple(m.kernel_size), "stride": tuple(m.stride)}
    if isinstance(m, nn.Linear):
        return "linear", {}
    return type(m).__name__.lower(), {}


_MS_KINDS = {"LayerNorm": "layernorm", "GroupNorm": "groupnorm", "BatchNorm1d": "batchnorm",
             "BatchNorm2d": "batchnorm", "Embedding": "embedding", "Conv3d": "conv3d", "Conv2d": "conv2d",
             "Linear": "linear", "Dense": "linear"}


def spec_from_torch(model, origin="the model") -> ModelSpec:
    sd = model.state_dict(keep_vars=True)
    params = {}
    for name, t in sd.items():
        prefix, _, local = name.rpartition(".")
        mod = model.get_submodule(prefix) if prefix else model
        kind, info = _torch_kind(mod)
        params[name] = ParamSpec(name, tuple(t.shape), dtypes.from_torch_dtype(t.dtype), kind, local, info)
    return ModelSpec(params, origin)


def ms_named_params(net):
    """[(state name, Parameter, owning cell)] by attribute path (= torch state_dict names by the twin contract)."""
    out, seen = [], set()
    for cname, cell in net.cells_and_names():
        for pname, p in cell._params.items():
            if p is None:
                continue
            full = f"{cname}.{pname}" if cname else pname
            if full not in seen:
                seen.add(full)
                out.append((full, p, cell))
    return out


def spec_from_ms(net, origin="the model") -> ModelSpec:
    params = {}
    for name, p, cell in ms_named_params(net):
        kind = _MS_KINDS.get(type(cell).__name__, type(cell).__name__.lower())
        info = {}
        if kind in ("conv3d", "conv2d"):
            ks, st = getattr(cell, "kernel_size", None), getattr(cell, "stride", None)
            if ks is not None:
                info = {"kernel_size": tuple(ks), "stride": tuple(st) if st is not None else None}
        dt = dtypes.from_numpy_dtype(_ms_np_dtype(p.dtype))
        params[name] = ParamSpec(name, tuple(p.shape), dt, kind, name.rpartition(".")[2], info)
    return ModelSpec(params, origin)


def _ms_np_dtype(msdt):
    import mindspore as ms

    if msdt == ms.bfloat16:
        return dtypes.bf16_type()
    return ms.dtype_to_nptype(msdt)


def spec_from_model(model, backend, origin="the model") -> ModelSpec:
    if backend == "pt":
        return spec_from_torch(model, origin)
    if backend == "ms":
        return spec_from_ms(model, origin)
    raise ConversionError(f"unknown backend {backend!r}; use 'pt' or 'ms'")


def build_meta(fam, kwargs):
    import torch

    cls = fam.model_class("pt")
    try:
        with torch.device("meta"):
            return cls(**kwargs)
    except Exception as e:
        raise ConversionError(f"cannot build {cls.__name__} from {kwargs}: {type(e).__name__}: {e}") from None


# --- the oracle cache ---------------------------------------------------------------------------------------
# Building the meta model costs torch's import plus a first meta-device run (~5 s for STDiT3-XL/2, mostly
# one-time torch warm-up). The spec is a pure function of the model code and kwargs, so it is cached as JSON,
# keyed by the family, the kwargs, the torch version and a hash of every .py file of the PyTorch reference and
# the family modules. OPENSORA_DUAL_SPEC_CACHE=0 disables it; OPENSORA_DUAL_CACHE sets the folder.
_CODE_HASH = None


def _cache_dir():
    if os.environ.get("OPENSORA_DUAL_SPEC_CACHE", "1") == "0":
        return None
    base = os.environ.get("OPENSORA_DUAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "opensora_dual")
    return os.path.join(base, "specs")


def _code_hash():
    global _CODE_HASH
    if _CODE_HASH is None:
        import importlib.metadata
        import importlib.util

        h = hashlib.sha256()
        try:
            h.update(importlib.metadata.version("torch").encode())
        except importlib.metadata.PackageNotFoundError:
            pass
        for pkg in ("pt_reference", "opensora_dual", "converters"):
            spec = importlib.util.find_spec(pkg)
            for root in (spec.submodule_search_locations or []) if spec else []:
                for dirpath, dirnames, files in sorted(os.walk(root)):
                    dirnames.sort()
                    for f in sorted(files):
                        if f.endswith(".py"):
                            p = os.path.join(dirpath, f)
                            h.update(os.path.relpath(p, root).encode())
                            with open(p, "rb") as fh:
                                h.update(fh.read())
        _CODE_HASH = h.hexdigest()
    return _CODE_HASH


def _cache_path(fam, kwargs):
    d = _cache_dir()
    if d is None:
        return None
    key = json.dumps([fam.name, fam.class_path, sorted(kwargs.items()), _code_hash()], default=repr)
    return os.path.join(d, hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _load_cached(path, origin):
    try:
        with open(path) as f:
            rows = json.load(f)
        params = {r[0]: ParamSpec(r[0], tuple(r[1]), r[2], r[3], r[4],
                                  {k: (tuple(v) if isinstance(v, list) else v) for k, v in r[5].items()})
                  for r in rows}
        return ModelSpec(params, origin)
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        return None


def _store_cached(path, spec):
    rows = [[p.name, list(p.shape), p.dtype, p.kind, p.local,
             {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.info.items()}] for p in spec.params.values()]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f)
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only cache only costs time


def spec_for(fam, kwargs, origin, preset=None) -> ModelSpec:
    """The spec of ``fam``'s model built with ``kwargs`` (meta device), from the cache when possible."""
    path = _cache_path(fam, kwargs)
    spec = _load_cached(path, origin) if path and os.path.exists(path) else None
    if spec is None:
        spec = spec_from_torch(build_meta(fam, kwargs), origin)
        if path:
            _store_cached(path, spec)
    spec.family, spec.kwargs, spec.preset = fam, dict(kwargs), preset
    return spec
