"""scripts/train.py end to end, as a user runs it (subprocesses): a tiny STDiT3 (STDiT3-S/2 with depth 1) on a
synthetic dataset, with the demo config and command-line overrides.

Shared inputs (built once per module): the synthetic videos and tables, a random OpenSoraVAE_V1_2-S with the demo's
x8 2D part and a random T5-S with a toy tokenizer (release folders), the T5 text cache written by
``scripts/infer_t5.py`` and a latent cache in ``scripts/infer_vae.py``'s format (pooled video frames, so the model
has something to learn). The runs are independent processes; those the selected tests need start together when the
module starts (the compile of the training graph, ~20-40 s a process, is single-threaded), and each test waits for
its own:

- ``main``: 16 steps, live T5 + cached latents, checkpoints every 4, keep 2: loss goes down, log.jsonl + loss.png,
  keep-last, the checkpoint samples with scripts/sample.py and converts to upstream's layout;
- ``chain``: the same settings stopped after 4 steps, resumed and killed (SIGKILL) while the checkpoint of step 8
  is being written (test hook: a sleep inside the write), resumed again from checkpoint 4 to step 8: both loss
  curves equal ``main``'s first 8 steps bit for bit;
- ``nan``: a NaN injected at step 3 (test hook): exit 3, the message names the step, checkpoint 2 intact;
- ``live``: the live VAE (+ cached captions) on a table with a corrupt video, a missing video and a missing
  caption cache: they are skipped and reported, the run goes on;
- ``dp`` (marked ``msrun``): 2 msrun ranks x 2 samples against 1 process x 4 samples, one step.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
SAMPLE = os.path.join(ROOT, "scripts", "sample.py")
DEMO = os.path.join(ROOT, "configs", "opensora-v1-2", "train", "demo-small.yaml")
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", GLOG_v="3", TOKENIZERS_PARALLELISM="false",
           PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
BUCKET = '{"144p": {"9": [1.0, 2]}}'          # 9 frames at 144x256: latents 4 x 3 x 18 x 32
CKPT_RE = re.compile(r"^epoch(\d+)-global_step(\d+)$")
TIMEOUT = 900


# ------------------------------------------------------------------------------------------------ inputs
def _write_csv(path, rows):
    from opensora_dual.data import write_table

    write_table(path, rows, ["path", "text", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps"])
    return str(path)


def _cache_name(root, path):
    return os.path.join(root, os.path.splitext(path.lstrip(os.sep))[0] + ".npz")


def _latent_cache(rows, root):
    """infer_vae.py's format: latent_mean / latent_std [T', 4, h, w] (8x8-pooled RGB + grey, 4 frames per latent
    frame, ~unit scale), fps, ori_size, num_frames."""
    from opensora_dual.inference.references import decode_video_rgb

    for r in rows:
        frames, fps = decode_video_rgb(r["path"])                      # uint8 [T, H, W, 3]
        x = frames.astype(np.float32) / 127.5 - 1.0
        T, H, W, _ = x.shape
        t = -(-T // 4)
        x = np.concatenate([x, np.repeat(x[-1:], t * 4 - T, 0)])
        x = x.reshape(t, 4, H // 8, 8, W // 8, 8, 3).mean(axis=(1, 3, 5))    # [t, h, w, 3]
        lat = np.concatenate([x, x.mean(-1, keepdims=True)], -1).transpose(0, 3, 1, 2) * 2.0
        out = _cache_name(root, r["path"])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        np.savez(out, latent_mean=lat.astype(np.float32), latent_std=np.full_like(lat, 0.05, np.float32),
                 fps=np.float32(fps), ori_size=np.array([H, W], np.int64), num_frames=np.int64(T))


def _components(root):
    """A random OpenSoraVAE_V1_2-S with the demo config's 2D part and a random T5-S + toy tokenizer, as release
    folders; an STDiT3-S/2 (depth 1) init folder whose zero-initialised layers are filled (every parameter then
    gets a gradient at the first step: the data-parallel comparison covers them all)."""
    import shutil

    import mindspore as ms
    import yaml

    import converters
    from opensora_dual import registry
    from opensora_dual.text.toy_tokenizers import build_t5_tokenizer_folder

    ms.set_context(mode=ms.PYNATIVE_MODE)
    with open(DEMO) as f:
        demo = yaml.safe_load(f)
    ms.set_seed(0)
    fam, kw = registry.resolve("OpenSoraVAE_V1_2-S")
    kw.update(vae_2d=demo["vae"]["vae_2d"])
    vae = fam.model_class("ms")(**kw)
    converters.save_release_folder(vae, "ms", os.path.join(root, "vae"), kw, preset="OpenSoraVAE_V1_2-S")
    fam, kw = registry.resolve("T5-S")
    t5 = fam.model_class("ms")(**kw)
    t5dir = os.path.join(root, "t5")
    converters.save_release_folder(t5, "ms", t5dir, kw, preset="T5-S")
    tok = build_t5_tokenizer_folder(os.path.join(root, "tok"), vocab_size=512)
    shutil.copy(os.path.join(tok, "spiece.model"), os.path.join(t5dir, "spiece.model"))
    model = registry.build("STDiT3-S/2", "ms", depth=1)
    rng = np.random.default_rng(0)
    for p in model.get_parameters():
        if not p.asnumpy().any():
            p.set_data(ms.Tensor((rng.standard_normal(tuple(p.shape)) * 0.02).astype(np.float32)))
    _, kw = registry.resolve("STDiT3-S/2")
    kw["depth"] = 1
    converters.save_release_folder(model, "ms", os.path.join(root, "init"), kw, preset="STDiT3-S/2")


# ------------------------------------------------------------------------------------------------ processes
class Proc:
    """A background process; its output goes to a file (read with .out())."""

    def __init__(self, cmd, log, cwd, env=None):
        self.cmd, self.log = [str(c) for c in cmd], log
        self.f = open(log, "w")
        self.p = subprocess.Popen(self.cmd, stdout=self.f, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                  env=dict(ENV, **(env or {})), start_new_session=True)
        self.t0, self.seconds = time.time(), None
        threading.Thread(target=self._time, daemon=True).start()

    def _time(self):
        self.p.wait()
        self.seconds = time.time() - self.t0

    def wait(self, timeout=TIMEOUT):
        rc = self.p.wait(timeout=timeout)
        self.f.close()
        while self.seconds is None:
            time.sleep(0.01)
        return rc

    def out(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, text, timeout=TIMEOUT):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.out():
                return True
            if self.p.poll() is not None:
                return text in self.out()
            time.sleep(0.5)
        return False


def _ok(proc, rc=0):
    got = proc.wait()
    tail = "\n".join(proc.out().splitlines()[-60:])
    assert got == rc, f"exit {got} (expected {rc}) after {proc.seconds:.0f} s: {' '.join(proc.cmd)}\n{tail}"
    return proc


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def curve(run_dir):
    return [(r["step"], r["loss"]) for r in read_log(run_dir) if "loss" in r and "event" not in r]


def checkpoints(run_dir):
    return sorted((int(CKPT_RE.match(n).group(2)), n) for n in os.listdir(run_dir) if CKPT_RE.match(n))


class Runs:
    """The inputs and the background runs of the module."""

    def __init__(self, root, selected):
        self.root = root
        t0 = time.time()
        from opensora_dual.data import make_synthetic_dataset, read_table

        data = os.path.join(root, "data")
        make_synthetic_dataset(data, n_videos=6, n_images=0, sizes=((144, 256),), num_frames=(12,), seed=0,
                               corrupt=1, missing=1)
        rows = read_table(os.path.join(data, "synthetic.csv"))
        good = [r for r in rows if "video_" in r["path"]]
        bad = [r for r in rows if "video_" not in r["path"]]
        self.good = _write_csv(os.path.join(data, "good.csv"), good)
        self.dp_csv = _write_csv(os.path.join(data, "dp.csv"), good[2:6])
        self.live_csv = _write_csv(os.path.join(data, "live.csv"), good[:2] + bad)
        self.all_csv = os.path.join(data, "synthetic.csv")
        self.comp = os.path.join(root, "components")
        _components(self.comp)
        self.latents = os.path.join(root, "latents")
        _latent_cache(good, self.latents)
        self.text_cache = os.path.join(root, "text")
        p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "infer_t5.py"), "--csv", self.all_csv,
                            "--output-dir", self.text_cache, "--weights", os.path.join(self.comp, "t5"),
                            "--max-length", "16", "--no-progress"], capture_output=True, text=True, env=ENV,
                           cwd=root, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        self.missing_caption = _cache_name(self.text_cache, good[1]["path"])
        os.remove(self.missing_caption)                      # the live run must skip good[1]
        self.out = os.path.join(root, "out")
        self.setup_seconds = time.time() - t0
        print(f"inputs ready in {self.setup_seconds:.0f} s")
        self.procs, self.chain_result = {}, None
        if "test_resume_is_exact_after_stop_and_kill" in selected:   # the longest path: three runs in a row
            self.chain = threading.Thread(target=self.run_chain, daemon=True)
            self.chain.start()
        if selected & {"test_loss_goes_down_logs_and_keep_last", "test_resume_is_exact_after_stop_and_kill",
                       "test_checkpoint_samples_and_converts"}:
            self.procs["main"] = self.train("main", "--max_steps", 16)
        if "test_nan_stops_with_message_and_keeps_checkpoint" in selected:
            self.procs["nan"] = self.train("nan", "--max_steps", 6, "--ckpt_every", 2,
                                           env={"OPENSORA_DUAL_TRAIN_TEST_NAN_STEP": "3"})
        if "test_live_vae_skips_and_reports_bad_samples" in selected:
            self.procs["live"] = self.train("live", "--dataset.data_path", self.live_csv, "--latents", "null",
                                            "--text-embeddings", self.text_cache, "--epochs", 1, "--max_steps", "null",
                                            "--bucket_config", '{"144p": {"9": [1.0, 1]}}')
        if "test_data_parallel_two_ranks_equal_one_process" in selected:
            self.start_dp()

    # ---- training commands -----------------------------------------------------------------------------------
    def base_args(self, name):
        return ["--config", DEMO, "--outputs", self.out, "--run_name", name, "--dataset.data_path", self.good,
                "--bucket_config", BUCKET, "--model.depth", 1, "--vae.from_pretrained",
                os.path.join(self.comp, "vae"), "--text_encoder.from_pretrained", os.path.join(self.comp, "t5"),
                "--build_random_components", "false", "--latents", self.latents, "--log_every", 1,
                "--ckpt_every", 4, "--keep-last", 2, "--warmup_steps", 2]

    def train(self, name, *extra, env=None, log=None):
        cmd = [sys.executable, TRAIN, *self.base_args(name), *extra]
        return Proc(cmd, log or os.path.join(self.root, f"{name}.log"), self.root, env)

    def run_chain(self):
        """Stop after 4 steps; resume, get killed inside the write of checkpoint 8; resume from 4 to 8."""
        res = {}
        try:
            run_dir = os.path.join(self.out, "chain")
            p1 = self.train("chain", "--max_steps", 4, log=os.path.join(self.root, "chain1.log"))
            res["rc1"], res["out1"] = p1.wait(), p1.out()
            res["ckpts1"] = checkpoints(run_dir)
            p2 = self.train("chain", "--resume", "--max_steps", 8, log=os.path.join(self.root, "chain2.log"),
                            env={"OPENSORA_DUAL_TRAIN_TEST_CKPT_SLEEP": "8:600"})
            res["hooked"] = p2.wait_for("sleeping 600 s inside the checkpoint write of step 8", timeout=TIMEOUT)
            os.kill(p2.p.pid, signal.SIGKILL)
            res["rc2"], res["out2"] = p2.wait(), p2.out()
            res["after_kill"] = sorted(os.listdir(run_dir))
            res["curve_before_kill"] = curve(run_dir)
            p3 = self.train("chain", "--resume", "auto", "--max_steps", 8, log=os.path.join(self.root, "chain3.log"))
            res["rc3"], res["out3"] = p3.wait(), p3.out()
            res["final"] = sorted(os.listdir(run_dir))
            res["curve"] = curve(run_dir)
            res["seconds"] = p1.seconds + p2.seconds + p3.seconds
        except Exception as e:   # reported by the test
            res["error"] = repr(e)
        self.chain_result = res

    def start_dp(self):
        dp = os.path.join(self.root, "dp")
        os.makedirs(dp, exist_ok=True)
        common = ["--dataset.data_path", self.dp_csv, "--text-embeddings", self.text_cache,
                  "--model.from_pretrained", os.path.join(self.comp, "init"), "--max_steps", 1, "--warmup_steps", 0,
                  "--ckpt_every", 0]
        hook = "OPENSORA_DUAL_TRAIN_TEST_DUMP_GRADS"
        self.procs["dp1"] = self.train("dp_single", *common, "--bucket_config", '{"144p": {"9": [1.0, 4]}}',
                                       log=os.path.join(self.root, "dp_single.log"),
                                       env={hook: os.path.join(dp, "grads_single_")})
        cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", f"--log_dir={os.path.join(dp, 'msrun_log')}", "--join=True",
               "--cluster_time_out=300", TRAIN, *self.base_args("dp_two"), *common,
               "--bucket_config", '{"144p": {"9": [1.0, 2]}}', "--use_parallel", "True"]
        self.procs["dp2"] = Proc(cmd, os.path.join(self.root, "dp_msrun.log"), dp,
                                 env={hook: os.path.join(dp, "grads_two_")})

    def close(self):
        for p in self.procs.values():
            if p.p.poll() is None:
                os.killpg(p.p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    selected = {item.name for item in request.session.items}
    r = Runs(str(tmp_path_factory.mktemp("train")), selected)
    yield r
    r.close()


# ------------------------------------------------------------------------------------------------ tests
def test_loss_goes_down_logs_and_keep_last(runs):
    p = _ok(runs.procs["main"])
    run_dir = os.path.join(runs.out, "main")
    c = curve(run_dir)
    assert [s for s, _ in c] == list(range(1, 17))
    losses = np.array([v for _, v in c])
    first, last = losses[:5].mean(), losses[-5:].mean()
    print(f"main: {p.seconds:.0f} s; loss mean of steps 1-5 {first:.4f}, 12-16 {last:.4f}")
    assert last < 0.9 * first, losses
    recs = [r for r in read_log(run_dir) if "loss" in r and "event" not in r]
    for r in recs:
        assert {"lr", "grad_norm", "step_time", "samples_per_s", "global_batch", "skipped_samples"} <= set(r)
        assert r["global_batch"] == 2 and np.isfinite(r["grad_norm"]) and r["samples_per_s"] > 0
    assert [r["lr"] for r in recs[:3]] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])     # warm-up 2
    assert re.search(r"step 16 \| epoch \d+ \| loss [\d.]+ .*\| lr 1\.000e-03 \| grad_norm [\d.]+ \| [\d.]+ s/step \| "
                     r"[\d.]+ samples/s", p.out())
    # keep-last 2 of the checkpoints at 4, 8, 12, 16; the loss curve beside them
    assert [s for s, _ in checkpoints(run_dir)] == [12, 16]
    with open(os.path.join(run_dir, "loss.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = [r["event"] for r in read_log(run_dir) if "event" in r]
    assert events.count("checkpoint") == 4 and events[0] == "start" and events[-1] == "end"
    last_ckpt = os.path.join(run_dir, checkpoints(run_dir)[-1][1])
    assert {"config.json", "model.ckpt", "ema", "optimizer.ckpt", "state.json"} <= set(os.listdir(last_ckpt))
    with open(os.path.join(last_ckpt, "state.json")) as f:
        state = json.load(f)
    assert state["step"] == 16 and state["sampler"]["seed"] == 42 and state["trainer"]["update_count"] == 16


def test_checkpoint_samples_and_converts(runs):
    _ok(runs.procs["main"])
    run_dir = os.path.join(runs.out, "main")
    ckpt = os.path.join(run_dir, checkpoints(run_dir)[-1][1])
    out = os.path.join(runs.root, "samples")
    t0 = time.time()
    cmd = [sys.executable, SAMPLE, "--config", os.path.join(ROOT, "configs", "opensora-v1-2", "inference",
                                                             "sample.yaml"),
           "--model-path", os.path.join(ckpt, "ema"), "--vae-path", os.path.join(runs.comp, "vae"),
           "--text-encoder-path", os.path.join(runs.comp, "t5"), "--image-size", 144, 256, "--num-frames", 9,
           "--num-sampling-steps", 2, "--prompt", "a red square moving left on a blue background",
           "--save-dir", out, "--verbose", 0]
    p = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, env=ENV, cwd=runs.root, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert os.path.getsize(os.path.join(out, "sample_0000.mp4")) > 1000
    t_sample = time.time() - t0
    # the EMA folder (config.json + model.ckpt) -> upstream's release layout, then strict-loaded by PyTorch
    dst = os.path.join(runs.root, "upstream_release")
    p = subprocess.run([sys.executable, "-m", "converters", "convert", os.path.join(ckpt, "ema"), dst,
                        "--no-progress"], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]
    p = subprocess.run([sys.executable, "-m", "converters", "verify", dst, "--against",
                        os.path.join(ckpt, "ema", "model.ckpt"), "--load", "pt"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert p.returncode == 0 and "bit-identical" in p.stdout and "strict-loaded into the pt model" in p.stdout, \
        p.stdout + p.stderr[-2000:]
    print(f"sample.py {t_sample:.0f} s, convert + verify {time.time() - t0 - t_sample:.0f} s")


def test_nan_stops_with_message_and_keeps_checkpoint(runs):
    p = _ok(runs.procs["nan"], rc=3)
    run_dir = os.path.join(runs.out, "nan")
    out = p.out()
    assert "training diverged at step 3" in out and "the loss is nan" in out, out[-2000:]
    ckpts = checkpoints(run_dir)
    assert [s for s, _ in ckpts] == [2]
    good = os.path.join(run_dir, ckpts[0][1])
    assert f"last good checkpoint is {good}" in out
    with open(os.path.join(good, "state.json")) as f:
        assert json.load(f)["step"] == 2
    import converters

    assert converters.verify(os.path.join(good, "ema"))["tensors"] > 0      # complete and readable
    recs = read_log(run_dir)
    assert recs[-1]["event"] == "diverged" and recs[-1]["step"] == 3
    assert [r["step"] for r in recs if "loss" in r and "event" not in r] == [1, 2]


def test_live_vae_skips_and_reports_bad_samples(runs):
    p = _ok(runs.procs["live"])
    run_dir = os.path.join(runs.out, "live")
    out = p.out()
    assert re.search(r"skipped sample .*corrupt_000\.mp4: unreadable video", out), out[-3000:]
    assert re.search(r"skipped sample .*missing_000\.mp4: file not found", out), out[-3000:]
    assert re.search(r"skipped sample .*video_001\.npz: text embedding cache file missing", out), out[-3000:]
    assert "3 sample(s) skipped in this run" in out
    recs = read_log(run_dir)
    steps = [r for r in recs if "loss" in r and "event" not in r]
    assert len(steps) == 1 and np.isfinite(steps[0]["loss"])           # only video_000 trains
    assert sum(r.get("skipped_samples", 0) for r in recs if r.get("event") == "empty_batch") == 3
    assert [r for r in recs if r.get("event") == "epoch_end"][0]["skipped_samples"] == 3


def test_resume_is_exact_after_stop_and_kill(runs):
    """A run stopped after 4 steps and resumed, killed (SIGKILL) while writing checkpoint 8 and resumed again from
    checkpoint 4: every logged loss equals the uninterrupted run's, bit for bit (same seed, fp32)."""
    _ok(runs.procs["main"])
    reference = curve(os.path.join(runs.out, "main"))[:8]
    runs.chain.join(timeout=TIMEOUT)
    res = runs.chain_result
    assert res is not None and "error" not in res, res
    assert res["rc1"] == 0, res["out1"][-3000:]
    assert [s for s, _ in res["ckpts1"]] == [4]                          # stopped after 4: its checkpoint
    assert res["hooked"], res["out2"][-3000:]
    assert res["rc2"] == -signal.SIGKILL
    assert "resumed from" in res["out2"] and "global_step4" in res["out2"]
    assert res["curve_before_kill"] == reference                         # stopped + resumed: steps 1-8 exact
    # killed inside the write of checkpoint 8: only a hidden temporary; the last complete checkpoint is 4
    assert [int(CKPT_RE.match(n).group(2)) for n in res["after_kill"] if CKPT_RE.match(n)] == [4]
    assert any(n.startswith(".epoch") and n.endswith(".tmp") for n in res["after_kill"]), res["after_kill"]
    assert res["rc3"] == 0, res["out3"][-3000:]
    assert "global_step4" in res["out3"].split("resumed from")[1].splitlines()[0]
    assert "removed interrupted checkpoint writes" in res["out3"]
    assert not any(n.startswith(".") for n in res["final"]), res["final"]
    assert [int(CKPT_RE.match(n).group(2)) for n in res["final"] if CKPT_RE.match(n)] == [4, 8]
    print(f"chain: {res['seconds']:.0f} s; losses {[v for _, v in res['curve']]}")
    assert res["curve"] == reference                                     # killed + resumed: steps 1-8 exact


