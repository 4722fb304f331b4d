"""Model registry: one name (``STDiT3-XL/2``) maps to the same class in each backend.

A *family* (``opensora_dual.families.<name>``) declares where its class lives relative to the backend
package (``models.stdit.stdit3:STDiT3`` is ``pt_reference.models.stdit.stdit3.STDiT3`` and
``ms_impl.models.stdit.stdit3.STDiT3``), its named presets, and how a release folder's ``config.json``
maps to constructor arguments. Families register themselves on import; ``load_families()`` imports all.

``BACKENDS`` is the one place framework-free code names the twin packages: by string, resolved at run time
(``Family.model_class``, ``twin_module``), never by an import statement (tests/test_layering.py).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

BACKENDS = {"pt": "pt_reference", "ms": "ms_impl"}


@dataclass
class Family:
    name: str                                  # "stdit3"
    class_path: str                            # "models.stdit.stdit3:STDiT3", relative to the backend package
    model_types: Tuple[str, ...] = ()          # config.json "model_type" / "_class_name" values that mean this family
    presets: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # registered names -> constructor kwargs
    config_from_json: Optional[Callable[[dict], dict]] = None   # release config.json -> constructor kwargs
    config_to_json: Optional[Callable[[dict], dict]] = None     # constructor kwargs -> release config.json
    extra: Dict[str, Any] = field(default_factory=dict)         # family-specific data (converter rules, ...)

    def model_class(self, backend: str):
        module, cls = self.class_path.split(":")
        return getattr(twin_module(backend, module), cls)


def twin_module(backend: str, module: str):
    """The twin module at ``module`` (relative to the backend package) in ``backend`` ("pt" | "ms"):
    ``twin_module("ms", "models.text_encoder.runtime")`` is ``ms_impl.models.text_encoder.runtime``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return importlib.import_module(f"{BACKENDS[backend]}.{module}")


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "models")


def load_presets(filename: str) -> Dict[str, Dict[str, Any]]:
    """Presets from ``configs/models/<filename>``: {name: constructor kwargs}; lists become tuples."""
    import yaml

    with open(os.path.join(CONFIG_DIR, filename)) as f:
        data = yaml.safe_load(f) or {}
    return {name: {k: tuple(v) if isinstance(v, list) else v for k, v in (kw or {}).items()}
            for name, kw in data.items()}


def kwargs_from_json(cfg: dict, fields, tuple_keys=()) -> Dict[str, Any]:
    """Constructor kwargs from a config.json: the ``fields`` present in ``cfg``, JSON lists -> tuples for
    ``tuple_keys`` (the families' ``config_from_json``)."""
    kwargs = {k: cfg[k] for k in fields if k in cfg}
    for k in tuple_keys:
        if kwargs.get(k) is not None:
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def json_from_kwargs(defaults: dict, kwargs: dict, **meta) -> Dict[str, Any]:
    """A config.json: ``defaults`` updated by ``kwargs``, tuples as JSON lists, then the ``meta`` keys
    (model_type, architectures, ...) (the families' ``config_to_json``)."""
    cfg = {**defaults, **kwargs}
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    cfg.update(meta)
    return cfg


_FAMILIES: Dict[str, Family] = {}
_PRESETS: Dict[str, Tuple[str, Dict[str, Any]]] = {}


def register(family: Family) -> Family:
    _FAMILIES[family.name] = family
    for preset, kwargs in family.presets.items():
        _PRESETS[preset] = (family.name, kwargs)
    return family


def load_families() -> Dict[str, Family]:
    from opensora_dual import families

    for info in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"opensora_dual.families.{info.name}")
    return _FAMILIES


def get_family(name: str) -> Family:
    load_families()
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def family_for_model_type(model_type: str) -> Family:
    for fam in load_families().values():
        if model_type in fam.model_types:
            return fam
    raise KeyError(f"no model family handles model_type {model_type!r}; known: "
                   f"{sorted(t for f in _FAMILIES.values() for t in f.model_types)}")


def resolve(name: str) -> Tuple[Family, Dict[str, Any]]:
    """A registered preset name -> (family, constructor kwargs)."""
    load_families()
    if name not in _PRESETS:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(_PRESETS)}")
    fam, kwargs = _PRESETS[name]
    return _FAMILIES[fam], dict(kwargs)


def preset_names() -> list:
    load_families()
    return sorted(_PRESETS)


def build(name: str, backend: str, **overrides):
    """Build a registered model in one backend: ``build("STDiT3-XL/2", "ms")``."""
    fam, kwargs = resolve(name)
    kwargs.update(overrides)
    return fam.model_class(backend)(**kwargs)
