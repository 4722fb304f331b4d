"""The converters API (docs/architecture.md "converters API") and the conversions behind the CLI."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from converters import dtypes, rules
from converters.atomic import atomic_dir, atomic_file
from converters.checkpoint import Checkpoint, read_checkpoint
from converters.engine import choose_plan, problem_message
from converters.errors import ConversionError
from converters.families import (converter_hooks, family_from_config, kwargs_from_config, resolve_preset)
from converters.spec import ModelSpec, ms_named_params, spec_for, spec_from_model, spec_from_torch

PASSTHROUGH = True   # copy unchanged tensors file-to-file in the kernel (tests switch it off to compare)
CONFIG_META_KEY = "opensora_dual.config"   # our safetensors carry the release config.json in their metadata

# target name -> (container, dialect, safetensors "format" metadata)
TARGETS = {
    "ms": ("ckpt", "ours", None), "ms-ckpt": ("ckpt", "ours", None),
    "ms-safetensors": ("safetensors", "ours", "ms"),
    "pt": ("safetensors", "ours", "pt"), "pt-safetensors": ("safetensors", "ours", "pt"),
    "mindone": ("ckpt", "mindone", None), "mindone-ckpt": ("ckpt", "mindone", None),
    "release": ("folder", "ours", "pt"),
    "pth": ("pth", "ours", None),   # upstream v1.0's layout: a flat state dict saved by torch.save
}


def infer_target(dst):
    low = os.fspath(dst).lower()
    if low.endswith(".ckpt"):
        return "ms"
    if low.endswith(".safetensors"):
        return "pt"
    if low.endswith((".pth", ".pt")):
        return "pth"
    if os.path.splitext(low)[1] == "" or os.path.isdir(dst):
        return "release"
    raise ConversionError(f"{dst}: cannot tell the target format from the name; pass --to "
                          f"({', '.join(sorted(TARGETS))})")


# ---------------------------------------------------------------------------------------------- resolution
def _own_config(ckpt: Checkpoint):
    raw = ckpt.metadata.get(CONFIG_META_KEY) if ckpt.metadata else None
    if raw:
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return None


def resolve_spec(ckpt: Optional[Checkpoint], model=None, overrides=None, need=True) -> Optional[ModelSpec]:
    """The target spec: ``model`` (preset name, ModelSpec or torch module) > the source's config.json >
    the config we embed in our own safetensors. ``overrides`` update the constructor kwargs."""
    overrides = dict(overrides or {})
    if isinstance(model, ModelSpec):
        return model
    if model is not None and not isinstance(model, str):
        return spec_from_torch(model, origin=f"the given {type(model).__name__}")
    if isinstance(model, str):
        fam, kwargs = resolve_preset(model)
        kwargs.update(overrides)
        return spec_for(fam, kwargs, origin=f"model {model}" + (f" with {overrides}" if overrides else ""),
                        preset=model)
    cfg, where = None, None
    if ckpt is not None and ckpt.config is not None:
        cfg, where = ckpt.config, ckpt.config_path or "config.json"
    elif ckpt is not None and _own_config(ckpt) is not None:
        cfg, where = _own_config(ckpt), f"the config stored in {ckpt.path}"
    if cfg is not None:
        fam = family_from_config(cfg)
        kwargs = kwargs_from_config(fam, cfg, where)
        kwargs.update(overrides)
        return spec_for(fam, kwargs, origin=f"{where} ({fam.name}: " + _kw_summary(kwargs) + ")")
    if need:
        from opensora_dual import registry

        raise ConversionError(f"{ckpt.path if ckpt else 'the source'} has no config.json, so the model is unknown: "
                              f"pass --model NAME (registered: {', '.join(registry.preset_names())})")
    return None


def _kw_summary(kwargs):
    keys = [k for k in ("hidden_size", "depth", "num_heads", "in_channels", "caption_channels",
                        "model_max_length") if k in kwargs]
    return ", ".join(f"{k}={kwargs[k]}" for k in keys) or "constructor kwargs"


def _mismatch(src, spec, problems, ckpt, model):
    hint = ("hint: the weights and config.json disagree; fix config.json or pass --model NAME"
            if (model is None and ckpt.config is not None) else "")
    return ConversionError(problem_message(src, spec.origin, problems, hint))


# ---------------------------------------------------------------------------------------------- reports
@dataclass
class Report:
    source: str
    source_format: str
    source_dialect: str
    target: str
    target_format: str
    model: str
    tensors: int = 0
    bytes: int = 0
    dtype: Optional[str] = None
    seconds: float = 0.0
    initialised_fresh: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    transformed: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    def write_json(self, path):
        with atomic_file(path) as tmp:
            with open(tmp, "w") as f:
                json.dump(self.to_dict(), f, indent=2)

    def __str__(self):
        mb = self.bytes / 2**20
        lines = [f"converted {self.source} ({self.source_format}, {self.source_dialect} names)",
                 f"       -> {self.target} ({self.target_format})",
                 f"  model: {self.model}",
                 f"  {self.tensors} tensors, {mb:.1f} MiB" + (f", cast to {self.dtype}" if self.dtype else "")
                 + f", {self.seconds:.1f} s"]
        for label, items in (("transformed", self.transformed), ("dropped", self.dropped),
                             ("ignored (not in the model)", self.ignored),
                             ("initialised fresh (not in the source; left out of the output)",
                              self.initialised_fresh)):
            if items:
                lines.append(f"  {len(items)} {label}:")
                lines += [f"    {x}" for x in items[:20]]
                if len(items) > 20:
                    lines.append(f"    ... and {len(items) - 20} more")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class LoadReport:
    loaded: int
    dialect: str
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    misshaped: List[str] = field(default_factory=list)
    wrong_dtype: List[str] = field(default_factory=list)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.misshaped or self.wrong_dtype)


# ---------------------------------------------------------------------------------------------- writing
def _write_stream(ckpt, plan, spec, dst, container, target_dialect, st_format, cast_to, extra_meta, progress):
    """Stream tensors source -> dst (a plain file path, already temporary). Returns (tensors, bytes)."""
    from tqdm import tqdm

    jobs = []   # (src, our name, item, out name, out shape, out dtype, encode item)
    for name, (src, it) in plan.mapping.items():
        dt = it.dtype
        out_dt = cast_to if (cast_to and dtypes.kind(dt) == "float") else dt
        enc = target_dialect.encode(name, spec.params[name].shape, out_dt, spec)
        jobs.append((src, name, it, enc.name, enc.shape, out_dt, enc))
    # read in source order (sharded sources: shard by shard)
    order = {k: i for i, k in enumerate(ckpt.keys())}
    jobs.sort(key=lambda j: order[j[0]])
    total = sum(int(np.prod(j[4], dtype=np.int64)) * dtypes.itemsize(j[5]) for j in jobs)
    encoded = [f"{j[1]} -> {j[3]}" + (": " + "; ".join(lbl for lbl, _ in j[6].ops) if j[6].ops else "")
               for j in jobs if j[3] != j[1] or j[6].ops]
    if container == "safetensors":
        from converters.st_io import SafetensorsWriter

        meta = {"format": st_format or "pt"}
        meta.update(extra_meta or {})
        w = SafetensorsWriter(dst, [(j[3], j[5], j[4]) for j in jobs], meta)
        put = lambda n, a, d: w.write(n, a)   # noqa: E731
    elif container == "pth":
        from converters.pth_io import PthWriter

        w = PthWriter(dst)
        put = w.write
    else:
        from converters.ckpt_io import CkptWriter

        w = CkptWriter(dst)
        put = w.write
    try:
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="convert",
                  disable=not progress, leave=False) as bar:
            for src, name, it, out_name, out_shape, out_dt, enc in jobs:
                if PASSTHROUGH and it.same_bytes and enc.same_bytes and it.dtype == out_dt:
                    loc = ckpt.raw_ranges(src)
                    if loc is not None:   # bytes unchanged: the kernel copies them, Python never holds them
                        w.write_ranges(out_name, out_shape, out_dt, loc[0], loc[1])
                        bar.update(sum(e - b for b, e in loc[1]))
                        continue
                raw, dt = ckpt.read_raw(src)
                raw = it.apply(raw)
                raw, dt = dtypes.cast(raw, dt, out_dt)
                raw = enc.apply(raw)
                if tuple(raw.shape) != tuple(out_shape):
                    raise ConversionError(f"internal: {src} came out as {raw.shape}, expected {out_shape}")
                put(out_name, raw, dt)
                bar.update(raw.nbytes)
                del raw
    except BaseException:
        w.abort()
        raise
    w.close()
    return len(jobs), total, encoded


def convert(src, dst, to=None, model=None, dtype=None, init_from=None, progress=True, *, overrides=None,
            src_dialect=None, patch_form="conv3d", report=None) -> Report:
    """Convert ``src`` (any readable source) into ``dst``.

    to: ``ms``/``ms-ckpt`` (MindSpore .ckpt, our names), ``ms-safetensors``, ``pt``/``pt-safetensors``,
        ``mindone``/``mindone-ckpt`` (mindone dialect .ckpt), ``release`` (config.json + model.safetensors);
        default from dst's extension. model: preset name (else the source's config.json). dtype: fp32/fp16/bf16.
    init_from: ``"pixart"`` maps a PixArt-alpha/Sigma checkpoint onto STDiT3; keys the source cannot provide
        are reported as initialised fresh (left out of the output) instead of failing.
    """
    t0 = time.time()
    to = to or infer_target(dst)
    if to not in TARGETS:
        raise ConversionError(f"unknown target {to!r}; use one of {', '.join(sorted(TARGETS))}")
    container, tdialect_name, st_format = TARGETS[to]
    cast_to = dtypes.cast_choice(dtype)
    if init_from not in (None, "pixart"):
        raise ConversionError(f"unknown --init-from {init_from!r}; supported: pixart")
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError("source and destination are the same path")
    if container == "folder" and os.path.isfile(dst):
        raise ConversionError(f"{dst} is a file; a release folder needs a folder path")
    if container != "folder" and os.path.isdir(dst):
        raise ConversionError(f"{dst} is a folder; pass a file name (or --to release)")
    ckpt = read_checkpoint(src)
    try:
        spec = resolve_spec(ckpt, model, overrides)
        hooks = converter_hooks(spec.family)
        plan = choose_plan(((k, *ckpt.meta(k)) for k in ckpt.keys()), spec, hooks,
                           "pixart" if init_from == "pixart" else src_dialect)
        fresh = bool(init_from)
        problems = plan.problems(allow_missing=fresh, allow_unexpected=fresh)
        if problems:
            raise _mismatch(src, spec, problems, ckpt, model)
        if container == "folder" and (spec.family is None or spec.family.config_to_json is None):
            raise ConversionError("writing a release folder needs a registered model family (pass --model NAME)")
        if tdialect_name == "mindone":
            tdialect = rules.mindone(hooks, patch_form=patch_form)
        else:
            tdialect = rules.ours()
        cfg_json = spec.family.config_to_json(spec.kwargs) if (spec.family and spec.family.config_to_json
                                                              and spec.kwargs is not None) else None
        extra_meta = {CONFIG_META_KEY: json.dumps(cfg_json)} if cfg_json else {}
        if container == "folder":
            with atomic_dir(dst) as tmpdir:
                with open(os.path.join(tmpdir, "config.json"), "w") as f:
                    json.dump(cfg_json, f, indent=2)
                n, nbytes, encoded = _write_stream(ckpt, plan, spec, os.path.join(tmpdir, "model.safetensors"),
                                          "safetensors", tdialect, st_format, cast_to, extra_meta, progress)
        else:
            with atomic_file(dst) as tmp:
                n, nbytes, encoded = _write_stream(ckpt, plan, spec, tmp, container, tdialect, st_format, cast_to,
                                          extra_meta, progress)
    finally:
        ckpt.close()
    rep = Report(source=src, source_format=ckpt.format, source_dialect=plan.dialect.name, target=dst,
                 target_format=to, model=spec.origin, tensors=n, bytes=nbytes, dtype=cast_to,
                 seconds=round(time.time() - t0, 3))
    rep.transformed = [f"{s} -> {o}: {'; '.join(ops)}" if ops else f"{s} -> {o}" for s, o, ops in plan.reshaped()]
    rep.transformed += [f"{s} -> {k}" for k, (s, it) in plan.mapping.items() if s != k and not it.ops]
    rep.transformed += [f"written as {e}" for e in encoded]
    rep.dropped = [f"{s} ({r})" for s, r in plan.dropped]
    if init_from:
        rep.initialised_fresh = list(plan.missing)
        rep.ignored = list(plan.unexpected)
    rep.notes = list(ckpt.notes)
    if plan.derived:
        rep.notes.append(f"not in the source, computed by the model from its config (left out of the output): "
                         f"{', '.join(plan.derived)}")
    if report:
        rep.write_json(report)
    return rep


# ---------------------------------------------------------------------------------------------- verify / inspect
def inspect(path, model=None, limit=20) -> Dict[str, Any]:
    ckpt = read_checkpoint(path)
    try:
        hist: Dict[str, int] = {}
        for k in ckpt.keys():
            dt = ckpt.meta(k)[1]
            hist[dt] = hist.get(dt, 0) + 1
        info = {"path": os.fspath(path), "format": ckpt.format, "tensors": len(ckpt),
                "bytes": ckpt.total_bytes(), "dtypes": hist,
                "config": ckpt.config or _own_config(ckpt),
                "keys": [(k, list(ckpt.meta(k)[0]), ckpt.meta(k)[1]) for k in ckpt.keys()[:limit]],
                "notes": ckpt.notes}
        spec = None
        try:
            spec = resolve_spec(ckpt, model, need=False)
        except ConversionError as e:
            info["model_error"] = str(e)
        if spec is not None:
            plan = choose_plan(((k, *ckpt.meta(k)) for k in ckpt.keys()), spec, converter_hooks(spec.family))
            info["model"] = spec.origin
            info["dialect"] = plan.dialect.name
            info["problems"] = plan.problems()
        return info
    finally:
        ckpt.close()


def verify(path, model=None, against=None, load=None, overrides=None) -> Dict[str, Any]:
    """Check a file against the model's spec (strict), optionally compare tensors bit-exactly with another
    checkpoint (both decoded to our names) and strict-load it into a built model (``load="pt"|"ms"``)."""
    ckpt = read_checkpoint(path)
    result: Dict[str, Any] = {"path": os.fspath(path), "format": ckpt.format}
    try:
        spec = resolve_spec(ckpt, model, overrides)
        hooks = converter_hooks(spec.family)
        plan = choose_plan(((k, *ckpt.meta(k)) for k in ckpt.keys()), spec, hooks)
        problems = plan.problems()
        if problems:
            raise _mismatch(os.fspath(path), spec, problems, ckpt, model)
        result.update(model=spec.origin, dialect=plan.dialect.name, tensors=len(plan.mapping))
        if against is not None:
            other = read_checkpoint(against)
            try:
                oplan = choose_plan(((k, *other.meta(k)) for k in other.keys()), spec, hooks)
                op = oplan.problems()
                if op:
                    raise ConversionError(problem_message(os.fspath(against), spec.origin, op))
                diff = []
                for name, (s, it) in plan.mapping.items():
                    a_raw, a_dt = ckpt.read_raw(s)
                    a_raw = it.apply(a_raw)
                    os_, oit = oplan.mapping[name]
                    b_raw, b_dt = other.read_raw(os_)
                    b_raw = oit.apply(b_raw)
                    if a_dt != b_dt or a_raw.shape != b_raw.shape or a_raw.tobytes() != b_raw.tobytes():
                        diff.append(f"{name} ({a_dt} vs {b_dt})")
                result["identical"] = not diff
                result["differing"] = diff
            finally:
                other.close()
    finally:
        ckpt.close()
    if load:
        from_pretrained(None, path, load, **({"model": model} if isinstance(model, str) else {}),
                        **(overrides or {}))
        result["loaded_into"] = load
    return result


# ---------------------------------------------------------------------------------------------- model I/O
def model_tensors(model, backend) -> Dict[str, np.ndarray]:
    """A built model's parameters + persistent buffers as numpy arrays (copies), by our names."""
    if backend == "pt":
        from converters.pth_io import tensor_to_raw

        out = {}
        for k, v in model.state_dict().items():
            raw, dt = tensor_to_raw(v)
            out[k] = dtypes.to_numpy(np.array(raw, copy=True), dt)
        return out
    if backend == "ms":
        return {name: p.asnumpy().copy() for name, p, _ in ms_named_params(model)}
    raise ConversionError(f"unknown backend {backend!r}; use 'pt' or 'ms'")