@pytest.mark.msrun
def test_data_parallel_two_ranks_equal_one_process(runs):
    """2 msrun ranks with 2 samples each against 1 process with the same 4 samples and the same randoms (drawn per
    (seed, step, global sample index)), one step from the same weights. Level model_small, fp32
    (parity_tests/standard.py): the loss, the gradient norm, every parameter's gradient (the averaged one the
    optimizer got; dumped by a test hook) and every updated weight. With upstream's Adam eps (1e-15) the first update
    is lr * sign(g), so elements whose gradient is zero within the gradient ceiling (|g| <= ceiling * rms(g) of the
    tensor; e.g. the key half of kv_linear.bias, see parity_tests/test_train_step.py) have no defined update sign:
    they are left out of the weight comparison (counted), never out of the gradient comparison."""
    import mindspore as ms

    import converters
    from parity_tests.standard import ceiling, compare, judge

    single = _ok(runs.procs["dp1"])
    two = _ok(runs.procs["dp2"])
    print(f"dp: 1 process {single.seconds:.0f} s, msrun 2 ranks {two.seconds:.0f} s")
    a, b = os.path.join(runs.out, "dp_single"), os.path.join(runs.out, "dp_two")
    ra = [r for r in read_log(a) if "loss" in r and "event" not in r]
    rb = [r for r in read_log(b) if "loss" in r and "event" not in r]
    assert len(ra) == len(rb) == 1 and ra[0]["global_batch"] == rb[0]["global_batch"] == 4
    for key in ("loss", "grad_norm"):
        v = judge(compare(np.float64(rb[0][key]), np.float64(ra[0][key])), "model_small", "fp32")
        print(f"{key}: 1 process {ra[0][key]!r}, 2 ranks {rb[0][key]!r}")
        assert v, (key, v.reasons)
    dp = os.path.join(runs.root, "dp")
    ga, gb = dict(np.load(os.path.join(dp, "grads_single_1.npz"))), dict(np.load(os.path.join(dp, "grads_two_1.npz")))
    assert set(ga) == set(gb) and len(ga) > 40
    worst = (0.0, "")
    for k in sorted(ga):
        m = compare(gb[k], ga[k])
        assert judge(m, "model_small", "fp32"), (k, m.rel_fro)
        worst = max(worst, (m.rel_fro, k))
    print(f"gradients of {len(ga)} parameters: worst rel_fro {worst[0]:.2e} ({worst[1]})")
    c = ceiling("model_small", "fp32").rel_fro
    w0 = converters.model_tensors(converters.from_pretrained(None, os.path.join(runs.comp, "init"), "ms"), "ms")
    wa = {k: v.asnumpy() for k, v in ms.load_checkpoint(os.path.join(a, checkpoints(a)[-1][1], "model.ckpt")).items()}
    wb = {k: v.asnumpy() for k, v in ms.load_checkpoint(os.path.join(b, checkpoints(b)[-1][1], "model.ckpt")).items()}
    assert set(wa) == set(wb) == set(w0)
    worst, skipped, zeros = (0.0, ""), 0, 0
    for k in sorted(w0):
        if k not in ga:                                            # frozen: y_embedder, rope.freqs
            assert np.array_equal(wa[k], w0[k]) and np.array_equal(wb[k], w0[k]), k
            continue
        g = ga[k].astype(np.float64)
        keep = ~(np.abs(g) <= c * np.sqrt(np.mean(g * g)))
        skipped += int((~keep).sum())
        zeros += int(((g == 0) & ~keep).sum())
        m = compare(wb[k][keep], wa[k][keep])
        assert judge(m, "model_small", "fp32"), (k, m.rel_fro)
        assert not np.array_equal(wa[k][keep], w0[k][keep]), k     # it moved
        worst = max(worst, (m.rel_fro, k))
    print(f"updated weights: worst rel_fro {worst[0]:.2e} ({worst[1]}); {skipped} unresolved elements left out "
          f"({zeros} of them with an exactly zero reference gradient, e.g. the unused sigma half of final_layer)")


