"""Cache VAE latents for the videos of a CSV: one ``.npz`` per video.

    python scripts/infer_vae.py --csv data/videos.csv --output-dir data/latents \\
        --weights /path/to/OpenSora-VAE-v1.2 [--backend ms|pt] [--dtype fp32|fp16] [--image-size 256 256] \\
        [--num-frames 51] [--frame-stride 1] [--micro-batch-size 4] [--video-folder ROOT] [--overwrite]

The CSV needs a ``path`` column (absolute, or relative to ``--video-folder``). Each video is read with decord,
optionally resized (shorter side) and centre-cropped to ``--image-size`` (else centre-cropped to a multiple of
the VAE's spatial factor), scaled to [-1, 1] and encoded. The output mirrors the CSV path under
``--output-dir`` with the suffix ``.npz`` and holds (mindone's latent-cache format):

- ``latent_mean``, ``latent_std``: float32 [T', C, h, w] (frame-first). They are the posterior of the model's
  *normalised* latent, i.e. what ``encode`` returns: for the 1.2 pipeline the spatial posterior's mode, x0.18215,
  then the temporal posterior's mean/std, (z - shift) / scale; for a 2D VAE the per-frame posterior x0.18215.
  A training sample is ``latent_mean + latent_std * eps``.
- ``fps`` (float), ``ori_size`` (int [H, W] of the source video), and ``num_frames`` (the number of encoded
  frames, which ``scripts/decode_vae.py`` needs to trim the temporal padding).

Videos already done are skipped (unless ``--overwrite``); a missing, corrupt or too short video is reported and
skipped and the others are written; files are written atomically, so an interrupted run resumes cleanly. The
list of failures goes to ``<output-dir>/failed_videos.csv``. Exit status 0 unless ``--strict`` and a video failed.

``--model`` builds a registered preset with random weights instead of ``--weights`` (tests, demos).
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


# ------------------------------------------------------------------------------------------- the model
def load_vae(backend, weights=None, model=None, dtype="fp32", micro_batch_size=None):
    """A video VAE (``VideoAutoencoderPipeline`` or ``VideoAutoencoderKL``) in ``backend``, eval mode.

    ``weights``: an OpenSora-VAE-v1.2 release folder / converted file (pipeline), or a diffusers AutoencoderKL
    folder / file (wrapped as the 1.0/1.1 ``VideoAutoencoderKL``). ``model``: a registered preset name instead.
    """
    if backend == "ms":
        import mindspore as ms  # before decord can be imported anywhere (shared/mindspore_cpu_notes.md)

        ms.set_context(mode=ms.PYNATIVE_MODE)
    from converters import load_state_into, read_checkpoint
    from converters.families import family_from_config
    from opensora_dual.registry import resolve

    if (weights is None) == (model is None):
        raise SystemExit("give exactly one of --weights or --model")
    ckpt = None
    if weights is not None:
        ckpt = read_checkpoint(weights)
        if ckpt.config is None:
            raise SystemExit(f"{weights}: no config.json; use a release/diffusers folder or a converted folder")
        fam = family_from_config(ckpt.config)
        kwargs = fam.config_from_json(ckpt.config)
    else:
        fam, kwargs = resolve(model)
    pkg = "pt_reference" if backend == "pt" else "ms_impl"
    vae_mod = __import__(f"{pkg}.models.vae.vae", fromlist=["VideoAutoencoderKL"])
    if fam.name == "vae_pipeline":
        vae = fam.model_class(backend)(**kwargs)
        target = vae
    elif fam.name == "vae2d":
        vae = vae_mod.VideoAutoencoderKL(vae_config=kwargs, micro_batch_size=micro_batch_size)
        target = vae.module
    else:
        raise SystemExit(f"{fam.name} is not a video VAE (use an OpenSora VAE v1.2 or a 2D AutoencoderKL)")
    if ckpt is not None:
        load_state_into(target, ckpt, backend, strict=True, family=fam)
        ckpt.close()
    if micro_batch_size is not None:
        (vae.spatial_vae if fam.name == "vae_pipeline" else vae).micro_batch_size = micro_batch_size
    if backend == "pt":
        import torch

        vae = vae.eval().to(torch.float16 if dtype == "fp16" else torch.float32)
    else:
        vae.set_train(False)
        if dtype == "fp16":
            import mindspore as ms
            from ms_impl.layers import set_compute_dtype

            set_compute_dtype(vae, ms.float16)
    return vae


def spatial_factor(vae):
    sp = getattr(vae, "spatial_vae", vae)
    return sp.patch_size[1]


def encode_moments(vae, backend, x, dtype):
    """x: float32 numpy [1, 3, T, H, W] in [-1, 1] -> (mean, std) numpy float32 [1, C, T', h, w]."""
    if backend == "pt":
        import torch

        with torch.no_grad():
            t = torch.from_numpy(x).to(torch.float16 if dtype == "fp16" else torch.float32)
            mean, std = vae.encode_moments(t)
        return mean.float().numpy(), std.float().numpy()
    import mindspore as ms

    t = ms.Tensor(x.astype(np.float16 if dtype == "fp16" else np.float32))
    mean, std = vae.encode_moments(t)
    return mean.asnumpy().astype(np.float32), std.asnumpy().astype(np.float32)


# ------------------------------------------------------------------------------------------- videos
def read_video(path, num_frames=None, frame_stride=1):
    """decord -> (uint8 [T, H, W, 3], fps). Raises on a missing, unreadable or too short file."""
    import decord  # imported late: after mindspore (import order matters, see shared notes)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    if n == 0:
        raise ValueError("no frames")
    idx = list(range(0, n, frame_stride))
    if num_frames is not None:
        if len(idx) < num_frames:
            raise ValueError(f"only {len(idx)} frames at stride {frame_stride}, {num_frames} needed")
        idx = idx[:num_frames]
    frames = vr.get_batch(idx).asnumpy()
    return frames, float(vr.get_avg_fps())


def preprocess(frames, image_size=None, factor=8):
    """uint8 [T, H, W, 3] -> float32 [1, 3, T, h, w] in [-1, 1]: resize the shorter side and centre-crop to
    ``image_size`` (h, w), or centre-crop to multiples of ``factor``."""
    t, h, w, _ = frames.shape
    if image_size is not None:
        from PIL import Image

        th, tw = image_size
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        frames = np.stack([np.asarray(Image.fromarray(f).resize((nw, nh), Image.BICUBIC)) for f in frames])
        h, w = nh, nw
    else:
        th, tw = h - h % factor, w - w % factor
        if th == 0 or tw == 0:
            raise ValueError(f"frame size {h}x{w} is smaller than the VAE's spatial factor {factor}")
    top, left = (h - th) // 2, (w - tw) // 2
    frames = frames[:, top:top + th, left:left + tw]
    x = frames.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)[None])


