"""Sequence parallelism (MindSpore switch) against the single-process PyTorch reference: a small model on two
msrun ranks, its tokens split between them, must give every rank the reference's output.

STDiT3-S/2 (1.2: the spatial tokens of every frame split) and the Open-Sora 2.0 MMDiT (MMDiT-S with image
conditioning, Flux-S with guidance: the image tokens split, text replicated), each run by
parity_tests/sp_worker.py under ``msrun --worker_num=2``."""
import os
import subprocess
import time

import numpy as np
import pytest
import torch

import converters
from opensora_dual.registry import build, get_family, resolve
from parity_tests.engine import fill_zero_parameters
from parity_tests.procs import msrun_cmd, msrun_env
from parity_tests.standard import compare, judge
from parity_tests.test_mmdit import randomized

PRESET = "STDiT3-S/2"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKS = 2


def run_sequence_parallel(tmp_path, ref, preset, cases, graph=False):
    """Write ``ref`` (a PyTorch twin) as a release folder, run every ``cases[name] = inputs`` through the
    reference and through the MindSpore twin on RANKS msrun ranks; returns ({name: reference output},
    {name: [rank 0 result, rank 1 result]}) where a rank's result is sp_worker.py's npz."""
    release = tmp_path / "release"
    converters.save_release_folder(ref, "pt", str(release), resolve(preset)[1], preset=preset)
    expected, pairs = {}, []
    for name, inputs in cases.items():
        np.savez(tmp_path / f"{name}.npz", **inputs)
        pairs += [str(tmp_path / f"{name}.npz"), str(tmp_path / f"out-{name}")]
        with torch.no_grad():
            expected[name] = ref(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()

    env = msrun_env()
    cmd = msrun_cmd(RANKS, tmp_path / "msrun_log", os.path.join(ROOT, "parity_tests", "sp_worker.py"), release,
                    *pairs, *(["--graph"] if graph else []))
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted((tmp_path / "msrun_log").glob("*.log")))
    assert run.returncode == 0, f"msrun failed ({run.returncode}):\n{run.stdout[-2000:]}\n{logs}"
    print(f"{preset}: msrun with {RANKS} ranks took {time.perf_counter() - t0:.1f} s")
    return expected, {name: [np.load(tmp_path / f"out-{name}.rank{r}.npz") for r in range(RANKS)] for name in cases}


def assert_matches(got, expected, key="out"):
    metrics = compare(got[key], expected)
    verdict = judge(metrics, "model_small", "fp32")
    assert verdict, verdict.reasons
    return metrics


def test_sequence_parallel_two_ranks_match_reference(tmp_path):
    kw = resolve(PRESET)[1]
    torch.manual_seed(0)
    ref = build(PRESET, "pt").eval()
    fill_zero_parameters(ref)
    # 4 x 6 patches per frame = 24 spatial tokens, 12 per rank; 4 heads, 2 per rank; text and x masks on
    inputs = get_family("stdit3").extra["example_inputs"](kw, np.random.default_rng(0), frames=3, height=8, width=12)
    expected, got = run_sequence_parallel(tmp_path, ref, PRESET, {"stdit3": inputs})
    for rank in range(RANKS):
        out = got["stdit3"][rank]
        assert int(out["sp_size"]) == RANKS
        assert out["tokens"].tolist() == [3 * 24 // 2]  # each rank really held half of every frame's tokens
        assert_matches(out, expected["stdit3"])


# MMDiT: (preset, {case: example_inputs kwargs}, graph). MMDiT-S: separate q/k/v, liger RoPE, i2v cond; Flux-S:
# fused qkv/linear1, adjacent-pair RoPE, guidance. 3 latent frames of 4 x 4 packed tokens = 48 image tokens
# (24 per rank); 3 x 3 x 3 = 27 does not divide by 2 (14 + 13 tokens: the padded exchange). 4 heads, 2 per rank.
MMDIT_CASES = [
    ("MMDiT-S", {"even": dict(frames=3, height=4, width=4), "uneven": dict(frames=3, height=3, width=3)}, True),
    ("Flux-S", {"even": dict(frames=3, height=4, width=4)}, False),
]


@pytest.mark.parametrize("preset,shapes,graph", MMDIT_CASES, ids=[c[0] for c in MMDIT_CASES])
def test_mmdit_sequence_parallel_two_ranks_match_reference(tmp_path, preset, shapes, graph):
    kw = resolve(preset)[1]
    torch.manual_seed(0)
    ref = randomized(lambda: build(preset, "pt"))().eval()  # cond_in and QK-norm scales randomised too
    example = get_family("mmdit").extra["example_inputs"]
    cases = {name: example(kw, np.random.default_rng(i), **shape) for i, (name, shape) in enumerate(shapes.items())}
    assert all(("cond" in c) == kw["cond_embed"] and ("guidance" in c) == kw["guidance_embed"] for c in cases.values())
    expected, got = run_sequence_parallel(tmp_path, ref, preset, cases, graph=graph)
    for name, inputs in cases.items():
        n = inputs["img"].shape[1]
        split = [n // RANKS + (r < n % RANKS) for r in range(RANKS)]
        for rank in range(RANKS):
            out = got[name][rank]
            assert int(out["sp_size"]) == RANKS
            assert out["tokens"].tolist() == [split[rank]]  # the first double block held this rank's share
            metrics = assert_matches(out, expected[name])
            print(f"{preset} {name} rank {rank}: rel_fro {metrics.rel_fro:.2e} max_abs {metrics.max_abs:.2e}")
            if graph:
                assert_matches(out, expected[name], "out_graph")
                np.testing.assert_array_equal(out["out_graph"].shape, out["out"].shape)
        np.testing.assert_array_equal(got[name][0]["out"], got[name][1]["out"])  # every rank has the same output


def test_sequence_parallel_outside_a_job_runs_on_one_rank():
    """Like upstream: sequence parallelism splits only when the job has more than one process."""
    model = build(PRESET, "ms", enable_sequence_parallelism=True)
    assert (model.sp_size, model.sp_rank) == (1, 0)


def test_mmdit_sequence_parallel_outside_a_job_runs_on_one_rank():
    import mindspore as ms

    kw = resolve("MMDiT-S")[1]
    inputs = {k: ms.Tensor(v) for k, v in
              get_family("mmdit").extra["example_inputs"](kw, np.random.default_rng(0), frames=2).items()}
    model = build("MMDiT-S", "ms")
    model.set_train(False)
    before = model(**inputs).asnumpy()
    assert model.set_sequence_parallel() is model
    assert (model.sp_size, model.sp_rank) == (1, 0)
    assert all(b.sp_size == 1 for b in list(model.double_blocks) + list(model.single_blocks))
    np.testing.assert_array_equal(model(**inputs).asnumpy(), before)


def test_mmdit_sequence_parallel_checks_heads_and_tokens():
    from ms_impl.models.mmdit.layers import sp_split

    model = build("MMDiT-S", "ms")  # 4 heads
    with pytest.raises(ValueError, match="num_heads"):
        model.set_sequence_parallel(3, 0)
    assert (model.sp_size, model.sp_rank) == (1, 0)
    assert sp_split(27, 2) == ((14, 13), (0, 14))
    assert sp_split(48, 4) == ((12, 12, 12, 12), (0, 12, 24, 36))
    with pytest.raises(ValueError, match="at least 4 image tokens"):
        sp_split(3, 4)