# ------------------------------------------------------------------------------------------------ in process
def _train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pixart_init_maps_spatial_weights_and_keeps_fresh_ones(tmp_path):
    """model.init_from: pixart: a PixArt-style checkpoint (blocks.N, [C, 4, 2, 2] patch weight, 120 caption rows)
    goes through the converter; spatial blocks, patch weight and caption rows come from it, the rest is fresh."""
    import mindspore as ms
    from safetensors.numpy import save_file

    import converters
    from opensora_dual import registry

    ms.set_seed(3)
    src = converters.model_tensors(registry.build("STDiT3-S/2", "ms", depth=1), "ms")
    pa = {}
    for k, v in src.items():
        if k.startswith(("temporal_blocks.", "fps_embedder.")) or k == "rope.freqs" or ".q_norm." in k \
                or ".k_norm." in k:
            continue
        if k.startswith("spatial_blocks."):
            pa["blocks." + k[len("spatial_blocks."):]] = v
        elif k == "x_embedder.proj.weight":
            pa[k] = np.ascontiguousarray(v[:, :, 0])
        elif k == "y_embedder.y_embedding":
            pa[k] = np.random.default_rng(0).standard_normal((120, v.shape[1])).astype(np.float32)
        else:
            pa[k] = v
    pa["pos_embed"] = np.zeros((1, 64, 96), np.float32)
    save_file(pa, str(tmp_path / "PixArt-Sigma-fake.safetensors"))
    train = _train_module()
    cfg, cli, _ = train.effective_config(["--config", DEMO, "--model.depth", "1", "--outputs", str(tmp_path),
                                          "--model.from_pretrained", str(tmp_path / "PixArt-Sigma-fake.safetensors"),
                                          "--model.init_from", "pixart"])
    t = train.Trainer(cfg, cli)
    t.rank, t.world, t.run_dir = 0, 1, str(tmp_path / "run")
    got = converters.model_tensors(t.build_model(), "ms")
    assert "24 fresh" in t.init_note
    assert np.array_equal(got["spatial_blocks.0.mlp.fc2.weight"], pa["blocks.0.mlp.fc2.weight"])
    assert np.array_equal(got["x_embedder.proj.weight"][:, :, 0], pa["x_embedder.proj.weight"])
    assert np.array_equal(got["y_embedder.y_embedding"], pa["y_embedder.y_embedding"][:16])


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    train = _train_module()
    base = ["--config", DEMO, "--outputs", str(tmp_path)]
    for extra, msg in ((["--dtype", "bf16"], "--dtype bf16 needs Ascend"),
                       (["--lr", "fast"], "lr must be a number"),
                       (["--no_such_key", "1"], "unknown option --no_such_key"),
                       (["--parallel_optimizer", "True"], "parallel_optimizer needs --use_parallel True")):
        assert train.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------ 1.0 / 1.1 (IDDPM)
