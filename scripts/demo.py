"""The main job on a built-in default (``make demo``): the whole converter + parity path on STDiT3-S/2.

1. build the small STDiT3 reference with random weights and write it as an upstream release folder
   (``config.json`` + ``model.safetensors``, the layout of ``hpcai-tech/OpenSora-STDiT-v3``);
2. convert that folder to a MindSpore ``.ckpt`` with the converter CLI (``python -m converters convert``);
3. load the reference from the release folder and the port from the ``.ckpt`` (both ``from_pretrained``,
   strict), run both on the same inputs;
4. write the parity report (``report.md`` + depth plot) under ``outputs/demo/`` and print where it is;
5. the main job: a small random-weight Open-Sora 1.2 pipeline folder, ``scripts/sample.py`` on it with the
   MindSpore port and with the PyTorch reference (two mp4s and a side-by-side mp4 under ``outputs/demo/sampling``);
6. the sampling parity engine on the same prompt (teacher-forced per step, free-running, decoded PSNR/SSIM):
   ``outputs/demo/parity/sampling.md``;
7. a short training run (``scripts/train.py``, ``configs/opensora-v1-2/train/demo-small.yaml``) on a synthetic
   moving-shapes dataset: the loss printed, a checkpoint written, and that checkpoint sampled.

    .venv/bin/python scripts/demo.py [--model STDiT3-S/2] [--out outputs/demo]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import mindspore as ms  # before anything that could import decord
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import converters  # noqa: E402
from opensora_dual.registry import get_family, resolve  # noqa: E402
from parity_tests.engine import fill_zero_parameters, run_case  # noqa: E402
from parity_tests.report import make_case, versions, write_report  # noqa: E402


STEPS = 7


def step(n, text):
    print(f"[{n}/{STEPS}] {text}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="STDiT3-S/2", help="a registered STDiT3 preset")
    ap.add_argument("--out", default=os.path.join(ROOT, "outputs", "demo"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    t0 = time.time()
    family, kwargs = resolve(args.model)
    slug = args.model.replace("/", "")
    release = os.path.join(args.out, f"OpenSora-{slug}-release")
    ckpt = os.path.join(args.out, f"{slug}.ckpt")

    step(1, f"building {args.model} (PyTorch reference, random weights) -> release folder {release}")
    torch.manual_seed(args.seed)
    ref = family.model_class("pt")(**kwargs)
    fill_zero_parameters(ref, seed=args.seed)  # upstream init zeroes some projections: make every weight count
    converters.save_release_folder(ref, "pt", release, kwargs, preset=args.model)

    step(2, f"converting with the CLI: python -m converters convert {release} {ckpt} --to ms-ckpt")
    cmd = [sys.executable, "-m", "converters", "convert", release, ckpt, "--to", "ms-ckpt"]
    subprocess.run(cmd, check=True, cwd=ROOT)

    step(3, "loading the reference from the release folder and the port from the .ckpt (strict), same inputs")
    pt_cls, ms_cls = family.model_class("pt"), family.model_class("ms")
    pt_model = pt_cls.from_pretrained(release).eval()
    port = ms_cls.from_pretrained(ckpt, model=args.model)
    inputs = family.extra["example_inputs"](kwargs, np.random.default_rng(args.seed))
    with torch.no_grad():
        a = pt_model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()
    b = port(**{k: ms.Tensor(v) for k, v in inputs.items()}).asnumpy()
    rel = float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(a.astype(np.float64)))
    print(f"      output {tuple(a.shape)}: rel_fro(port, reference) = {rel:.2e}")

    step(4, "layer-by-layer parity report (the release folder loaded into both twins through the converter)")
    case, meta = make_case(args.model, "fp32", "pynative", args.seed, weights=release)
    result = run_case(case)
    meta["versions"] = versions()
    meta["demo"] = f"release folder {release} converted by the CLI to {ckpt}"
    paths = write_report(result, os.path.join(args.out, "parity"), meta)
    verdict = "PASS" if result.passed else "FAIL"
    print(f"\n{verdict}: {args.model} final rel_fro {result.final.metrics.rel_fro:.2e} "
          f"(ceiling {result.ceiling.describe()}), {len(result.rows)} module calls compared, "
          f"{len(result.failing_rows)} over their ceiling; {time.time() - t0:.0f} s")
    print(f"report: {paths['report']}\nplot:   {paths['plot']}")
    sampling_ok = demo_sampling(args, os.path.join(args.out, "parity"))
    train_ok = demo_training(args)
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    return 0 if (result.passed and sampling_ok and train_ok) else 1


def demo_sampling(args, parity_dir):
    """Steps 5-6: the main job. A small random-weight Open-Sora 1.2 pipeline (STDiT3-S/2, the small video VAE,
    T5-S with a tokenizer trained here) is written as a pipeline folder; ``scripts/sample.py`` turns a prompt
    into an mp4 with each backend; the sampling parity engine compares the two runs (teacher-forced per step
    and free-running) and the numbers land beside the parity report, with a side-by-side mp4."""
    from opensora_dual.inference import read_video, write_side_by_side
    from parity_tests.sampling import SamplingCase, format_sampling_result, run_sampling_case
    from pt_reference.pipelines.opensora import OpenSoraPipeline as PtPipeline, write_random_pipeline
    from ms_impl.pipelines.opensora import OpenSoraPipeline as MsPipeline

    root = os.path.join(args.out, "sampling")
    folder = os.path.join(root, "pipeline")
    config = os.path.join(ROOT, "configs", "opensora-v1-2", "inference", "demo-small.yaml")
    prompt = "a red car driving along a river at sunset"
    step(5, f"sampling with scripts/sample.py (small random-weight pipeline {folder}), both backends")
    if os.path.exists(root):
        shutil.rmtree(root)   # a fresh pipeline and fresh videos on every run
    write_random_pipeline(folder, tokenizer=None, seed=args.seed)
    videos = {}
    for backend in ("ms", "pt"):
        save_dir = os.path.join(root, backend)
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "sample.py"), "--config", config,
               "--pipeline-folder", folder, "--backend", backend, "--prompt", prompt, "--save-dir", save_dir,
               "--seed", str(args.seed), "--sample-name", "demo"]
        t = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT)
        path = os.path.join(save_dir, "demo_0000.mp4")
        videos[backend] = read_video(path)[0]
        print(f"      {backend}: {path} ({videos[backend].shape[0]} frames, {time.time() - t:.0f} s)")
    from opensora_dual.config import load_config   # the scripts' config reader (``_base_`` inheritance)

    cfg = load_config(config)
    side = write_side_by_side(videos["ms"], videos["pt"], os.path.join(root, "side_by_side.mp4"),
                              cfg.get("save_fps", 24))
    print(f"      side by side (MindSpore | PyTorch): {side}")

    step(6, "sampling parity: teacher-forced per step and free-running, same noise (parity_tests.sampling)")
    sched = dict(num_sampling_steps=cfg["scheduler"]["num_sampling_steps"])
    pt = PtPipeline.from_pretrained(folder, scheduler=sched)
    port = MsPipeline.from_pretrained(folder, scheduler=sched)
    case = SamplingCase("demo-t2v", [prompt], dict(image_size=tuple(cfg["image_size"]), num_frames=cfg["num_frames"],
                                                  fps=cfg["fps"], guidance_scale=cfg["scheduler"]["cfg_scale"],
                                                  aes=cfg.get("aes")), seed=args.seed)
    res = run_sampling_case(case, pt, port)
    text = format_sampling_result(res)
    from parity_tests.standard import psnr

    mp4 = psnr(videos["ms"], videos["pt"])
    body = (f"# Sampling parity (demo)\n\nPipeline folder `{folder}` (random weights), prompt {prompt!r}, "
            f"config `{os.path.relpath(config, ROOT)}`.\n\n```\n{text}\n```\n\n"
            f"The two mp4s written by `scripts/sample.py` (h264, after encoding): PSNR {mp4:.2f} dB.\n"
            f"MindSpore graph compile + first step: {port.scheduler.compile_seconds:.1f} s.\n")
    os.makedirs(parity_dir, exist_ok=True)
    out = os.path.join(parity_dir, "sampling.md")
    with open(out, "w") as f:
        f.write(body)
    print(text)
    print(f"      mp4 PSNR MindSpore vs PyTorch {mp4:.2f} dB; sampling report: {out}")
    return res.passed


def demo_training(args, steps=20):
    """Step 7: a short MindSpore training run on a synthetic dataset, then the trained EMA weights sampled."""
    import json

    run_root = os.path.join(args.out, "train")
    run_dir = os.path.join(run_root, "demo-small")
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    step(7, f"training {steps} steps with scripts/train.py (demo-small.yaml, synthetic moving shapes) -> {run_dir}")
    config = os.path.join(ROOT, "configs", "opensora-v1-2", "train", "demo-small.yaml")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", config, "--outputs",
                    run_root, "--max_steps", str(steps), "--ckpt_every", str(steps // 2), "--log_every", "5"],
                   check=True, cwd=ROOT)
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r and "event" not in r]
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    ckpts = sorted((d for d in os.listdir(run_dir) if d.startswith("epoch")),
                   key=lambda d: int(d.rsplit("global_step", 1)[1]))
    ckpt = os.path.join(run_dir, ckpts[-1])
    out = os.path.join(run_root, "samples")
    comp = os.path.join(run_dir, "components")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sample.py"), "--config",
                    os.path.join(ROOT, "configs", "opensora-v1-2", "inference", "sample.yaml"),
                    "--model-path", os.path.join(ckpt, "ema"), "--vae-path", os.path.join(comp, "vae"),
                    "--text-encoder-path", os.path.join(comp, "text_encoder"), "--image-size", "144", "256",
                    "--num-frames", "9", "--num-sampling-steps", "4", "--prompt",
                    "a red square moving left on a blue background", "--save-dir", out, "--sample-name", "trained",
                    "--verbose", "0"], check=True, cwd=ROOT)
    print(f"      loss: mean of the first 5 steps {first:.3f}, of the last 5 {last:.3f} "
          f"({'down' if last < first else 'NOT down'}); log {os.path.join(run_dir, 'log.jsonl')}, "
          f"curve {os.path.join(run_dir, 'loss.png')}")
    print(f"      checkpoint {ckpt} sampled -> {os.path.join(out, 'trained_0000.mp4')}")
    return last < first


if __name__ == "__main__":
    sys.exit(main())
