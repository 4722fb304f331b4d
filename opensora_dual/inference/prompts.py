"""Prompt handling of Open-Sora v1.2 inference (``opensora/utils/inference_utils.py``): prompt files, score
suffixes, JSON options inside a prompt, per-loop prompts (``"|0|text|2|text"``) and output file names.

Differences from upstream (each where upstream crashes, asserts or silently misbehaves) are listed per function
and in ``docs/inference.md``.
"""
import json
import os

from opensora_dual.inference.errors import InferenceInputError

# Keys a prompt's trailing JSON object may set.
PROMPT_JSON_KEYS = ("reference_path", "mask_strategy")

# Longest file-name part made from a prompt, in UTF-8 bytes (file systems allow 255 per name component; the rest
# is left for the prefix, "-k" and the extension).
MAX_PROMPT_NAME_BYTES = 200


def load_prompts(path, start_idx=None, end_idx=None):
    """Prompts of a text file, one per line, each ``strip()``-ped, then sliced ``[start_idx:end_idx]``.

    Differences from upstream: blank lines are dropped before slicing (upstream keeps them as empty prompts and
    generates a video for each), so the slice indexes the non-blank prompts; the file is read as UTF-8 (a leading
    byte-order mark is ignored) instead of the locale's encoding; a missing, unreadable or non-UTF-8 file, a
    file without any non-blank line and a slice selecting nothing raise ``InferenceInputError``.
    """
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise InferenceInputError(f"prompt file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise InferenceInputError(f"prompt file is not UTF-8 text: {path} ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InferenceInputError(f"cannot read prompt file {path}: {e.strerror or e}") from None
    prompts = [line.strip() for line in lines]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise InferenceInputError(f"prompt file has no non-empty prompt: {path}")
    selected = prompts[start_idx:end_idx]
    if not selected:
        raise InferenceInputError(
            f"start_idx={start_idx!r}, end_idx={end_idx!r} select no prompt of the {len(prompts)} in {path}")
    return selected


def append_score_to_prompts(prompts, aes=None, flow=None, camera_motion=None):
    """Upstream's score suffixes: ``" aesthetic score: {aes:.1f}."``, ``" motion score: {flow:.1f}."``,
    ``" camera motion: {camera_motion}."`` in that order, each skipped when its value is None or when the prompt
    already contains its label (``"aesthetic score:"``, ``"motion score:"``, ``"camera motion:"``)."""
    out = []
    for prompt in prompts:
        text = prompt
        if aes is not None and "aesthetic score:" not in prompt:
            text += f" aesthetic score: {aes:.1f}."
        if flow is not None and "motion score:" not in prompt:
            text += f" motion score: {flow:.1f}."
        if camera_motion is not None and "camera motion:" not in prompt:
            text += f" camera motion: {camera_motion}."
        out.append(text)
    return out


def extract_json_from_prompts(prompts, reference, mask_strategy):
    """Split ``'text{"reference_path": "...", "mask_strategy": "..."}'`` prompts.

    Returns ``(texts, reference, mask_strategy)``: the text before the first ``{`` (kept as is, like upstream, so
    a space before the ``{`` stays), and the two lists (updated in place, index i for prompt i) with the JSON's
    values. Prompts without ``{`` are returned unchanged and leave the lists alone.

    Differences from upstream: everything from the first ``{`` on must be one JSON object (upstream splits at every
    ``{``, so a ``{`` inside a JSON string fails there); invalid JSON, an unknown key, a non-string value, or lists
    shorter than ``prompts`` raise ``InferenceInputError`` (upstream: assert / JSONDecodeError / IndexError).
    """
    if len(reference) < len(prompts) or len(mask_strategy) < len(prompts):
        raise InferenceInputError(
            f"reference ({len(reference)}) and mask_strategy ({len(mask_strategy)}) lists must have one entry per "
            f"prompt ({len(prompts)})")
    texts = []
    for i, prompt in enumerate(prompts):
        cut = prompt.find("{")
        if cut < 0:
            texts.append(prompt)
            continue
        texts.append(prompt[:cut])
        raw = prompt[cut:]
        try:
            options = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InferenceInputError(f"prompt {i}: invalid JSON options {raw!r}: {e.msg} at char {e.pos}") from None
        if not isinstance(options, dict):  # cannot happen (the text starts with "{"), kept as a guard
            raise InferenceInputError(f"prompt {i}: JSON options must be an object, got {raw!r}")
        for key, value in options.items():
            if key not in PROMPT_JSON_KEYS:
                raise InferenceInputError(
                    f"prompt {i}: unknown JSON key {key!r}; allowed keys: {', '.join(PROMPT_JSON_KEYS)}")
            if not isinstance(value, str):
                raise InferenceInputError(f"prompt {i}: JSON value of {key!r} must be a string, got {value!r}")
            if key == "reference_path":
                reference[i] = value
            else:
                mask_strategy[i] = value
    return texts, reference, mask_strategy


def _parse_loop_prompt(prompt):
    """``"|0|a|2|b"`` -> [(0, "a"), (2, "b")] (texts not stripped); malformed -> InferenceInputError."""
    fields = prompt.split("|")[1:]
    if len(fields) % 2:
        raise InferenceInputError(f"loop prompt needs '|loop|text' pairs, got {prompt!r}")
    pairs = []
    for j in range(0, len(fields), 2):
        try:
            start = int(fields[j])
        except ValueError:
            raise InferenceInputError(
                f"loop prompt: loop index {fields[j]!r} is not an integer in {prompt!r}") from None
        if pairs and start < pairs[-1][0]:
            raise InferenceInputError(f"loop prompt: loop indices must not decrease, got {prompt!r}")
        pairs.append((start, fields[j + 1]))
    return pairs


def split_prompt(prompt_text):
    """``"|0| a |2| b"`` -> ``(["a", "b"], [0, 2])`` (texts stripped); any other prompt -> ``([prompt], None)``.

    A loop prompt is one that starts with ``"|0|"`` (upstream). Differences: a missing text, a non-integer or
    decreasing loop index raises ``InferenceInputError`` (upstream: IndexError / ValueError / silent misuse).
    """
    if not prompt_text.startswith("|0|"):
        return [prompt_text], None
    pairs = _parse_loop_prompt(prompt_text)
    return [text.strip() for _, text in pairs], [start for start, _ in pairs]


def merge_prompt(text_list, loop_idx_list=None):
    """Inverse of ``split_prompt``: ``text_list[0]`` without loop indices, else ``"|i0|t0|i1|t1..."``."""
    if loop_idx_list is None:
        return text_list[0]
    if len(loop_idx_list) != len(text_list):
        raise InferenceInputError(
            f"merge_prompt: {len(text_list)} texts but {len(loop_idx_list)} loop indices")
    return "".join(f"|{idx}|{text}" for idx, text in zip(loop_idx_list, text_list))


def extract_prompts_loop(prompts, num_loop):
    """The prompt each sample uses in loop ``num_loop``: for ``"|0|a|2|b"``, loops 0 and 1 use ``"a"`` and loops 2
    and later use ``"b"`` (texts not stripped, as upstream). Prompts not starting with ``"|0|"`` are returned as is.
    Malformed loop prompts raise ``InferenceInputError`` (see ``split_prompt``)."""
    if int(num_loop) != num_loop or num_loop < 0:
        raise InferenceInputError(f"loop index must be a non-negative integer, got {num_loop!r}")
    out = []
    for prompt in prompts:
        if prompt.startswith("|0|"):
            chosen = None
            for start, text in _parse_loop_prompt(prompt):
                if start <= num_loop:
                    chosen = text
            prompt = chosen
        out.append(prompt)
    return out


def _safe_file_name(text):
    """``text`` usable as one path component: "/" and NUL (and the OS's other separator) become "_", at most
    ``MAX_PROMPT_NAME_BYTES`` UTF-8 bytes (cut at a character boundary); "", "." and ".." become "_"."""
    for bad in {"/", "\0", os.sep, os.altsep or "/"}:
        text = text.replace(bad, "_")
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_PROMPT_NAME_BYTES:
        text = data[:MAX_PROMPT_NAME_BYTES].decode("utf-8", errors="ignore")
    if text in ("", ".", ".."):
        text = "_"
    return text


def get_save_path_name(save_dir, sample_name=None, sample_idx=None, prompt=None, prompt_as_path=False,
                       num_sample=1, k=None):
    """Output path without extension (upstream semantics):
    ``{save_dir}/{sample_name}_{sample_idx:04d}`` (``sample_name`` defaults to ``"sample"``), or with
    ``prompt_as_path`` ``{save_dir}/{sample_name}{prompt}`` (``sample_name`` defaults to ``""``); ``-{k}`` is
    appended when ``num_sample != 1``.

    Differences from upstream: with ``prompt_as_path`` the prompt is made safe as a file name ("/" and NUL ->
    "_", cut to 200 UTF-8 bytes, "" / "." / ".." -> "_"); upstream uses it verbatim, so a "/" creates
    sub-directories and a long prompt fails with "File name too long". A missing ``sample_idx`` (without
    ``prompt_as_path``), a missing ``prompt`` (with it) or a missing ``k`` (with ``num_sample != 1``) raise
    ``InferenceInputError`` instead of a TypeError / a "-None" suffix.
    """
    if prompt_as_path:
        if prompt is None:
            raise InferenceInputError("prompt_as_path=True needs the prompt, got prompt=None")
        if sample_name is None:
            sample_name = ""
        suffix = _safe_file_name(prompt)
    else:
        if sample_idx is None:
            raise InferenceInputError("sample_idx is required unless prompt_as_path=True, got None")
        if sample_name is None:
            sample_name = "sample"
        suffix = f"_{sample_idx:04d}"
    path = os.path.join(save_dir, f"{sample_name}{suffix}")
    if num_sample != 1:
        if k is None:
            raise InferenceInputError(f"k (the sample number) is required when num_sample={num_sample}")
        path = f"{path}-{k}"
    return path