class _Mapping:
    """Adapter giving a dict of arrays the Checkpoint reading interface."""

    def __init__(self, tensors):
        self._t = tensors

    def keys(self):
        return list(self._t)

    def meta(self, k):
        raw, dt = dtypes.to_raw(np.asarray(self._t[k]))
        return tuple(raw.shape), dt

    def read_raw(self, k):
        return dtypes.to_raw(np.asarray(self._t[k]))


def _raw_to_target(raw, dt, target_dt):
    raw, dt = dtypes.cast(raw, dt, target_dt)
    return dtypes.to_numpy(raw, dt)


def load_state_into(model, tensors, backend, strict=True, *, family=None, dialect=None) -> LoadReport:
    """Copy ``tensors`` (name -> ndarray, or a Checkpoint in any dialect) into a built model.
    strict: raise ConversionError listing missing/unexpected/mis-shaped/wrong-dtype keys (nothing is copied)."""
    src = tensors if isinstance(tensors, (Checkpoint, _TorchState)) else _Mapping(tensors)
    spec = spec_from_model(model, backend, origin=f"the {type(model).__name__} model")
    plan = choose_plan(((k, *src.meta(k)) for k in src.keys()), spec, converter_hooks(family), dialect)
    if family is None and plan.missing:   # keys the model's family derives itself (e.g. fixed position tables)
        fam = _family_of_model(model, backend)
        if fam is not None and converter_hooks(fam).get("derived"):
            plan = choose_plan(((k, *src.meta(k)) for k in src.keys()), spec, converter_hooks(fam), dialect)
    rep = LoadReport(loaded=0, dialect=plan.dialect.name, missing=list(plan.missing), unexpected=list(plan.unexpected),
                     misshaped=[f"{k}: {list(a)} vs {list(b)}" for k, a, b in plan.misshaped],
                     wrong_dtype=[f"{k}: {a} vs {b}" for k, a, b in plan.wrong_dtype])
    problems = plan.problems()
    where = getattr(src, "path", "the given tensors")
    if strict and problems:
        raise ConversionError(problem_message(where, spec.origin, problems))
    bad = {k for k, _, _ in plan.misshaped} | {k for k, _, _ in plan.wrong_dtype}
    if backend == "pt":
        import torch

        sd = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, (s, it) in plan.mapping.items():
                if name in bad:
                    continue
                raw, dt = src.read_raw(s)
                raw = it.apply(raw)
                target = sd[name]
                tdt = dtypes.from_torch_dtype(target.dtype)
                raw, dt = dtypes.cast(raw, dt, tdt)
                t = torch.from_numpy(np.array(raw, copy=True))
                if dt == "BF16":
                    t = t.view(torch.bfloat16)
                target.copy_(t)
                rep.loaded += 1
    elif backend == "ms":
        import mindspore as ms

        params = {name: p for name, p, _ in ms_named_params(model)}
        for name, (s, it) in plan.mapping.items():
            if name in bad:
                continue
            raw, dt = src.read_raw(s)
            raw = it.apply(raw)
            p = params[name]
            tdt = spec.params[name].dtype
            arr = _raw_to_target(raw, dt, tdt)
            p.set_data(ms.Tensor(np.array(arr, copy=True)))
            rep.loaded += 1
    else:
        raise ConversionError(f"unknown backend {backend!r}; use 'pt' or 'ms'")
    return rep


