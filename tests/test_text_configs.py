"""configs/text_encoder/*.yaml are the data the code runs on: the registry's presets and the embedder's
per-release settings come from them; the presets build in both backends with identical parameter names; the
release settings are upstream's (facts section 4)."""
import os

import pytest
import yaml

import mindspore  # noqa: F401

import converters
from opensora_dual.families import clip as clip_family
from opensora_dual.families import t5 as t5_family
from opensora_dual.registry import build
from opensora_dual.text.embedder import RELEASES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,family", [("t5", t5_family), ("clip", clip_family)])
def test_registry_presets_are_the_yaml(name, family):
    from opensora_dual.registry import resolve

    cfg = yaml.safe_load(open(os.path.join(ROOT, "configs", "text_encoder", f"{name}.yaml")))
    for preset, kwargs in cfg["presets"].items():
        assert resolve(preset)[1] == kwargs, preset
    assert set(cfg["presets"]) == set(family.PRESETS)


def test_release_settings_are_upstreams():
    assert RELEASES == {
        "v1.0": dict(max_length=120, clean=True, mask_to_model=True),
        "v1.1": dict(max_length=200, clean=True, mask_to_model=True),
        "v1.2": dict(max_length=300, clean=True, mask_to_model=True),
        "v2.0": dict(max_length=512, clean=False, mask_to_model=False),
        "v2.0-clip": dict(max_length=77, clean=False, mask_to_model=False),
    }
    xxl = resolve_xxl()
    assert (xxl["d_model"], xxl["num_heads"], xxl["d_kv"], xxl["d_ff"], xxl["num_layers"]) == (4096, 64, 64, 10240, 24)


def resolve_xxl():
    from opensora_dual.registry import resolve

    assert resolve("DeepFloyd/t5-v1_1-xxl")[1] == resolve("google/t5-v1_1-xxl")[1] == resolve("T5-v1.1-XXL")[1]
    return resolve("T5-v1.1-XXL")[1]


@pytest.mark.parametrize("preset", ["T5-S", "CLIP-S-text"])
def test_small_presets_same_keys_in_both_backends(preset):
    pt, ms_ = build(preset, "pt"), build(preset, "ms")
    a, b = converters.model_tensors(pt, "pt"), converters.model_tensors(ms_, "ms")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_release_config_roundtrip():
    for family in (t5_family, clip_family):
        for preset, kwargs in family.PRESETS.items():
            assert family.config_from_json(family.config_to_json(kwargs)) == {
                k: v for k, v in {**family.CONFIG_DEFAULTS, **kwargs}.items()}, preset
