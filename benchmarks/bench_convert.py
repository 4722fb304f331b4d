"""Converter benchmark: a synthetic full-size release in upstream's layout -> MindSpore .ckpt.

``--model STDiT3-XL/2`` (default; ``hpcai-tech/OpenSora-STDiT-v3``, ~4.8 GB fp32) and ``--model STDiT2-XL/2``
(``OpenSora-STDiT-v2-stage3``, ~3.1 GB): a folder with config.json + model.safetensors. ``--model STDiT-XL/2``
(``OpenSora-v1-16x256x256.pth``, ~2.9 GB): one flat fp32 ``torch.save`` state dict (no config; the conversion
is given ``--model``), the position tables included as upstream's state dict has them.

Writes the release streaming from the meta-device model's shapes (random data, one tensor in memory at a time;
the .pth: ``torch.save`` of FakeTensors under ``torch.serialization.skip_data`` lays out the zip with empty
storage records, whose offsets a ``map_location="meta"`` load gives, and each tensor's bytes are then
``pwrite`` there; ``--model OpenSora-v2-MMDiT``: a bare ``Open_Sora_v2.safetensors`` as upstream ships it, 11.89B
parameters, 47.6 GB in fp32 / 23.8 GB with ``--dtype bf16``; converted with ``--model``), times a plain file copy of the weights file and the conversion (``python -m converters
convert`` in a child process that reports its own peak RSS, VmHWM), spot-checks the output, prints the numbers
and deletes the big files. Goals: peak RSS <= 1.5 GB, time <= 2x the copy. Numbers only, no pass/fail.

    python benchmarks/bench_convert.py [--workdir DIR] [--model STDiT3-XL/2|STDiT2-XL/2|STDiT-XL/2|OpenSora-v2-MMDiT]
                                       [--dtype fp32|bf16] [--no-cast] [--keep]
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


# family: (release name, layout): "folder" = config.json + model.safetensors, "pth" = a flat torch.save state
# dict, "safetensors" = a bare .safetensors file (no config.json)
RELEASES = {"stdit3": ("OpenSora-STDiT-v3", "folder"), "stdit2": ("OpenSora-STDiT-v2-stage3", "folder"),
            "stdit": ("OpenSora-v1-16x256x256.pth", "pth"), "mmdit": ("Open_Sora_v2.safetensors", "safetensors")}


def release_layout(preset):
    """-> (release name, layout) of the preset's family."""
    from opensora_dual import registry

    fam, _ = registry.resolve(preset)
    return RELEASES.get(fam.name, (fam.name + "-release", "folder"))


def _random(rng, shape):
    import numpy as np

    return rng.random(shape, dtype=np.float32) - np.float32(0.5)