def output_path(output_dir, video_path, video_folder=""):
    rel = video_path
    if os.path.isabs(rel):
        root = os.path.abspath(video_folder) if video_folder else ""
        rel = os.path.relpath(rel, root) if root and rel.startswith(root + os.sep) else rel.lstrip(os.sep)
    return os.path.join(output_dir, os.path.splitext(rel)[0] + ".npz")


def save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_csv_paths(csv_path):
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise SystemExit(f"{csv_path}: needs a 'path' column (has {reader.fieldnames})")
        return [row["path"] for row in reader]


# ------------------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--output-dir", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="OpenSora-VAE-v1.2 release folder, diffusers AutoencoderKL folder, "
                                       "or converted file")
    src.add_argument("--model", help="registered preset with random weights (e.g. OpenSoraVAE_V1_2-S)")
    ap.add_argument("--backend", choices=("ms", "pt"), default="ms")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    ap.add_argument("--video-folder", default="", help="root for relative CSV paths")
    ap.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--num-frames", type=int, help="encode the first N frames (after the stride); default all")
    ap.add_argument("--frame-stride", type=int, default=1)
    ap.add_argument("--micro-batch-size", type=int, default=None, help="frames per 2D VAE call (default: model's)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any video failed")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    paths = read_csv_paths(args.csv)
    vae = load_vae(args.backend, args.weights, args.model, args.dtype, args.micro_batch_size)
    factor = spatial_factor(vae)
    os.makedirs(args.output_dir, exist_ok=True)
    written, skipped, failed = [], [], []
    t0 = time.time()
    bar = tqdm(paths, desc="encode", unit="video")
    for p in bar:
        out = output_path(args.output_dir, p, args.video_folder)
        if os.path.exists(out) and not args.overwrite:
            skipped.append(p)
            continue
        full = p if os.path.isabs(p) else os.path.join(args.video_folder, p)
        try:
            frames, fps = read_video(full, args.num_frames, args.frame_stride)
            x = preprocess(frames, args.image_size, factor)
            mean, std = encode_moments(vae, args.backend, x, args.dtype)
        except Exception as e:  # one bad video must not stop the run
            failed.append((p, f"{type(e).__name__}: {e}"))
            bar.write(f"FAILED {p}: {type(e).__name__}: {e}")
            continue
        save_npz(out, latent_mean=mean[0].transpose(1, 0, 2, 3), latent_std=std[0].transpose(1, 0, 2, 3),
                 fps=np.float32(fps), ori_size=np.array(frames.shape[1:3], np.int64),
                 num_frames=np.int64(x.shape[2]))
        written.append(p)
    bar.close()
    print(f"done in {time.time() - t0:.1f}s: {len(written)} written, {len(skipped)} skipped (already done), "
          f"{len(failed)} failed")
    fail_csv = os.path.join(args.output_dir, "failed_videos.csv")
    if failed:
        with open(fail_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "error"])
            w.writerows(failed)
        for p, err in failed:
            print(f"  failed: {p}: {err}")
        print(f"failures listed in {fail_csv}")
    elif os.path.exists(fail_csv):
        os.remove(fail_csv)
    summary = dict(written=written, skipped=skipped, failed=[p for p, _ in failed])
    with open(os.path.join(args.output_dir, "infer_vae_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