def _family_of_model(model, backend):
    from opensora_dual import registry

    for fam in registry.load_families().values():
        try:
            if fam.model_class(backend) is type(model):
                return fam
        except Exception:
            continue
    return None


class _TorchState:
    """A PyTorch model's state (parameters + persistent buffers) with the Checkpoint reading interface; each
    tensor is read as a view when asked for, so copying into the port holds one tensor at a time, not a
    second copy of the whole model (full-size parity cases: 3 GB less for STDiT-XL/2)."""

    def __init__(self, model):
        self._sd = model.state_dict()

    def keys(self):
        return list(self._sd)

    def meta(self, k):
        t = self._sd[k]
        return tuple(t.shape), dtypes.from_torch_dtype(t.dtype)

    def read_raw(self, k):
        from converters.pth_io import tensor_to_raw

        return tensor_to_raw(self._sd[k])


def pt_to_ms(pt_model, ms_model, strict=True) -> "LoadReport":
    """Copy a PyTorch twin's parameters and persistent buffers into its MindSpore port: the one weight path
    that parity tests, benchmarks and scripts use (same rules and strict checks as a file conversion, the
    same values as ``model_tensors``; streamed tensor by tensor)."""
    return load_state_into(ms_model, _TorchState(pt_model), "ms", strict=strict)


