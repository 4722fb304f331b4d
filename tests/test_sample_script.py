"""scripts/sample.py end to end, as a user runs it (subprocesses), on a small random pipeline folder.

The folder (STDiT3-S/2, OpenSoraVAE_V1_2-S, T5-S + toy tokenizer, zero-initialised layers filled with small
values so that the videos are not blank) is written once per module with the PyTorch reference's
``save_pretrained``; both backends read it. The two MindSpore runs (the slow part: graph compile) start in the
background when the module starts and are checked at the end, while the PyTorch runs go on.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from parity_tests.procs import read_frames as frames
from parity_tests.standard import psnr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "sample.py")
DEMO = os.path.join(ROOT, "configs", "opensora-v1-2", "inference", "demo-small.yaml")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", GLOG_v="3", TOKENIZERS_PARALLELISM="false")
PROMPTS = ["a red car driving on a road at sunset", "a small boat on a quiet river"]
COMMON = ["--config", DEMO, "--verbose", "0", "--seed", "7", "--num-sampling-steps", "2"]
# images from the prompt file's non-blank prompts 1.. (file written by the fixture; dash and underscore spellings,
# a nested key, a name prefix)
T2I = ["--prompt-path", "PROMPTS_FILE", "--start-index", "1", "--num_frames", "1",
       "--scheduler.num_sampling_steps", "1", "--sample-name", "img"]


def cmd(backend, *args):
    return [sys.executable, SCRIPT, "--backend", backend, *COMMON, *[str(a) for a in args]]


def t2i_args(work):
    return [work["prompts"] if a == "PROMPTS_FILE" else a for a in T2I]


def run(backend, *args, expect=0):
    p = subprocess.run(cmd(backend, *args), capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert p.returncode == expect, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p






@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The pipeline folder, a reference image, and the background MindSpore runs (t2v and t2i)."""
    from pt_reference.pipelines.opensora import write_random_pipeline

    d = tmp_path_factory.mktemp("sample_script")
    folder = str(d / "pipe")
    write_random_pipeline(folder, scheduler=dict(num_sampling_steps=2))
    from PIL import Image

    image = str(d / "ref.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    prompts = d / "prompts.txt"      # a blank line: the slice counts non-blank prompts, cache names count lines
    prompts.write_text("zero prompt\n\na red car on a road\na small boat on a river\nthird prompt\n", encoding="utf-8")
    w = dict(dir=d, folder=folder, image=image, prompts=prompts, procs={})
    # the MindSpore runs, in the background: t2v of the first prompt, t2i of prompt 1 of the file
    for name, extra in (("t2v", ["--prompt", *PROMPTS, "--end-index", "1"]), ("t2i", [*T2I, "--end-index", "2"])):
        out = str(d / f"ms_{name}")
        c = cmd("ms", "--pipeline-folder", folder, "--save-dir", out,
                *[prompts if a == "PROMPTS_FILE" else a for a in extra])
        w["procs"][name] = (subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                             cwd=ROOT), out)
    yield w
    for proc, _ in w["procs"].values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def ms_result(work, name):
    proc, out = work["procs"][name]
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"MindSpore {name} run failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    return out, stdout


@pytest.fixture(scope="module")
def pt_t2v(work):
    out = str(work["dir"] / "pt_t2v")
    p = run("pt", "--pipeline-folder", work["folder"], "--prompt", *PROMPTS, "--save-dir", out)
    return out, p.stdout


@pytest.fixture(scope="module")
def pt_t2i(work):
    """Prompts 1 and 2 of the file as images, with command-line overrides of config keys."""
    out = work["dir"] / "pt_t2i"
    p = run("pt", "--pipeline-folder", work["folder"], *t2i_args(work), "--end-index", "3", "--save_dir", out)
    return out, p.stdout


# ---- outputs ------------------------------------------------------------------------------------------------
def test_t2v_writes_videos_and_prompts(pt_t2v):
    out, stdout = pt_t2v
    assert sorted(os.listdir(out)) == ["sample_0000.mp4", "sample_0000.txt", "sample_0001.mp4", "sample_0001.txt"]
    for i, prompt in enumerate(PROMPTS):
        with open(os.path.join(out, f"sample_{i:04d}.txt"), encoding="utf-8") as f:
            assert f.read() == prompt + "\n"
    a, b = frames(os.path.join(out, "sample_0000.mp4")), frames(os.path.join(out, "sample_0001.mp4"))
    assert a.shape == (17, 32, 48, 3) and a.std() > 5           # a video, not a blank frame
    assert psnr(a, b) < 30                                        # two prompts, two different videos
    assert "2 written, 0 skipped" in stdout


