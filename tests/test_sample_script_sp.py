"""scripts/sample.py under ``msrun --worker_num=2`` (the MindSpore backend): the diffusion model's tokens split over
the two ranks (sequence parallelism: STDiT3 for 1.2, the MMDiT for 2.0), rank 0 decodes and writes. The one-frame
PNG must match the single-process run of the same backend (the standard's free-running video gate), and only rank
0 writes."""
import os
import subprocess
import sys

import pytest

from parity_tests.procs import msrun_cmd, msrun_env, read_frames
from parity_tests.standard import ceiling, psnr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "sample.py")
V12 = os.path.join(ROOT, "configs", "opensora-v1-2", "inference", "sample.yaml")
V20 = os.path.join(ROOT, "configs", "opensora-v2-0", "inference", "256px.yaml")
ENV = msrun_env(dict(os.environ, HF_HUB_OFFLINE="1", GLOG_v="3", TOKENIZERS_PARALLELISM="false"))


def _png(folder):
    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    return names, [read_frames(os.path.join(folder, n))[0] for n in names]


def _single_and_sp(tmp_path, args):
    single = [sys.executable, SCRIPT, "--backend", "ms", "--save-dir", str(tmp_path / "single"), *args]
    p = subprocess.run(single, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    log = tmp_path / "msrun_log"
    sp = msrun_cmd(2, log, SCRIPT, "--backend", "ms", "--save-dir", tmp_path / "sp", *args)
    p = subprocess.run(sp, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    logs = "".join(f.read_text(errors="replace") for f in sorted(log.glob("*.log")))
    assert p.returncode == 0, f"msrun failed:\n{p.stdout[-2000:]}\n{logs[-4000:]}"
    assert "sequence parallelism over 2 ranks (this is rank 1)" in logs and "rank 1 done" in logs
    (n1, a), (n2, b) = _png(tmp_path / "single"), _png(tmp_path / "sp")
    assert n1 == n2 and n1, (n1, n2)
    floor = ceiling("sampling_free_running", "fp32").psnr
    for x, y in zip(a, b):
        assert x.std() > 1.0 and psnr(x, y) >= floor, psnr(x, y)


@pytest.mark.parametrize("release", ["v1.2", "v2.0"])
def test_sample_script_sequence_parallel_matches_one_process(tmp_path, release):
    if release == "v1.2":
        from pt_reference.pipelines.opensora import write_random_pipeline

        write_random_pipeline(str(tmp_path / "pipe"), scheduler=dict(num_sampling_steps=2))
        args = ["--config", V12, "--image-size", 32, 48]          # STDiT3-S/2: 4 x 6 tokens per frame, 2 heads/rank
    else:
        from pt_reference.pipelines.opensora_v2 import write_random_pipeline

        write_random_pipeline(str(tmp_path / "pipe"))
        args = ["--config", V20, "--image-size", 32, 48, "--num-steps", 2]   # MMDiT-S: 24 image tokens
    args = [str(a) for a in args + ["--pipeline-folder", str(tmp_path / "pipe"), "--prompt", "a red car on a road",
                                    "--num-frames", 1, "--verbose", 0, "--seed", 3]]
    _single_and_sp(tmp_path, args)