def save_release_folder(model, backend, folder, family_kwargs, preset=None):
    """Write the upstream layout: ``config.json`` (the family's release config) + ``model.safetensors`` (fp32
    as stored, our names), atomically. ``preset`` names the family when the model class is ambiguous."""
    from converters.st_io import SafetensorsWriter

    fam = resolve_preset(preset)[0] if preset else _family_of_model(model, backend)
    if fam is None or fam.config_to_json is None:
        raise ConversionError(f"no registered family writes a config.json for {type(model).__name__}; "
                              f"pass preset=")
    cfg = fam.config_to_json(dict(family_kwargs))
    spec = spec_from_model(model, backend)
    if backend == "pt":
        from converters.pth_io import tensor_to_raw

        sd = model.state_dict()
        get = lambda k: tensor_to_raw(sd[k])   # noqa: E731
    else:
        params = {n: p for n, p, _ in ms_named_params(model)}
        get = lambda k: dtypes.to_raw(params[k].asnumpy())   # noqa: E731
    with atomic_dir(folder) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        w = SafetensorsWriter(os.path.join(tmp, "model.safetensors"),
                              [(k, p.dtype, p.shape) for k, p in spec.params.items()],
                              {"format": "pt", CONFIG_META_KEY: json.dumps(cfg)})
        try:
            for k in spec.params:
                raw, _ = get(k)
                w.write(k, raw)
        except BaseException:
            w.abort()
            raise
        w.close()
    return folder


