"""``scripts/infer_t5.py`` / ``scripts/infer_clip.py``: CSV or prompts file -> one .npz per caption
(``text_emb`` float32, ``mask`` uint8), both backends on the same converted weights, resumable."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mindspore  # noqa: F401  (import order)
import torch

import converters
from opensora_dual.registry import build, resolve
from opensora_dual.text import load_tokenizer, tokenize
from opensora_dual.text.embed_cache import main as cache_main
from opensora_dual.text.toy_tokenizers import build_clip_tokenizer_folder, build_t5_tokenizer_folder
from parity_tests.standard import compare, judge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = ["A red car driving on the road at night. https://example.com/car.mp4",
            "a cat", "<b>Sunset</b> over the ocean 🌅", "two dogs running across a field"]


def _release(tmp, name, preset, tok_builder, **kw):
    """A release folder: random reference weights (config.json + model.safetensors) + tokenizer files."""
    folder = str(tmp / name)
    tok_dir = tok_builder(str(tmp / f"{name}_tok"))
    _, kwargs = resolve(preset)
    kwargs.update(vocab_size=len(load_tokenizer(tok_dir)), **kw)
    torch.manual_seed(0)
    model = build(preset, "pt", **kwargs)
    converters.save_release_folder(model, "pt", folder, kwargs, preset=preset)
    for f in os.listdir(tok_dir):
        shutil.copy(os.path.join(tok_dir, f), folder)
    return folder, model


@pytest.fixture(scope="module")
def t5_release(tmp_path_factory):
    return _release(tmp_path_factory.mktemp("t5"), "t5", "T5-S", build_t5_tokenizer_folder)


@pytest.fixture(scope="module")
def clip_release(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    tok = load_tokenizer(build_clip_tokenizer_folder(str(tmp / "probe")))
    return _release(tmp, "clip", "CLIP-S-text", build_clip_tokenizer_folder,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def write_csv(path, with_paths=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text"] if with_paths else ["text"])
        for i, c in enumerate(CAPTIONS):
            w.writerow([f"videos/clip_{i}.mp4", c] if with_paths else [c])
    return path


def gate(port, ref, level="model_small"):
    v = judge(compare(port, ref), level, "fp32")
    assert v.passed, v.reasons


def test_t5_cache_csv_both_backends_and_resume(tmp_path, t5_release, capfd):
    folder, ref_model = t5_release
    csv_path = write_csv(str(tmp_path / "captions.csv"))
    out = {}
    for backend in ("ms", "pt"):
        d = str(tmp_path / f"emb_{backend}")
        assert cache_main(["--csv", csv_path, "--output-dir", d, "--weights", folder, "--backend", backend,
                           "--no-progress"], "", "v1.2", "last_hidden_state") == 0
        files = sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
        assert files == [f"videos/clip_{i}.npz" for i in range(4)]
        out[backend] = [np.load(os.path.join(d, f)) for f in files]
    for a, b in zip(out["ms"], out["pt"]):
        assert a["text_emb"].shape == (300, 64) and a["text_emb"].dtype == np.float32
        assert a["mask"].shape == (300,) and a["mask"].dtype == np.uint8
        assert (a["mask"] == b["mask"]).all()
        gate(a["text_emb"], b["text_emb"])
    # v1.x cleans the captions (twice) and gives the encoder the mask: the reference computed by hand agrees
    from opensora_dual.text import text_preprocessing

    tok = tokenize(load_tokenizer(folder), [text_preprocessing(c) for c in CAPTIONS], 300)
    with torch.no_grad():
        ref = ref_model.eval()(torch.from_numpy(tok["input_ids"]), torch.from_numpy(tok["attention_mask"])).numpy()
    for i, b in enumerate(out["pt"]):
        assert (b["mask"] == tok["attention_mask"][i]).all()
        np.testing.assert_array_equal(b["text_emb"], ref[i])
    # resume: only the missing file is written again
    d = str(tmp_path / "emb_ms")
    before = {f: os.path.getmtime(os.path.join(d, "videos", f)) for f in os.listdir(os.path.join(d, "videos"))}
    os.remove(os.path.join(d, "videos", "clip_2.npz"))
    capfd.readouterr()
    cache_main(["--csv", csv_path, "--output-dir", d, "--weights", folder, "--no-progress"], "", "v1.2",
               "last_hidden_state")
    assert "1 written, 3 already there" in capfd.readouterr().err
    after = {f: os.path.getmtime(os.path.join(d, "videos", f)) for f in os.listdir(os.path.join(d, "videos"))}
    assert all(after[f] == before[f] for f in before if f != "clip_2.npz") and "clip_2.npz" in after


def test_t5_script_prompts_file_v2(tmp_path, t5_release):
    """The CLI end to end (subprocess): a prompts file, release v2.0 (512 tokens, no cleaning, no mask to the
    encoder), MindSpore backend with the compiled forward."""
    folder, ref_model = t5_release
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(CAPTIONS[:2]) + "\n\n")
    d = tmp_path / "emb"
    env = dict(os.environ, HF_HUB_OFFLINE="1", GLOG_v="3")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "infer_t5.py"), "--prompts", str(prompts),
                        "--output-dir", str(d), "--weights", folder, "--release", "v2.0", "--no-progress", "--jit"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(d)) == ["000000.npz", "000001.npz"]
    tok = tokenize(load_tokenizer(folder), CAPTIONS[:2], 512)
    with torch.no_grad():
        ref = ref_model.eval()(torch.from_numpy(tok["input_ids"]), None).numpy()   # v2.0: no mask to T5
    for i in range(2):
        z = np.load(d / f"{i:06d}.npz")
        assert z["text_emb"].shape == (512, 64) and (z["mask"] == tok["attention_mask"][i]).all()
        gate(z["text_emb"], ref[i])


def test_clip_cache_pooled(tmp_path, clip_release):
    folder, ref_model = clip_release
    csv_path = write_csv(str(tmp_path / "captions.csv"), with_paths=False)
    d = str(tmp_path / "clip_emb")
    assert cache_main(["--csv", csv_path, "--output-dir", d, "--weights", folder, "--no-progress"], "",
                      "v2.0-clip", "pooler_output") == 0
    assert sorted(os.listdir(d)) == [f"{i:06d}.npz" for i in range(4)]
    tok = tokenize(load_tokenizer(folder), CAPTIONS, 77)
    with torch.no_grad():
        _, pooled = ref_model.eval()(torch.from_numpy(tok["input_ids"]))
    for i in range(4):
        z = np.load(os.path.join(d, f"{i:06d}.npz"))
        assert z["text_emb"].shape == (64,) and z["mask"].shape == (77,)
        assert (z["mask"] == tok["attention_mask"][i]).all()
        gate(z["text_emb"], pooled[i].numpy())


def test_text_embedder_takes_the_backend_encode_function():
    """opensora_dual's TextEmbedder is framework-free: cleaning, tokenizing and the result's layout are its own,
    running the net is the injected ``encode_tokens(net, ids, mask, output)``."""
    from opensora_dual.text.embedder import TextEmbedder
    from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder

    calls = []

    def fake_encode(net, ids, mask, output):
        calls.append((net, ids.shape, None if mask is None else mask.copy(), output))
        return np.ones(ids.shape + (3,), np.float64)

    import tempfile

    tok = load_tokenizer(build_t5_tokenizer_folder(tempfile.mkdtemp()))
    emb = TextEmbedder("NET", tok, fake_encode, 16, clean=False, mask_to_model=False)
    out = emb.encode(["a cat", "two dogs"])
    assert out["text_emb"].dtype == np.float32 and out["text_emb"].shape == (2, 16, 3)
    assert out["mask"].dtype == np.uint8 and out["mask"].shape == (2, 16)
    assert calls == [("NET", (2, 16), None, "last_hidden_state")]        # v2.0: no mask to the model
    TextEmbedder("NET", tok, fake_encode, 16).encode(["a cat"])
    assert (calls[-1][2] == tokenize(tok, ["a cat"], 16)["attention_mask"]).all()
    with pytest.raises(ValueError):
        TextEmbedder("NET", tok, fake_encode, 16, output="pooled")
    with pytest.raises(TypeError):
        TextEmbedder("NET", tok, "ms", 16)   # the old backend-name argument: a clear error


def test_make_text_embedder_from_a_loaded_twin(t5_release, clip_release):
    """Each twin's runtime (same functions at the same path) builds a TextEmbedder from a loaded net; both
    backends agree, the MindSpore jit forward equals PyNative, and CLIP gives both outputs."""
    from ms_impl.models.text_encoder import runtime as ms_rt
    from pt_reference.models.text_encoder import runtime as pt_rt

    folder, _ = t5_release
    tok = load_tokenizer(folder)
    out = {}
    for name, rt, kw in (("pt", pt_rt, {}), ("ms", ms_rt, {}), ("ms-jit", ms_rt, dict(jit=True))):
        net = rt.load_text_encoder(weights=folder)
        out[name] = rt.make_text_embedder(net, tok, 32, **kw).encode(CAPTIONS)
        assert out[name]["text_emb"].shape == (4, 32, 64) and out[name]["text_emb"].dtype == np.float32
    gate(out["ms"]["text_emb"], out["pt"]["text_emb"])
    gate(out["ms-jit"]["text_emb"], out["ms"]["text_emb"])
    with pytest.raises(ValueError, match="no pooled output"):
        pt_rt.make_text_embedder(pt_rt.load_text_encoder(model="T5-S"), tok, 8, output="pooler_output").encode(["a"])
    with pytest.raises(SystemExit, match="exactly one"):
        ms_rt.load_text_encoder()
    with pytest.raises(SystemExit, match="bf16"):
        ms_rt.load_text_encoder(model="T5-S", dtype="bf16")

    folder, _ = clip_release
    tok = load_tokenizer(folder)
    for output, shape in (("pooler_output", (4, 64)), ("last_hidden_state", (4, 77, 64))):
        res = {b: rt.make_text_embedder(rt.load_text_encoder(weights=folder), tok, 77, clean=False,
                                        mask_to_model=False, output=output).encode(CAPTIONS)
               for b, rt in (("pt", pt_rt), ("ms", ms_rt))}
        assert res["pt"]["text_emb"].shape == shape
        gate(res["ms"]["text_emb"], res["pt"]["text_emb"])
