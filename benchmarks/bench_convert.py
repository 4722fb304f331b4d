"""Converter benchmark: a synthetic full-size STDiT3-XL/2 release folder (~4.8 GB fp32) -> MindSpore .ckpt.

Writes the folder streaming from the meta-device model's shapes (random data, one tensor in memory at a time),
times a plain file copy of model.safetensors and the conversion (``python -m converters convert`` in a child
process, whose peak RSS is read from ``wait4``), spot-checks the output, prints the numbers and deletes the
big files. Goals: peak RSS <= 1.5 GB, time <= 2x the copy. Numbers only, no pass/fail.

    python benchmarks/bench_convert.py [--workdir DIR] [--model STDiT3-XL/2] [--keep]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_release(folder, preset):
    import numpy as np

    from converters.spec import spec_for
    from converters.st_io import SafetensorsWriter
    from opensora_dual import registry

    fam, kwargs = registry.resolve(preset)
    spec = spec_for(fam, kwargs, origin=preset)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(fam.config_to_json(kwargs), f, indent=2)
    rng = np.random.default_rng(0)
    w = SafetensorsWriter(os.path.join(folder, "model.safetensors"),
                          [(k, p.dtype, p.shape) for k, p in spec.params.items()], {"format": "pt"})
    for k, p in spec.params.items():
        w.write(k, rng.random(p.shape, dtype=np.float32) - np.float32(0.5))
    w.close()
    return len(spec.params)


def run_child(argv):
    """Run a child process; return (wall seconds, peak RSS bytes, returncode, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_chunks = []
    # wait4 gives the child's own rusage (ru_maxrss in KiB on Linux)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.stdout.read(), p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    out_chunks.append(out)
    return wall, ru.ru_maxrss * 1024, p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def timed_copy(src, dst):
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def spot_check(src_folder, ckpt, n=8):
    import numpy as np

    import converters as C

    a, b = C.read_checkpoint(src_folder), C.read_checkpoint(ckpt)
    keys = a.keys()
    picks = [keys[int(i)] for i in np.linspace(0, len(keys) - 1, n)]
    bad = [k for k in picks if a.get(k).tobytes() != b.get(k).tobytes()]
    same_keys = sorted(a.keys()) == sorted(b.keys())
    return same_keys and not bad, picks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=None, help="where the big files go (default: a temp dir in /tmp)")
    ap.add_argument("--model", default="STDiT3-XL/2")
    ap.add_argument("--keep", action="store_true", help="keep the big files")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir)
    try:
        folder = os.path.join(work, "OpenSora-STDiT-v3")
        t0 = time.perf_counter()
        n = write_release(folder, args.model)
        size = os.path.getsize(os.path.join(folder, "model.safetensors"))
        print(f"synthetic {args.model} release folder: {n} tensors, {size / 1e9:.2f} GB "
              f"(written in {time.perf_counter() - t0:.1f} s)")
        copy1 = timed_copy(os.path.join(folder, "model.safetensors"), os.path.join(work, "copy.bin"))
        os.remove(os.path.join(work, "copy.bin"))
        out = os.path.join(work, "model.ckpt")
        wall, rss, code, so, se = run_child([sys.executable, "-m", "converters", "convert", folder, out,
                                             "--no-progress"])
        if code != 0:
            print(f"conversion failed (exit {code}):\n{se}")
            return 1
        copy2 = timed_copy(os.path.join(folder, "model.safetensors"), os.path.join(work, "copy.bin"))
        os.remove(os.path.join(work, "copy.bin"))
        copy = (copy1 + copy2) / 2
        ok, picks = spot_check(folder, out)
        print(f"plain copy of {size / 1e9:.2f} GB: {copy1:.1f} s / {copy2:.1f} s (mean {copy:.1f} s, "
              f"{size / copy / 1e9:.2f} GB/s)")
        print(f"convert -> MindSpore .ckpt ({os.path.getsize(out) / 1e9:.2f} GB): {wall:.1f} s wall "
              f"(incl. ~imports and meta-model build), ratio to copy {wall / copy:.2f}x  [goal <= 2x]")
        print(f"peak RSS of the conversion process: {rss / 2**30:.2f} GiB ({rss / 1e9:.2f} GB)  [goal <= 1.5 GB]")
        print(f"spot check of {len(picks)} tensors + key set: {'identical' if ok else 'MISMATCH'}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
