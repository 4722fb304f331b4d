"""``configs/text_encoder/<name>.yaml``: the text encoders' presets (constructor kwargs, shared by both
backends) and each Open-Sora release's text settings (max length, cleaning, mask to the encoder). Data, read
by ``opensora_dual/families/{t5,clip}.py`` and ``opensora_dual/text/embedder.py``."""
import functools
import os

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "configs", "text_encoder")


@functools.lru_cache(maxsize=None)
def _load(name):
    import yaml

    with open(os.path.join(CONFIG_DIR, f"{name}.yaml")) as f:
        return yaml.safe_load(f) or {}


def presets(name):
    """{preset: constructor kwargs} (copies)."""
    return {k: dict(v) for k, v in (_load(name).get("presets") or {}).items()}


def releases():
    """{release: {"max_length", "clean", "mask_to_model"}} from every text-encoder YAML."""
    out = {}
    for fname in sorted(os.listdir(CONFIG_DIR)):
        if fname.endswith(".yaml"):
            out.update({k: dict(v) for k, v in (_load(fname[:-5]).get("releases") or {}).items()})
    return out
