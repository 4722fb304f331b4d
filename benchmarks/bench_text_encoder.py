"""Text-encoder benchmark: encoder forward time (MindSpore vs the PyTorch reference) and the conversion of a
synthetic sharded T5-XXL-sized checkpoint (wall time, peak RSS).

    python benchmarks/bench_text_encoder.py [--part encoders|convert|all] [--repeats 5]
        [--src-dtype fp32|fp16|bf16] [--workdir DIR] [--keep] [--json out.json]

Encoders: T5 and CLIP at a small config (T5-S / CLIP-S-text) and a mid-size one (T5 v1.1 base widths:
d_model 768, 12 heads, d_ff 2048, 12 layers; the full CLIP-L/14 text tower), batch 2 at the release lengths
(T5 300 tokens, CLIP 77), random weights copied reference -> port through the converter. Median of
``--repeats`` runs after one warm-up: torch eager (SDPA), MindSpore PyNative, MindSpore ``ms.jit``, MindSpore
PyNative fp16.

Conversion: the release layout of ``google/t5-v1_1-xxl`` (config.json + ``model-0000K-of-0000N.safetensors``
+ ``model.safetensors.index.json``, or ``--src-format bin``: ``pytorch_model-0000K-of-0000N.bin`` + index) with the XXL encoder (24 layers, d_model 4096, d_ff 10240: 4.76 B
parameters, 19 GB in fp32) plus ``encoder.embed_tokens``, ``lm_head`` and the decoder's final norm (the keys an
encoder-only loader must drop), written shard by shard (safetensors: one tensor in memory at a time; .bin: one 2 GB shard); then
``python -m converters convert SRC DST.ckpt`` (MindSpore checkpoint, fp32) in a child process whose peak RSS
is read with ``wait4``. Files are deleted afterwards unless ``--keep``. Numbers only, no pass/fail.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

T5_MID = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
              feed_forward_proj="gated-gelu")


# ------------------------------------------------------------------------------------------ encoders
def _median_time(fn, repeats):
    fn()  # warm-up (and compile for ms.jit)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_encoders(repeats):
    import numpy as np
    import mindspore as ms
    import torch

    import converters
    from ms_impl.layers import set_compute_dtype
    from opensora_dual import registry

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    rows = []
    configs = [("T5-S", "T5-S", {}, 300), ("T5 mid (v1.1-base widths)", "T5-S", T5_MID, 300),
               ("CLIP-S-text", "CLIP-S-text", {}, 77), ("CLIP-L/14 text", "CLIP-L/14-text", {}, 77)]
    for label, preset, overrides, length in configs:
        torch.manual_seed(0)
        pt = registry.build(preset, "pt", **overrides).eval()
        msm = registry.build(preset, "ms", **overrides)
        msm.set_train(False)
        converters.pt_to_ms(pt, msm)
        vocab = pt.config.vocab_size
        rng = np.random.default_rng(0)
        ids = rng.integers(3, vocab - 3, (2, length)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[1, length // 3:] = 0
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        m_ids, m_mask = ms.Tensor(ids), ms.Tensor(mask)

        def run_pt():
            with torch.no_grad():
                pt(t_ids, t_mask)

        def run_ms():
            out = msm(m_ids, m_mask)
            (out[0] if isinstance(out, tuple) else out).asnumpy()

        jitted = ms.jit(msm.construct)

        def run_jit():
            out = jitted(m_ids, m_mask)
            (out[0] if isinstance(out, tuple) else out).asnumpy()

        row = {"config": label, "params_M": round(sum(p.numel() for p in pt.parameters()) / 1e6, 1),
               "tokens": f"2x{length}"}
        row["torch_fp32_s"] = _median_time(run_pt, repeats)
        row["ms_pynative_fp32_s"] = _median_time(run_ms, repeats)
        row["ms_jit_fp32_s"] = _median_time(run_jit, repeats)
        set_compute_dtype(msm, ms.float16)
        row["ms_pynative_fp16_s"] = _median_time(run_ms, repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del pt, msm
    return rows


# ------------------------------------------------------------------------------------------ conversion
def xxl_tensors(layers=24):
    """(name, shape) of the synthetic release file, in the released key order (encoder, then extras)."""
    d, dff, h, vocab = 4096, 10240, 64, 32128
    out = [("shared.weight", (vocab, d)), ("encoder.embed_tokens.weight", (vocab, d))]
    for i in range(layers):
        p = f"encoder.block.{i}.layer"
        out += [(f"{p}.0.SelfAttention.{x}.weight", (d, d)) for x in "qkvo"]
        if i == 0:
            out.append((f"{p}.0.SelfAttention.relative_attention_bias.weight", (32, h)))
        out += [(f"{p}.0.layer_norm.weight", (d,)), (f"{p}.1.DenseReluDense.wi_0.weight", (dff, d)),
                (f"{p}.1.DenseReluDense.wi_1.weight", (dff, d)), (f"{p}.1.DenseReluDense.wo.weight", (d, dff)),
                (f"{p}.1.layer_norm.weight", (d,))]
    out += [("encoder.final_layer_norm.weight", (d,)), ("decoder.final_layer_norm.weight", (d,)),
            ("lm_head.weight", (vocab, d))]
    return out


def write_xxl_release(folder, src_dtype, layers=24, shard_bytes=2 * 1024 ** 3, src_format="safetensors"):
    import numpy as np

    from converters import dtypes
    from converters.st_io import SafetensorsWriter
    from opensora_dual.families.t5 import PRESETS, config_to_json

    st_dtype = {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}[src_dtype]
    item = dtypes.itemsize(st_dtype)
    os.makedirs(folder, exist_ok=True)
    cfg = config_to_json(dict(PRESETS["T5-v1.1-XXL"], num_layers=layers))
    cfg.update(architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True, num_decoder_layers=layers)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shards, cur, size = [], [], 0
    for name, shape in xxl_tensors(layers):
        n = int(np.prod(shape)) * item
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    shards.append(cur)
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(1 << 20).astype(np.float32) * 0.05)   # tiled: cheap, not constant
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        if src_format == "safetensors":
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            w = SafetensorsWriter(os.path.join(folder, fname), [(k, st_dtype, s) for k, s in shard],
                                  {"format": "pt"})
            for k, s in shard:
                a = np.resize(block, int(np.prod(s))).reshape(s)
                raw, _ = dtypes.cast(*dtypes.to_raw(a), st_dtype)
                w.write(k, raw)
                total += raw.nbytes
                weight_map[k] = fname
                del a, raw
            w.close()
        else:  # torch zip pickles: one shard (<= shard_bytes) in memory at a time, as torch.save needs
            import torch

            fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
            tdt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[src_dtype]
            sd = {k: torch.from_numpy(np.resize(block, int(np.prod(s))).reshape(s)).to(tdt) for k, s in shard}
            torch.save(sd, os.path.join(folder, fname))
            total += sum(t.numel() * t.element_size() for t in sd.values())
            weight_map.update({k: fname for k in sd})
            del sd
    index = "model.safetensors.index.json" if src_format == "safetensors" else "pytorch_model.bin.index.json"
    with open(os.path.join(folder, index), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return len(shards), total


def run_child(argv):
    """(wall seconds, peak RSS bytes, returncode, stderr tail) of a child process (``wait4`` rusage)."""
    with tempfile.TemporaryFile() as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        fe.seek(0)
        err = fe.read().decode(errors="replace")[-3000:]
    return wall, ru.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), err


def bench_convert(workdir, src_dtype, keep, layers=24, src_format="safetensors"):
    src = os.path.join(workdir, "t5-v1_1-xxl-synthetic")
    dst = os.path.join(workdir, "t5-v1_1-xxl-encoder.ckpt")
    report = os.path.join(workdir, "report.json")
    params = 0.13e9 + layers * 0.1929e9
    need = params * {"fp32": 4, "fp16": 2, "bf16": 2}[src_dtype] + params * 4 + 1.1e9
    free = shutil.disk_usage(workdir).free
    if free < need * 1.1:
        raise SystemExit(f"{workdir}: {free / 1e9:.0f} GB free, the run needs about {need / 1e9:.0f} GB")
    try:
        t0 = time.perf_counter()
        n_shards, src_bytes = write_xxl_release(src, src_dtype, layers, src_format=src_format)
        t_write = time.perf_counter() - t0
        wall, rss, rc, err = run_child([sys.executable, "-m", "converters", "convert", src, dst, "--no-progress",
                                        "--report", report])
        if rc != 0:
            raise SystemExit(f"conversion failed ({rc}):\n{err}")
        rep = json.load(open(report))
        row = {"source": f"{n_shards} {src_format} shards + index, {src_dtype}", "source_GB": round(src_bytes / 1e9, 2),
               "write_s": round(t_write, 1), "convert_s": round(wall, 1), "peak_rss_GB": round(rss / 1e9, 2),
               "output_GB": round(os.path.getsize(dst) / 1e9, 2), "tensors": rep.get("tensors"),
               "dropped": len(rep.get("dropped", [])), "throughput_GB_s": round(os.path.getsize(dst) / 1e9 / wall, 2)}
        print(json.dumps(row), flush=True)
        return row
    finally:
        if not keep:
            shutil.rmtree(src, ignore_errors=True)
            for p in (dst, report):
                if os.path.exists(p):
                    os.remove(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=["encoders", "convert", "all"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--src-dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--workdir", default=os.path.join(REPO, "outputs", "bench_text_encoder"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--layers", type=int, default=24, help="encoder layers of the synthetic file (24 = XXL)")
    ap.add_argument("--src-format", default="safetensors", choices=["safetensors", "bin"],
                    help="shards as model-*.safetensors or pytorch_model-*.bin (torch zip pickles)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    results = {}
    if args.part in ("encoders", "all"):
        results["encoders"] = bench_encoders(args.repeats)
    if args.part in ("convert", "all"):
        results["convert"] = bench_convert(args.workdir, args.src_dtype, args.keep, args.layers, args.src_format)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