# name -> (config, steps, extra arguments); 2.0 (MMDiT-S, flow matching, synthetic features) on both backends
V2_DEMO = os.path.join(ROOT, "configs", "opensora-v2-0", "train", "demo-small.yaml")
V1_DEMOS = {"v1.0": (os.path.join(ROOT, "configs", "opensora", "train", "demo-small.yaml"), 4, []),
            "v1.1": (os.path.join(ROOT, "configs", "opensora-v1-1", "train", "demo-small.yaml"), 12, []),
            "v2.0-pt": (V2_DEMO, 2, ["--backend", "pt"]),
            "v2.0-ms": (V2_DEMO, 2, ["--backend", "ms"])}


@pytest.fixture(scope="module")
def v1_runs(tmp_path_factory):
    """The 1.0 demo (STDiT-S/2, one fixed size, 4 steps) and the 1.1 demo (STDiT2-S/2, a bucket, frame masks, 12
    steps), IDDPM, random 2D VAE + T5-S built by the run, started together (one core each)."""
    root = tmp_path_factory.mktemp("v1_demos")
    procs = {}
    for name, (cfg, steps, extra) in V1_DEMOS.items():
        log = open(root / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, TRAIN, "--config", cfg, "--outputs", str(root), "--run_name",
                                         name, "--max_steps", str(steps), "--ckpt_every", str(steps),
                                         "--log_every", "1"] + extra, cwd=ROOT, env=ENV, stdout=log,
                                        stderr=subprocess.STDOUT), log)
    out = {}
    for name, (p, log) in procs.items():
        p.wait(timeout=TIMEOUT)
        log.close()
        run = root / name
        recs = [json.loads(line) for line in open(run / "log.jsonl")] if (run / "log.jsonl").exists() else []
        out[name] = dict(rc=p.returncode, run=run, text=(root / f"{name}.log").read_text(),
                         losses=[r["loss"] for r in recs if "loss" in r and "event" not in r])
    return out


