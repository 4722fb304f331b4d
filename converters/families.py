"""Glue to ``opensora_dual.registry``: which family and constructor kwargs a source or a ``--model`` means."""
from __future__ import annotations

from converters.errors import ConversionError


def family_from_config(cfg):
    from opensora_dual import registry

    tried = []
    for key in ("model_type", "_class_name"):
        v = cfg.get(key)
        if isinstance(v, str):
            tried.append(v)
    for v in cfg.get("architectures") or []:
        if isinstance(v, str):
            tried.append(v)
    for t in tried:
        try:
            return registry.family_for_model_type(t)
        except KeyError:
            continue
    known = sorted(t for f in registry.load_families().values() for t in f.model_types)
    if not tried:
        raise ConversionError(f"config.json names no model_type (or _class_name); known: {known}")
    raise ConversionError(f"config.json model_type {tried[0]!r} is not a registered family; known: {known}")


def kwargs_from_config(fam, cfg, where="config.json"):
    if fam.config_from_json is None:
        raise ConversionError(f"family {fam.name} cannot read a {where}")
    try:
        return fam.config_from_json(cfg)
    except Exception as e:  # a family's parser failing on a bad file is bad input
        raise ConversionError(f"{where}: cannot read it as a {fam.name} config ({type(e).__name__}: {e})") from None


def resolve_preset(name):
    from opensora_dual import registry

    try:
        return registry.resolve(name)
    except KeyError:
        raise ConversionError(f"unknown model {name!r}; registered: {registry.preset_names()}") from None


def converter_hooks(fam) -> dict:
    """``Family.extra["converter"]`` (see docs/converters.md): source_rules, ignore, weights_names."""
    if fam is None:
        return {}
    return dict(fam.extra.get("converter") or {})