def test_rerun_skips_existing_outputs(pt_t2v, work, tmp_path):
    src, _ = pt_t2v
    out = str(tmp_path / "again")
    shutil.copytree(src, out)
    mtimes = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    p = run("pt", "--pipeline-folder", work["folder"], "--prompt", *PROMPTS, "--save-dir", out)
    assert "0 written, 2 skipped" in p.stdout and "loaded" not in p.stdout     # no model work at all
    assert mtimes == {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}


def test_three_stages_resume_gives_the_one_stage_result(work, tmp_path):
    """An interrupted run, resumed with --stages 3: the first sample is kept, the second one is made (text, then
    denoise, then decode) with the noise the complete one-stage run gave it (the skipped sample's draws are
    replayed), so it equals the one-stage result pixel for pixel. Compared on PNGs (one frame, lossless): the
    same frames encoded to H.264 in two runs of the script came out as different bitstreams on this machine
    (decoded up to 63 levels apart), so mp4s cannot show pixel equality."""
    src = str(tmp_path / "complete")
    run("pt", "--pipeline-folder", work["folder"], "--prompt", *PROMPTS, "--num-frames", 1, "--save-dir", src)
    out = str(tmp_path / "resume")
    shutil.copytree(src, out)
    os.remove(os.path.join(out, "sample_0001.png"))
    kept = os.path.getmtime(os.path.join(out, "sample_0000.png"))
    p = run("pt", "--pipeline-folder", work["folder"], "--prompt", *PROMPTS, "--num-frames", 1, "--save-dir", out,
            "--stages", "3")
    assert "stage 1/3" in p.stdout and "1 written, 1 skipped" in p.stdout
    assert os.path.getmtime(os.path.join(out, "sample_0000.png")) == kept
    a, b = frames(os.path.join(out, "sample_0001.png")), frames(os.path.join(src, "sample_0001.png"))
    assert a.std() > 1.0 and np.array_equal(a, b)
    assert sorted(os.listdir(out)) == sorted(os.listdir(src))    # stage files (.text, .latents) cleaned up


def test_text_embeddings_cache_replaces_the_text_encoder(work, tmp_path):
    """A cache of the captions as the pipeline sends them to T5 (score suffix, cleaning) gives the same samples;
    files are named by prompt-file line (blank lines count, as scripts/infer_t5.py names them). Compared on
    one-frame PNGs, pixel for pixel (H.264 encodes of identical frames differ between runs on this machine)."""
    from opensora_dual.pipelines.opensora import process_prompts
    from pt_reference.pipelines.opensora import OpenSoraPipeline

    src = str(tmp_path / "with_t5")
    run("pt", "--pipeline-folder", work["folder"], "--prompt", *PROMPTS, "--num-frames", 1, "--save-dir", src)
    pipe = OpenSoraPipeline.from_pretrained(work["folder"])
    emb, mask = pipe.encode_text(process_prompts(PROMPTS, aes=6.5))
    cache = tmp_path / "emb"
    cache.mkdir()
    for line, j in ((0, 0), (2, 1)):
        np.savez(cache / f"{line:06d}.npz", text_emb=emb[j, 0], mask=mask[j].astype(np.uint8))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n", encoding="utf-8")
    out = str(tmp_path / "cached")
    # no text encoder needed: point it at a folder that does not exist
    run("pt", "--pipeline-folder", work["folder"], "--prompt-path", prompts, "--text-embeddings", cache,
        "--num-frames", 1, "--save-dir", out, "--text-encoder-path", tmp_path / "no-t5")
    for i in range(2):
        name = f"sample_{i:04d}.png"
        a, b = frames(os.path.join(out, name)), frames(os.path.join(src, name))
        assert a.std() > 1.0 and np.array_equal(a, b)
    os.remove(cache / "000002.npz")
    p = run("pt", "--pipeline-folder", work["folder"], "--prompt-path", prompts, "--text-embeddings", cache,
            "--save-dir", str(tmp_path / "cached2"), expect=2)
    assert_one_line_error(p, "000002.npz")


def test_prompt_file_slice_and_command_line_overrides(pt_t2i):
    out, stdout = pt_t2i
    assert sorted(os.listdir(out)) == ["img_0001.png", "img_0001.txt", "img_0002.png", "img_0002.txt"]
    assert (out / "img_0001.txt").read_text(encoding="utf-8") == "a red car on a road\n"
    assert (out / "img_0002.txt").read_text(encoding="utf-8") == "a small boat on a river\n"
    assert frames(str(out / "img_0001.png")).shape == (1, 32, 48, 3)
    assert "1 frames" in stdout and " 1 steps" in stdout        # --num_frames 1, --scheduler.num_sampling_steps 1