def write_pth(path, spec, rng):
    """A flat fp32 ``torch.save`` state dict, written streaming: the zip layout first (FakeTensors saved under
    ``skip_data``: right-sized empty storage records), then each tensor's bytes ``pwrite`` at the offset a
    ``map_location="meta"`` load reports. One tensor in memory at a time."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    for k, p in spec.params.items():
        if p.dtype != "F32":
            raise ValueError(f"{k}: {p.dtype}; the synthetic .pth is fp32 only")
    with FakeTensorMode():
        sd = {k: torch.empty(tuple(p.shape), dtype=torch.float32) for k, p in spec.params.items()}
    with torch.serialization.skip_data(materialize_fake_tensors=True):
        torch.save(sd, path)
    del sd
    meta = torch.load(path, map_location="meta", weights_only=True)
    last = None
    with open(path, "r+b") as f:
        fd = f.fileno()
        for k, p in spec.params.items():
            t = meta[k]
            off = t.untyped_storage()._checkpoint_offset + t.storage_offset() * 4
            last = (k, _random(rng, p.shape).tobytes())
            buf = memoryview(last[1])
            while buf:
                n = os.pwrite(fd, buf, off)
                buf, off = buf[n:], off + n
        f.flush()
        os.fsync(fd)
    # a real torch file: torch.load (mmap) gives back what was written
    loaded = torch.load(path, mmap=True, weights_only=True)
    if loaded[last[0]].numpy().tobytes() != last[1]:
        raise RuntimeError(f"{path}: torch.load does not give back the written bytes")
    del loaded


def _bf16_bits(a):
    """fp32 ndarray -> bf16 bit patterns (uint16, round to nearest even), as safetensors stores BF16."""
    import numpy as np

    u = a.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def write_release(path, preset, dtype="fp32"):
    """The synthetic release at ``path`` (a folder, the .pth file for STDiT, the bare .safetensors for MMDiT);
    ``dtype`` bf16 writes the floating tensors as BF16 (safetensors layouts only); -> number of tensors."""
    import numpy as np

    from converters.spec import spec_for
    from converters.st_io import SafetensorsWriter
    from opensora_dual import registry

    fam, kwargs = registry.resolve(preset)
    spec = spec_for(fam, kwargs, origin=preset)
    rng = np.random.default_rng(0)
    layout = release_layout(preset)[1]
    if layout == "pth":
        if dtype != "fp32":
            raise ValueError("the synthetic .pth is fp32 only")
        write_pth(path, spec, rng)
        return len(spec.params)
    if layout == "safetensors":
        st = path
    else:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(fam.config_to_json(kwargs), f, indent=2)
        st = os.path.join(path, "model.safetensors")
    bf16 = dtype == "bf16"
    dts = {k: ("BF16" if bf16 and p.dtype == "F32" else p.dtype) for k, p in spec.params.items()}
    w = SafetensorsWriter(st, [(k, dts[k], p.shape) for k, p in spec.params.items()], {"format": "pt"})
    for k, p in spec.params.items():
        a = _random(rng, p.shape)
        w.write(k, _bf16_bits(a) if dts[k] == "BF16" else a.astype(np.float32, copy=False))
    w.close()
    return len(spec.params)


# The child reports its own peak RSS (VmHWM of its post-exec address space) when it exits. ru_maxrss from
# wait4 would be polluted: Linux carries the pre-exec high-water mark (the parent's, ~0.35 GB here with torch
# imported, since subprocess uses vfork) into the child's ru_maxrss.
_HWM = ("import atexit, runpy, sys\n"
        "def _hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            sys.stderr.write('@@VmHWM ' + line.split()[1] + '\\n')\n"
        "atexit.register(_hwm)\n"
        "sys.argv = ['converters'] + sys.argv[1:]\n"
        "runpy.run_module('converters', run_name='__main__')\n")


def run_child(args):
    """Run ``python -m converters *args``; return (wall seconds, peak RSS bytes, returncode, stdout, stderr)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:   # files, not pipes: no deadlock
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", _HWM] + list(args), cwd=REPO, stdout=fo, stderr=fe)
        p.wait()
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
        hwm = [int(l.split()[1]) for l in err.splitlines() if l.startswith("@@VmHWM ")]
        return wall, (hwm[-1] * 1024 if hwm else float("nan")), p.returncode, out, err


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
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="floating dtype of the synthetic release (bf16: half the disk; safetensors layouts only)")
    ap.add_argument("--no-cast", dest="cast", action="store_false",
                    help="skip the second run (--dtype fp16, the read/cast/write path)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir)
    try:
        name, layout = release_layout(args.model)
        folder = os.path.join(work, name)
        t0 = time.perf_counter()
        n = write_release(folder, args.model, args.dtype)
        st = os.path.join(folder, "model.safetensors") if layout == "folder" else folder
        size = os.path.getsize(st)
        kind = {"pth": "flat .pth (torch.save state dict)", "folder": "release folder (config.json + "
                "model.safetensors)", "safetensors": "bare .safetensors (no config.json)"}[layout]
        print(f"synthetic {args.model} {kind} {name}: {n} tensors, {args.dtype}, {size / 1e9:.2f} GB "
              f"(written in {time.perf_counter() - t0:.1f} s; free disk {shutil.disk_usage(work).free / 1e9:.0f} GB)")
        model_arg = ["--model", args.model] if layout != "folder" else []   # no config.json to read
        copies = []

        def copy_once():
            copies.append(timed_copy(st, os.path.join(work, "copy.bin")))
            os.remove(os.path.join(work, "copy.bin"))

        os.environ["OPENSORA_DUAL_CACHE"] = os.path.join(work, "cache")   # start with an empty oracle cache
        copy_once()
        out = os.path.join(work, "model.ckpt")
        rep = os.path.join(work, "report.json")
        runs = []
        for label in ("cold (empty oracle cache: imports torch, builds the meta model)",
                      "warm (oracle cached: no torch import)"):
            wall, rss, code, so, se = run_child(["convert", folder, out, "--no-progress", "--report", rep] + model_arg)
            if code != 0:
                print(f"conversion failed (exit {code}):\n{se}")
                return 1
            runs.append((label, wall, rss, json.load(open(rep))["seconds"]))
            ok, picks = spot_check(folder, out)
            os.remove(out)
            copy_once()
        copies.sort()
        med = copies[len(copies) // 2]
        print(f"plain copy of {size / 1e9:.2f} GB (shutil.copyfile + fsync), {len(copies)} runs: "
              + " / ".join(f"{c:.1f}" for c in copies) + f" s (median {med:.1f} s)")
        for label, wall, rss, inner in runs:
            print(f"convert -> MindSpore .ckpt, {label}:")
            print(f"  {wall:.1f} s wall for the whole child process ({inner:.1f} s inside convert()); "
                  f"ratio to the median copy {wall / med:.2f}x, to the fastest {wall / copies[0]:.2f}x  [goal <= 2x]")
            print(f"  peak RSS of the conversion process: {rss / 1e9:.2f} GB  [goal <= 1.5 GB]")
        print(f"spot check of {len(picks)} tensors + key set: {'identical' if ok else 'MISMATCH'}")
        if args.cast:
            out16 = os.path.join(work, "model_fp16.ckpt")
            wall, rss, code, so, se = run_child(["convert", folder, out16, "--no-progress",
                                                 "--dtype", "fp16"] + model_arg)
            if code != 0:
                print(f"fp16 conversion failed (exit {code}):\n{se}")
                return 1
            print(f"convert with --dtype fp16 (every tensor read, cast and written by Python): {wall:.1f} s wall, "
                  f"peak RSS {rss / 1e9:.2f} GB, output {os.path.getsize(out16) / 1e9:.2f} GB")
            os.remove(out16)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
