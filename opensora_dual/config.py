"""YAML configs for the scripts (``scripts/sample.py``, ``scripts/train.py``): reading, ``_base_`` inheritance,
merging, and command-line values. Bad input raises ``ConfigError`` with one line."""
import copy
import json
import os


class ConfigError(ValueError):
    """A config file or command-line value the scripts cannot use (one line, no traceback)."""


def parse_value(text):
    """A command-line value: JSON (numbers, lists, dicts, true/false/null), None/True/False, else the string
    itself (so "9:16" stays a string, unlike YAML 1.1)."""
    low = text.strip().lower()
    if low in ("none", "null", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_yaml(path):
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config not found: {path}") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {' '.join(str(e).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys, got {type(data).__name__}")
    return data


def deep_merge(base, over):
    """``over`` on top of ``base`` (nested mappings merged, everything else replaced), as new objects."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path, _seen=()):
    """A YAML config with ``_base_: other.yaml`` (relative to the file) inheritance resolved; a list of bases
    (``_base_: [256px.yaml, plugins/t2i2v.yaml]``, upstream's mmengine form) merges them in order, then the file."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"config {path} inherits from itself (_base_ cycle)")
    data = read_yaml(path)
    bases = data.pop("_base_", None)
    if bases:
        merged = {}
        for base in ([bases] if isinstance(bases, str) else list(bases)):
            base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
            merged = deep_merge(merged, load_config(base_path, _seen + (path,)))
        data = deep_merge(merged, data)
    return data


def resolve_weights(path, what):
    """A local path, or a Hugging Face repo id found in the local cache (nothing is downloaded); None stays None.
    Anything else raises ``ConfigError`` naming ``what`` ("diffusion model", "VAE", ...)."""
    import re

    if path is None:
        return None
    path = os.path.expanduser(str(path))
    if os.path.exists(path):
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not path.startswith("."):
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(repo_id=path, local_files_only=True)
        except Exception:
            pass
        raise ConfigError(f"{what} weights not found: {path} is neither a local path nor in the Hugging Face cache "
                          f"(download it first, e.g. huggingface-cli download {path} --local-dir DIR, and pass the "
                          f"folder)")
    raise ConfigError(f"{what} weights not found: {path}")


def split_options(tokens):
    """``["--a.b", "3", "--c=d", "--l", "1", "2", "--flag"]`` -> ``[("a.b", ["3"]), ("c", ["d"]), ("l", ["1", "2"]),
    ("flag", [])]``: the scripts' generic ``--key value`` syntax, values still raw strings."""
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument {tok!r} (options are --key value)")
        name, i = tok[2:], i + 1
        if "=" in name:
            name, raw = name.split("=", 1)
            values = [raw]
        else:
            values = []
            while i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
        out.append((name, values))
    return out


def parse_values(values):
    """Raw strings -> one value (``parse_value``) or a list of them."""
    return parse_value(values[0]) if len(values) == 1 else [parse_value(v) for v in values]
