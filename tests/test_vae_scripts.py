"""scripts/infer_vae.py (latent cache from a CSV) and scripts/decode_vae.py (latents -> mp4).

A CSV with two good synthetic videos, a corrupt file and a missing file: the bad two are reported and skipped,
the good latents are written in the upstream npz format, a rerun skips the done ones, both backends write the
same latents from the same release folder, and the decode command turns them back into mp4 files.
"""
import csv
import json
import os
import sys

import numpy as np
import pytest

import mindspore  # noqa: F401  (before decord)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import decode_vae  # noqa: E402
import infer_vae  # noqa: E402

from parity_tests import standard  # noqa: E402

PRESET = "OpenSoraVAE_V1_2-S"   # small 2D VAE (x2 spatial) + small temporal VAE (x4 in time)
FRAMES, H, W, FPS = 10, 24, 32, 8


def write_video(path, seed):
    import imageio

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, H, W, 3)).astype(np.float32)
    frames = [np.clip(base[0] + 8 * t, 0, 255).astype(np.uint8) for t in range(FRAMES)]
    imageio.mimwrite(path, frames, fps=FPS, codec="libx264", macro_block_size=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("vae_scripts")
    vids = d / "videos"
    (vids / "sub").mkdir(parents=True)
    write_video(str(vids / "a.mp4"), 0)
    write_video(str(vids / "sub" / "b.mp4"), 1)
    (vids / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    with open(d / "videos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text"])
        for p in ("a.mp4", "corrupt.mp4", "missing.mp4", "sub/b.mp4"):
            w.writerow([p, "a caption"])
    # one set of random weights as an upstream-layout release folder, read by both backends
    from converters import save_release_folder
    from opensora_dual.registry import build, resolve
    import torch

    torch.manual_seed(0)
    _, kw = resolve(PRESET)
    save_release_folder(build(PRESET, "pt"), "pt", str(d / "vae_release"), kw, preset=PRESET)
    return d


def run_infer(d, out, backend="ms", extra=()):
    return infer_vae.main(["--csv", str(d / "videos.csv"), "--video-folder", str(d / "videos"),
                           "--output-dir", str(out), "--weights", str(d / "vae_release"),
                           "--backend", backend, *extra])


def test_infer_writes_good_reports_bad_and_skips_done(dataset, capsys):
    out = dataset / "latents_ms"
    assert run_infer(dataset, out) == 0
    log = capsys.readouterr().out
    assert "2 written, 0 skipped (already done), 2 failed" in log
    assert "corrupt.mp4" in log and "missing.mp4" in log
    with open(out / "failed_videos.csv") as f:
        failed = {r["path"]: r["error"] for r in csv.DictReader(f)}
    assert set(failed) == {"corrupt.mp4", "missing.mp4"}
    assert "FileNotFoundError" in failed["missing.mp4"]
    assert not (out / "corrupt.npz").exists() and not (out / "missing.npz").exists()

    for rel in ("a.npz", "sub/b.npz"):
        with np.load(out / rel) as z:
            assert {"latent_mean", "latent_std", "fps", "ori_size", "num_frames"} <= set(z.files)
            assert z["latent_mean"].shape == (3, 4, H // 2, W // 2)       # 10 frames -> ceil(10/4) = 3 latents
            assert z["latent_std"].shape == z["latent_mean"].shape and z["latent_mean"].dtype == np.float32
            assert (z["latent_std"] > 0).all() and np.isfinite(z["latent_mean"]).all()
            assert float(z["fps"]) == pytest.approx(FPS) and list(z["ori_size"]) == [H, W]
            assert int(z["num_frames"]) == FRAMES

    # rerun: the two done ones are skipped (not rewritten), the bad ones reported again
    mtimes = {p: os.stat(out / p).st_mtime_ns for p in ("a.npz", "sub/b.npz")}
    assert run_infer(dataset, out, extra=("--strict",)) == 1        # --strict: failures give exit status 1
    log = capsys.readouterr().out
    assert "0 written, 2 skipped (already done), 2 failed" in log
    assert {p: os.stat(out / p).st_mtime_ns for p in mtimes} == mtimes
    with open(out / "infer_vae_summary.json") as f:
        assert json.load(f)["skipped"] == ["a.mp4", "sub/b.mp4"]


def test_backends_write_the_same_latents(dataset):
    """Same release folder, same video: the MindSpore and PyTorch runs agree at the small-model ceiling."""
    out_ms, out_pt = dataset / "lat_cmp_ms", dataset / "lat_cmp_pt"
    assert run_infer(dataset, out_ms, "ms") == 0
    assert run_infer(dataset, out_pt, "pt") == 0
    for rel in ("a.npz", "sub/b.npz"):
        with np.load(out_ms / rel) as m, np.load(out_pt / rel) as p:
            for key in ("latent_mean", "latent_std"):
                v = standard.judge(standard.compare(m[key], p[key], "float32"), "model_small", "fp32")
                assert v.passed, (rel, key, v.reasons)


def test_decode_writes_mp4(dataset, capsys):
    lat = dataset / "latents_dec"
    assert run_infer(dataset, lat) == 0
    mp4 = dataset / "decoded"
    assert decode_vae.main(["--latents", str(lat), "--output-dir", str(mp4), "--weights",
                            str(dataset / "vae_release"), "--sample-seed", "0"]) == 0
    assert "2 decoded, 0 failed" in capsys.readouterr().out
    import decord

    for rel in ("a.mp4", "sub/b.mp4"):
        vr = decord.VideoReader(str(mp4 / rel))
        assert len(vr) == FRAMES
        assert vr[0].shape == (H, W, 3)
        assert vr.get_avg_fps() == pytest.approx(FPS)


def test_output_paths_and_frame_counts():
    assert infer_vae.output_path("out", "a/b.mp4") == os.path.join("out", "a", "b.npz")
    assert infer_vae.output_path("out", "/data/v/x.mp4", "/data") == os.path.join("out", "v", "x.npz")
    assert infer_vae.output_path("out", "/elsewhere/x.mp4", "/data") == os.path.join("out", "elsewhere", "x.npz")
    from opensora_dual.registry import build

    vae = build(PRESET, "pt")
    assert [decode_vae.max_frames(vae, t) for t in (1, 5, 6, 15)] == [4, 17, 21, 51]
    x = infer_vae.preprocess(np.zeros((3, 27, 35, 3), np.uint8), None, 8)
    assert x.shape == (1, 3, 3, 24, 32) and x.min() == -1.0


def test_yaml_configs_match_presets():
    """configs/vae/*.yaml are the registered presets (data, same keys for both backends)."""
    import yaml

    from opensora_dual.registry import resolve

    def norm(v):
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    for fname in ("autoencoder_kl.yaml", "vae_temporal.yaml", "opensora_vae_v1_2.yaml"):
        with open(os.path.join(ROOT, "configs", "vae", fname)) as f:
            cfg = yaml.safe_load(f)
        cfg.pop("ms_switches", None)
        for name, kwargs in cfg.items():
            _, preset = resolve(name)
            assert norm(preset) == norm(kwargs), (fname, name)