def test_print_config_shows_every_kind_of_override(work):
    import yaml

    p = run("pt", "--print-config", "--num-frames", "4s", "--resolution", "480p", "--aspect-ratio", "1:1",
            "--scheduler.num_sampling_steps", "3", "--cfg-scale", "4.5", "--aes", "null", "--camera-motion",
            "pan right", "--model.type", "STDiT3-XL/2", "--align=null", "--prompt-as-path", "--batch_size", "2",
            "--reference-path", "a.png", "null", "--vae.micro_batch_size", "2", "--noise", "torch")
    cfg = yaml.safe_load(p.stdout)
    assert cfg["num_frames"] == "4s" and cfg["resolution"] == "480p" and cfg["aspect_ratio"] == "1:1"
    assert cfg["image_size"] is None              # --resolution on the command line beats the config's image_size
    assert cfg["scheduler"] == {"type": "rflow", "use_timestep_transform": True, "num_sampling_steps": 3,
                                "cfg_scale": 4.5}
    assert cfg["aes"] is None and cfg["camera_motion"] == "pan right" and cfg["align"] is None
    assert cfg["model"]["type"] == "STDiT3-XL/2" and cfg["vae"]["micro_batch_size"] == 2
    assert cfg["prompt_as_path"] is True and cfg["batch_size"] == 2 and cfg["noise"] == "torch"
    assert cfg["reference_path"] == ["a.png", None]
    p = run("pt", "--print-config", "--scheduler.num_sampling_step", "3", expect=2)
    assert_one_line_error(p, "--scheduler.num_sampling_step")


# ---- clear errors -------------------------------------------------------------------------------------------
def assert_one_line_error(p, *needles):
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("sample.py: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _error_cases(work, tmp):
    empty = tmp / "empty.txt"
    empty.write_text("\n   \n", encoding="utf-8")
    bad_model = tmp / "bad_model"
    shutil.copytree(os.path.join(work["folder"], "model"), bad_model)
    with open(bad_model / "config.json") as f:
        config = json.load(f)
    config["depth"] += 1                      # the weights have one block less than the config says
    with open(bad_model / "config.json", "w") as f:
        json.dump(config, f)
    ref = work["image"]
    return {
        "empty prompts file": (["--prompt-path", empty], ["no non-empty prompt"]),
        "missing prompts file": (["--prompt-path", tmp / "nope.txt"], ["prompt file not found"]),
        "unknown resolution": (["--resolution", "999p"], ["unknown resolution '999p'"]),
        "unknown aspect ratio": (["--resolution", "240p", "--aspect-ratio", "7:3"], ["unknown aspect ratio '7:3'"]),
        "mask outside the video": (['--prompt', 'a cat{"reference_path": "%s", "mask_strategy": "0,0,0,9"}' % ref],
                                   ["target_start is outside the video's 5 latent frames"]),
        "missing reference": (["--prompt", 'a cat{"reference_path": "%s", "mask_strategy": "0"}' % (tmp / "x.png")],
                              ["reference file not found", "x.png"]),
        "weights do not match": (["--model-path", bad_model], ["does not match the STDiT3 model", "missing keys"]),
        "missing weights": (["--model-path", tmp / "no_such_model"], ["weights not found", "no_such_model"]),
    }


ERROR_CASES = ["empty prompts file", "missing prompts file", "unknown resolution", "unknown aspect ratio",
               "mask outside the video", "missing reference", "weights do not match", "missing weights"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_clear_one_line_errors(case, work, tmp_path):
    args, needles = _error_cases(work, tmp_path)[case]
    p = run("pt", "--pipeline-folder", work["folder"], "--save-dir", tmp_path / "out", *args, expect=2)
    assert_one_line_error(p, *needles)
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_bf16_refused_on_cpu_mindspore(work, tmp_path):
    p = run("ms", "--pipeline-folder", work["folder"], "--save-dir", tmp_path, "--dtype", "bf16", expect=2)
    assert_one_line_error(p, "bf16 needs Ascend")


# ---- the two backends agree (MindSpore runs started with the module) -------------------------------------------
def test_t2v_pt_and_ms_give_the_same_video(pt_t2v, work):
    out, stdout = ms_result(work, "t2v")
    assert sorted(os.listdir(out)) == ["sample_0000.mp4", "sample_0000.txt"]
    a, b = frames(os.path.join(pt_t2v[0], "sample_0000.mp4")), frames(os.path.join(out, "sample_0000.mp4"))
    assert a.shape == b.shape == (17, 32, 48, 3)
    assert psnr(a, b) > 40, psnr(a, b)
    assert "MindSpore graph compile:" in stdout


def test_t2i_pt_and_ms_give_the_same_image(pt_t2i, work):
    out, _ = ms_result(work, "t2i")
    assert sorted(os.listdir(out)) == ["img_0001.png", "img_0001.txt"]
    a, b = frames(str(pt_t2i[0] / "img_0001.png")), frames(os.path.join(out, "img_0001.png"))
    assert a.shape == b.shape == (1, 32, 48, 3) and a.std() > 5
    assert psnr(a, b) > 40, psnr(a, b)
