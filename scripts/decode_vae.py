"""Decode cached latents (``scripts/infer_vae.py`` output) back to mp4.

    python scripts/decode_vae.py --latents data/latents [more .npz files or folders] --output-dir out/ \\
        --weights /path/to/OpenSora-VAE-v1.2 [--backend ms|pt] [--dtype fp32|fp16] [--sample-seed 0] [--fps 24]

Each ``.npz`` (``latent_mean``/``latent_std`` [T', C, h, w]) is decoded with the posterior mean, or with
``latent_mean + latent_std * eps`` when ``--sample-seed`` is given, and written as ``<name>.mp4`` (H.264 through
imageio-ffmpeg) under ``--output-dir``, mirroring the folder layout. The number of frames comes from the
file's ``num_frames`` (else ``--num-frames``, else the largest count the latent length allows), the frame rate
from its ``fps`` (else ``--fps``). Files that cannot be read or decoded are reported and skipped.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from infer_vae import load_vae  # noqa: E402


def max_frames(vae, latent_t):
    """Frames a latent of ``latent_t`` frames can decode to (17-frame chunks -> 5 latents; remainder x4)."""
    mfs = getattr(vae, "micro_frame_size", None)
    if not hasattr(vae, "temporal_vae"):
        return latent_t
    tf = vae.temporal_vae.time_downsample_factor
    if mfs is None:
        return latent_t * tf
    per = vae.micro_z_frame_size
    return (latent_t // per) * mfs + (latent_t % per) * tf


def decode(vae, backend, z, num_frames, dtype):
    """z float32 [1, C, T', h, w] -> uint8 frames [T, H, W, 3]."""
    if backend == "pt":
        import torch

        with torch.no_grad():
            t = torch.from_numpy(z).to(torch.float16 if dtype == "fp16" else torch.float32)
            x = vae.decode(t, num_frames=num_frames).float().numpy()
    else:
        import mindspore as ms

        x = vae.decode(ms.Tensor(z.astype(np.float16 if dtype == "fp16" else np.float32)),
                       num_frames=num_frames).asnumpy().astype(np.float32)
    x = np.clip((x[0] + 1.0) * 127.5, 0, 255).round().astype(np.uint8)   # [3, T, H, W]
    return x.transpose(1, 2, 3, 0)


def write_mp4(path, frames, fps):
    import imageio

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.mp4"
    imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", macro_block_size=1)
    os.replace(tmp, path)


def collect(inputs):
    """(npz path, path relative to its root) for every .npz given or found under a given folder."""
    out = []
    for src in inputs:
        if os.path.isdir(src):
            for root, _, files in os.walk(src):
                for f in sorted(files):
                    if f.endswith(".npz"):
                        p = os.path.join(root, f)
                        out.append((p, os.path.relpath(p, src)))
        else:
            out.append((src, os.path.basename(src)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", nargs="+", required=True, help=".npz files or folders of them")
    ap.add_argument("--output-dir", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights")
    src.add_argument("--model")
    ap.add_argument("--backend", choices=("ms", "pt"), default="ms")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    ap.add_argument("--num-frames", type=int)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--sample-seed", type=int, help="sample the posterior with this seed (default: its mean)")
    ap.add_argument("--micro-batch-size", type=int, default=None)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    vae = load_vae(args.backend, args.weights, args.model, args.dtype, args.micro_batch_size)
    files = collect(args.latents)
    done, failed = 0, []
    for path, rel in tqdm(files, desc="decode", unit="video"):
        try:
            with np.load(path) as d:
                mean = d["latent_mean"].astype(np.float32)
                z = mean
                if args.sample_seed is not None:
                    eps = np.random.default_rng(args.sample_seed).standard_normal(mean.shape).astype(np.float32)
                    z = mean + d["latent_std"].astype(np.float32) * eps
                n = int(d["num_frames"]) if "num_frames" in d else (args.num_frames or max_frames(vae, z.shape[0]))
                fps = float(d["fps"]) if "fps" in d else args.fps
            frames = decode(vae, args.backend, z.transpose(1, 0, 2, 3)[None], n, args.dtype)
            write_mp4(os.path.join(args.output_dir, os.path.splitext(rel)[0] + ".mp4"), frames, fps)
            done += 1
        except Exception as e:
            failed.append(path)
            tqdm.write(f"FAILED {path}: {type(e).__name__}: {e}")
    print(f"{done} decoded, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
