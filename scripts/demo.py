"""The main job on a built-in default (``make demo``): the whole converter + parity path on STDiT3-S/2.

1. build the small STDiT3 reference with random weights and write it as an upstream release folder
   (``config.json`` + ``model.safetensors``, the layout of ``hpcai-tech/OpenSora-STDiT-v3``);
2. convert that folder to a MindSpore ``.ckpt`` with the converter CLI (``python -m converters convert``);
3. load the reference from the release folder and the port from the ``.ckpt`` (both ``from_pretrained``,
   strict), run both on the same inputs;
4. write the parity report (``report.md`` + depth plot) under ``outputs/demo/`` and print where it is.

    .venv/bin/python scripts/demo.py [--model STDiT3-S/2] [--out outputs/demo]
"""
import argparse
import os
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


def step(n, text):
    print(f"[{n}/4] {text}", flush=True)


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
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
