"""scripts/sample.py with the Open-Sora 2.0 config (``configs/opensora-v2-0/inference/256px.yaml``, upstream's keys)
on a small random 2.0 pipeline folder (MMDiT-S, HunyuanVAE-S, T5-S + CLIP-S-text with toy tokenizers) written by
the reference's ``save_pretrained``. Both backends sample from the same numpy noise; one-frame PNG outputs are
compared (H.264 encodes of identical frames were seen to differ between runs)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from parity_tests.procs import read_frames as frames
from parity_tests.standard import ceiling, psnr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "sample.py")
V2 = os.path.join(ROOT, "configs", "opensora-v2-0", "inference", "256px.yaml")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", GLOG_v="3", TOKENIZERS_PARALLELISM="false")
PROMPTS = ["a red car driving on a road at sunset", "a small boat on a quiet river"]


def run(backend, *args, expect=0):
    c = [sys.executable, SCRIPT, "--backend", backend, "--config", V2, "--verbose", "0", "--seed", "3",
         "--num-steps", "3", *[str(a) for a in args]]
    p = subprocess.run(c, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert p.returncode == expect, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p






@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from PIL import Image

    from pt_reference.pipelines.opensora_v2 import write_random_pipeline

    d = tmp_path_factory.mktemp("sample_v2")
    write_random_pipeline(str(d / "pipe"))
    image = str(d / "ref.png")
    yy, xx = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([xx * 4 % 256, yy * 5 % 256, np.full_like(xx, 90)], -1).astype(np.uint8)).save(image)
    return dict(dir=d, pipe=str(d / "pipe"), image=image)


def test_v2_config_t2v_and_i2v_mp4(folders):
    """The 256px config with tiny sizes (--image-size beats the table): t2v mp4s of 5 frames at fps_save, the
    prompt suffixes, then i2v_head with --ref."""
    out = str(folders["dir"] / "t2v")
    p = run("pt", "--pipeline-folder", folders["pipe"], "--save-dir", out, "--prompt", *PROMPTS,
            "--image-size", 32, 48, "--num-frames", 5)
    assert "Open-Sora v2.0" in p.stdout and "flow-matching 3 steps" in p.stdout and "2 written" in p.stdout
    assert "guidance 7.5 / image 3.0, cond t2v, fps 24, motion score 4" in p.stdout
    a, b = frames(os.path.join(out, "sample_0000.mp4")), frames(os.path.join(out, "sample_0001.mp4"))
    assert a.shape == b.shape == (5, 32, 48, 3) and a.std() > 1.0 and psnr(a, b) < 30
    out2 = str(folders["dir"] / "i2v")
    p = run("pt", "--pipeline-folder", folders["pipe"], "--save-dir", out2, "--prompt", PROMPTS[0],
            "--image-size", 32, 48, "--num-frames", 5, "--cond-type", "i2v_head", "--ref", folders["image"])
    assert "cond i2v_head" in p.stdout and "1 written" in p.stdout
    c = frames(os.path.join(out2, "sample_0000.mp4"))
    assert c.shape == a.shape and psnr(a, c) < 40      # the reference changed the video


def test_v2_both_backends_agree(folders):
    """One frame (PNG, lossless) per prompt in both backends: the standard's free-running video gate."""
    outs = {}
    for backend in ("pt", "ms"):
        outs[backend] = str(folders["dir"] / f"png_{backend}")
        run(backend, "--pipeline-folder", folders["pipe"], "--save-dir", outs[backend], "--prompt", *PROMPTS,
            "--image-size", 32, 48, "--num-frames", 1)
    floor = ceiling("sampling_free_running", "fp32").psnr
    for name in ("sample_0000.png", "sample_0001.png"):
        a, b = frames(os.path.join(outs["pt"], name)), frames(os.path.join(outs["ms"], name))
        assert a.shape == b.shape == (1, 32, 48, 3) and a.std() > 1.0
        assert psnr(a, b) >= floor, (name, psnr(a, b))


def test_v2_bad_num_frames_exit_2(folders):
    p = run("pt", "--pipeline-folder", folders["pipe"], "--save-dir", str(folders["dir"] / "bad"),
            "--prompt", PROMPTS[0], "--num-frames", 30, expect=2)
    assert "4k+1" in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_v2_config_sizes():
    """The 256px / 768px configs' default sizes (upstream's tables, W:H keys) and 129 frames."""
    from opensora_dual.config import load_config
    from opensora_dual.inference.aspect import get_image_size_v2

    for name, size in (("256px", (192, 336)), ("768px", (576, 1024))):
        so = load_config(os.path.join(ROOT, "configs", "opensora-v2-0", "inference", f"{name}.yaml"))["sampling_option"]
        assert get_image_size_v2(so["resolution"], so["aspect_ratio"]) == size and so["num_frames"] == 129
    assert get_image_size_v2("256px", "9:16") == (336, 192) and get_image_size_v2("768px", "2.39:1") == (496, 1184)


def test_t2i2v_config_both_backends(tmp_path):
    """t2i2v_256px.yaml (upstream's 256px + plugins/t2i2v): the Flux image parts come from the pipeline folder's
    image_model/ and image_vae/; the first frame is made at --img-resolution, saved under generated_condition/
    and used as the i2v_head reference. Both backends make the same condition image and the same one-frame
    sample."""
    from PIL import Image

    from pt_reference.pipelines.opensora_v2 import write_random_pipeline

    write_random_pipeline(str(tmp_path / "pipe"), image_model="Flux-S", image_vae="FluxAE-S")
    t2i2v = os.path.join(ROOT, "configs", "opensora-v2-0", "inference", "t2i2v_256px.yaml")
    outs = {}
    for backend in ("pt", "ms"):
        out = str(tmp_path / backend)
        p = run(backend, "--config", t2i2v, "--pipeline-folder", str(tmp_path / "pipe"), "--save-dir", out,
                "--prompt", PROMPTS[0], "--image-size", 32, 48, "--num-frames", 1, "--img-resolution", "64px")
        assert "t2i2v (Flux image at 64px)" in p.stdout and "1 written" in p.stdout
        names = sorted(os.listdir(out))
        cond = os.path.join(out, "generated_condition")
        assert os.path.isdir(cond), names
        pngs = sorted(f for f in os.listdir(cond) if f.endswith(".png"))
        assert len(pngs) == 1
        sample = [f for f in names if f.endswith(".png")]
        assert len(sample) == 1
        outs[backend] = (np.asarray(Image.open(os.path.join(cond, pngs[0]))),
                         np.asarray(Image.open(os.path.join(out, sample[0]))))
    (cond_pt, video_pt), (cond_ms, video_ms) = outs["pt"], outs["ms"]
    assert cond_pt.shape == (32, 48, 3) and cond_pt.std() > 1.0
    floor = ceiling("sampling_free_running", "fp32").psnr
    assert psnr(cond_pt, cond_ms) >= floor and psnr(video_pt, video_ms) >= floor


def test_t2i2v_without_image_weights_fails_clearly(folders, tmp_path):
    t2i2v = os.path.join(ROOT, "configs", "opensora-v2-0", "inference", "t2i2v_256px.yaml")
    p = run("pt", "--config", t2i2v, "--pipeline-folder", folders["pipe"], "--save-dir", str(tmp_path / "o"),
            "--prompt", PROMPTS[0], "--image-size", 32, 48, "--num-frames", 1, expect=2)
    assert "Flux image model" in p.stderr
