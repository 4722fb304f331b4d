"""scripts/sample.py with the Open-Sora 1.0 and 1.1 release configs (``configs/opensora/inference/16x256x256.yaml``,
``configs/opensora-v1-1/inference/sample.yaml``), as a user runs it, on small random pipeline folders (STDiT-S/2 or
STDiT2-S/2, the small 2D AutoencoderKL, T5-S + toy tokenizer) written by the reference's ``save_pretrained``.
Both backends sample the same prompts from the same numpy noise: their videos must agree (PSNR, the standard's
free-running video gate). The release's sampler comes from the config (IDDPM; ``--scheduler.type dpm-solver``)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from parity_tests.procs import read_frames as frames
from parity_tests.standard import ceiling, psnr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "sample.py")
V1_0 = os.path.join(ROOT, "configs", "opensora", "inference", "16x256x256.yaml")
V1_1 = os.path.join(ROOT, "configs", "opensora-v1-1", "inference", "sample.yaml")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", GLOG_v="3", TOKENIZERS_PARALLELISM="false")
PROMPTS = ["a red car driving on a road at sunset", "a small boat on a quiet river"]


def run(backend, config, *args, expect=0):
    c = [sys.executable, SCRIPT, "--backend", backend, "--config", config, "--verbose", "0", "--seed", "3",
         "--num-sampling-steps", "3", *[str(a) for a in args]]
    p = subprocess.run(c, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert p.returncode == expect, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p






@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder
    from pt_reference.pipelines.opensora import write_random_pipeline

    d = tmp_path_factory.mktemp("sample_v1")
    tok = str(d / "tokenizer")
    build_t5_tokenizer_folder(tok, vocab_size=512)
    write_random_pipeline(str(d / "v1_0"), tokenizer=tok, model="STDiT-S/2", input_size=(3, 10, 14))
    write_random_pipeline(str(d / "v1_1"), tokenizer=tok, model="STDiT2-S/2")
    from PIL import Image

    image = str(d / "ref.png")
    yy, xx = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([xx * 4 % 256, yy * 5 % 256, np.full_like(xx, 90)], -1).astype(np.uint8)).save(image)
    return dict(dir=d, v1_0=str(d / "v1_0"), v1_1=str(d / "v1_1"), image=image)


def _both(folders, release, config, *args):
    outs = {}
    for backend in ("pt", "ms"):
        out = str(folders["dir"] / f"{release}_{backend}_{abs(hash(args)) % 10**6}")
        p = run(backend, config, "--pipeline-folder", folders[release], "--save-dir", out, *args)
        outs[backend] = (out, p.stdout)
    return outs


def _agree(outs, names):
    """The backends' decoded frames agree at the standard's free-running video gate. Compared on PNG (images,
    lossless): an h264 encode turns a one-level pixel difference of random-weight videos into tens of dB."""
    floor = ceiling("sampling_free_running", "fp32").psnr
    for name in names:
        a, b = frames(os.path.join(outs["pt"][0], name)), frames(os.path.join(outs["ms"][0], name))
        assert a.shape == b.shape and a.std() > 1.0
        assert psnr(a, b) >= floor, (name, psnr(a, b))


def test_v1_0_config_t2v(folders):
    """The 1.0 release config (IDDPM 100 steps -> 3 here, 120-token captions, the fixed 16x256x256 size -> 3
    frames of 20x28 for the small model), text-to-video: mp4s of the requested size."""
    out = str(folders["dir"] / "v1_0_t2v")
    p = run("pt", V1_0, "--pipeline-folder", folders["v1_0"], "--save-dir", out, "--prompt", *PROMPTS,
            "--image-size", 20, 28, "--num-frames", 3)
    assert "Open-Sora v1.0" in p.stdout and "iddpm 3 steps" in p.stdout and "2 written" in p.stdout
    a, b = frames(os.path.join(out, "sample_0000.mp4")), frames(os.path.join(out, "sample_0001.mp4"))
    assert a.shape == b.shape == (3, 20, 28, 3) and a.std() > 1.0 and psnr(a, b) < 30


def test_v1_0_both_backends_agree(folders):
    """Another size than the model was saved with (the pipeline rebuilds STDiT's position tables, as upstream
    builds the model from the config's size): one frame of 24x32, both backends, PNGs compared."""
    outs = _both(folders, "v1_0", V1_0, "--prompt", *PROMPTS, "--image-size", 24, 32, "--num-frames", 1)
    _agree(outs, ["sample_0000.png", "sample_0001.png"])


def test_v1_0_dpm_solver(folders):
    outs = _both(folders, "v1_0", V1_0, "--prompt", PROMPTS[0], "--image-size", 20, 28, "--num-frames", 1,
                 "--scheduler.type", "dpm-solver")
    assert "dpm-solver 3 steps" in outs["pt"][1]
    _agree(outs, ["sample_0000.png"])


def test_v1_0_refuses_a_reference(folders):
    p = run("pt", V1_0, "--pipeline-folder", folders["v1_0"], "--save-dir", str(folders["dir"] / "bad"),
            "--prompt", PROMPTS[0], "--image-size", 20, 28, "--num-frames", 3, "--reference-path", folders["image"],
            "--mask-strategy", "0", expect=2)
    assert "text-to-video only" in p.stderr and "Traceback" not in p.stderr


def test_v1_1_config_t2v_and_i2v(folders):
    """The 1.1 release config: any size, size conditioning, IDDPM with cfg_channel 3; a text-to-video prompt and
    an image-to-video prompt (JSON reference in the prompt) in one run."""
    prompts = [PROMPTS[0], PROMPTS[1] + '{"reference_path": "%s", "mask_strategy": "0"}' % folders["image"]]
    out = str(folders["dir"] / "v1_1_t2v")
    p = run("pt", V1_1, "--pipeline-folder", folders["v1_1"], "--save-dir", out, "--prompt", *prompts,
            "--image-size", 24, 32, "--num-frames", 4)
    assert "Open-Sora v1.1" in p.stdout and "2 written" in p.stdout
    a, b = frames(os.path.join(out, "sample_0000.mp4")), frames(os.path.join(out, "sample_0001.mp4"))
    assert a.shape == b.shape == (4, 24, 32, 3) and a.std() > 1.0


def test_v1_1_both_backends_agree(folders):
    outs = _both(folders, "v1_1", V1_1, "--prompt", *PROMPTS, "--image-size", 24, 32, "--num-frames", 1)
    assert "Open-Sora v1.1" in outs["ms"][1]
    _agree(outs, ["sample_0000.png", "sample_0001.png"])