def _check_release_checkpoint(run, steps, model_type, want_kwargs):
    """The last checkpoint is a release folder (config.json + weights) that the converter reads into the
    reference family with the trained weights."""
    import converters
    import mindspore as ms

    ckpt = run / f"epoch{[int(m.group(1)) for m in map(CKPT_RE.match, os.listdir(run)) if m][-1]}-global_step{steps}"
    with open(ckpt / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == model_type, cfg
    for k, v in want_kwargs.items():
        assert cfg[k] == v, (k, cfg[k])
    net = converters.from_pretrained(None, str(ckpt), "pt")
    assert type(net).__name__ == model_type
    trained = ms.load_checkpoint(str(ckpt / "model.ckpt"))
    w = "final_layer.linear.weight"
    np.testing.assert_array_equal(net.state_dict()[w].numpy(), trained[w].asnumpy())
    assert (ckpt / "ema" / "config.json").is_file() and (ckpt / "ema" / "model.ckpt").is_file()


def test_v1_0_demo_trains_iddpm_at_its_fixed_size(v1_runs):
    """Open-Sora 1.0: STDiT-S/2 built for the latent of (num_frames 4, image_size 64x64) through the x8 2D VAE
    ([4, 8, 8]), IDDPM, 4 steps: finite losses, a release checkpoint (STDiT config.json) the converter reads."""
    r = v1_runs["v1.0"]
    assert r["rc"] == 0, r["text"][-3000:]
    assert len(r["losses"]) == 4 and np.isfinite(r["losses"]).all(), r["losses"]
    assert "STDiT-S/2" in r["text"]
    _check_release_checkpoint(r["run"], 4, "STDiT", {"input_size": [4, 8, 8], "model_max_length": 16})


def test_v1_1_demo_trains_iddpm_with_masks_and_loss_goes_down(v1_runs):
    """Open-Sora 1.1: STDiT2-S/2 on a 144p bucket (latents 4 x 4 x 18 x 32) with v1.1's mask ratios, IDDPM,
    12 steps at lr 1e-3: finite losses, the mean of the last 4 below the mean of the first 4, a release checkpoint
    (STDiT2 config.json)."""
    r = v1_runs["v1.1"]
    assert r["rc"] == 0, r["text"][-3000:]
    losses = np.array(r["losses"])
    assert len(losses) == 12 and np.isfinite(losses).all(), losses
    print("1.1 demo losses:", np.round(losses, 4))
    assert losses[-4:].mean() < 0.9 * losses[:4].mean(), losses
    _check_release_checkpoint(r["run"], 12, "STDiT2", {"model_max_length": 16})


@pytest.mark.parametrize("backend", ["pt", "ms"])
def test_v2_0_demo_trains_flow_matching_on_both_backends(v1_runs, backend):
    """Open-Sora 2.0: MMDiT-S (cond_in) on synthetic features (pooled-video latents 4 x 3 x 18 x 32, T5 / CLIP
    features, the "" encodings for the dropout), flow matching with upstream's condition types and dropout, 2 steps
    with the PyTorch reference and with the MindSpore port: finite losses, a release checkpoint (MMDiT config.json)
    the converter reads with the trained weights."""
    r = v1_runs[f"v2.0-{backend}"]
    assert r["rc"] == 0, r["text"][-3000:]
    assert len(r["losses"]) == 2 and np.isfinite(r["losses"]).all(), r["losses"]
    assert "MMDiT-S" in r["text"]
    import converters
    import mindspore as ms

    ckpt = r["run"] / "epoch0-global_step2"
    with open(ckpt / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "MMDiT" and cfg["cond_embed"], cfg
    net = converters.from_pretrained(None, str(ckpt), "pt")
    w = "final_layer.linear.weight"
    np.testing.assert_array_equal(net.state_dict()[w].numpy(), ms.load_checkpoint(str(ckpt / "model.ckpt"))[w].asnumpy())
    assert (ckpt / "ema" / "model.ckpt").is_file() and (ckpt / "optimizer.ckpt").is_file()


def test_v1_settings_errors_are_one_line_exit_2(tmp_path, capsys):
    """Objective and family settings: an unknown scheduler.type, frame masks for STDiT (no x_mask), a bucket
    config for 1.0's fixed size, a respaced IDDPM schedule."""
    train = _train_module()
    v10 = ["--config", V1_DEMOS["v1.0"][0], "--outputs", str(tmp_path)]
    v11 = ["--config", V1_DEMOS["v1.1"][0], "--outputs", str(tmp_path)]
    for argv, msg in ((v11 + ["--scheduler.type", "ddim"], "scheduler.type must be rflow or iddpm"),
                      (v10 + ["--mask_ratios", '{"image_head": 0.5}'], "STDiT (Open-Sora 1.0) takes no frame mask"),
                      (v10 + ["--bucket_config", '{"144p": {"4": [1.0, 2]}}'], "trains at one size"),
                      (v11 + ["--scheduler.timestep_respacing", "100"], "unrespaced")):
        assert train.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