def from_pretrained(model_cls, path, backend, **overrides):
    """Build and strict-load a model from a release folder or any file the converter reads/writes.

    A folder's config.json (family by ``model_type``) gives the constructor kwargs, ``overrides`` update them.
    A bare weights file needs ``model="<preset>"`` or constructor kwargs in ``overrides`` (our own
    safetensors carry their config). ``model_cls`` may be None (the family's class for ``backend``)."""
    preset = overrides.pop("model", None)
    ckpt = read_checkpoint(path)
    try:
        fam, kwargs = None, None
        if preset:
            fam, kwargs = resolve_preset(preset)
            kwargs.update(overrides)
        else:
            cfg = ckpt.config if ckpt.config is not None else _own_config(ckpt)
            if cfg is not None:
                fam = family_from_config(cfg)
                kwargs = kwargs_from_config(fam, cfg, ckpt.config_path or f"the config stored in {path}")
                kwargs.update(overrides)
            elif overrides and model_cls is not None:
                kwargs = dict(overrides)
                fam = _family_of_model_cls(model_cls, backend)
            else:
                from opensora_dual import registry

                raise ConversionError(f"{path} has no config.json: pass model=<preset> "
                                      f"({', '.join(registry.preset_names())}) or the constructor kwargs")
        cls = model_cls or fam.model_class(backend)
        try:
            model = cls(**kwargs)
        except TypeError as e:
            raise ConversionError(f"cannot build {cls.__name__} from {kwargs}: {e}") from None
        load_state_into(model, ckpt, backend, strict=True, family=fam)
    finally:
        ckpt.close()
    return model


def _family_of_model_cls(cls, backend):
    from opensora_dual import registry

    for fam in registry.load_families().values():
        try:
            if fam.model_class(backend) is cls:
                return fam
        except Exception:
            continue
    return None
