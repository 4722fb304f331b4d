"""configs/text_encoder/*.yaml say what the code does: presets = the families' PRESETS, releases = the
embedder's per-release settings; the presets build in both backends with identical parameter names."""
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
def test_yaml_matches_code(name, family):
    cfg = yaml.safe_load(open(os.path.join(ROOT, "configs", "text_encoder", f"{name}.yaml")))
    for preset, kwargs in cfg["presets"].items():
        assert family.PRESETS[preset] == kwargs, preset
    for release, settings in cfg["releases"].items():
        assert RELEASES[release] == settings, release


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
