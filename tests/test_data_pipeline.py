"""opensora_dual.data: buckets, the bucket batch sampler, training masks, the dataset, the skipping loader, the
synthetic generator and the info tool, against upstream v1.2's behaviour (shared/opensora_facts.md sections 5, 7,
8; upstream ``opensora/datasets/{bucket,sampler,datasets,utils}.py``, ``opensora/utils/train_utils.py``,
``tools/datasets/datautil.py``). Expected bucket ids are worked out by hand from upstream's rules; where a draw
decides, the draw is computed here with numpy directly (``default_rng(seed + id).random()``), not with our code.
"""
import csv
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from opensora_dual.data import (MASK_NAMES, MASK_RATIOS_V1_1, MASK_RATIOS_V1_2_STAGE1, MASK_RATIOS_V1_2_STAGE2,
                                MASK_RATIOS_V1_2_STAGE3, Bucket, CorruptSampleError, DataError, MaskGenerator,
                                SkippingLoader, VariableVideoBatchSampler, VariableVideoTextDataset,
                                make_synthetic_dataset, probe_media, read_table, run_info, temporal_crop_indices)
from opensora_dual.inference import read_reference, read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def u(seed, n=1):
    """The first n draws of np.random.default_rng(seed) -- upstream's bucket generator."""
    rng = np.random.default_rng(seed)
    return [rng.random() for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# package hygiene


def test_package_imports_no_framework_and_no_heavy_io_at_import():
    code = ("import sys, opensora_dual.data; "
            "print([m for m in ('torch', 'mindspore', 'pt_reference', 'ms_impl', 'parity_tests', 'PIL', 'av', "
            "'pandas', 'tqdm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# Bucket: upstream's get_bucket_id


def test_pixel_rule_is_0_8_of_the_resolution_and_largest_first():
    cfg = {"144p": {1: (1.0, 8), 51: (1.0, 4)}, "240p": {1: (1.0, 4), 51: (1.0, 2)}}
    b = Bucket(cfg)
    assert list(b.bucket_probs) == ["240p", "144p"]  # tried largest first, whatever the config's order
    # 240p has 102240 pixels: 0.8 * 102240 = 81792. 240 * 340 = 81600 is below, 240 * 341 = 81840 is not.
    assert b.get_bucket_id(60, 240, 340) == ("144p", 51, "0.67")  # 240/340 = 0.706: 0.67 is nearer than 0.75
    assert b.get_bucket_id(60, 240, 341) == ("240p", 51, "0.67")
    assert b.get_bucket_id(1, 240, 426) == ("240p", 1, "0.56")
    assert b.get_bucket_id(60, 426, 240) == ("240p", 51, "1.78")
    # 144p has 36864 pixels: 0.8 * 36864 = 29491.2; 171 * 172 = 29412 fits nothing
    assert b.get_bucket_id(60, 171, 172) is None
    assert b.get_bucket_id(60, 172, 172) == ("144p", 51, "1.00")
    assert b.get_thw(("240p", 51, "0.56")) == (51, 240, 426)
    assert b.get_batch_size(("144p", 1, "1.00")) == 8


def test_frame_test_is_strict_and_uses_frame_interval():
    b = Bucket({"144p": {1: (1.0, 8), 51: (1.0, 4), 102: (1.0, 2)}})
    assert b.get_bucket_id(51, 144, 256) is None  # 51 > 51 is false: a 51-frame video never fits the 51 bucket
    assert b.get_bucket_id(52, 144, 256) == ("144p", 51, "0.56")
    assert b.get_bucket_id(102, 144, 256) == ("144p", 51, "0.56")
    assert b.get_bucket_id(103, 144, 256) == ("144p", 102, "0.56")
    # frame_interval 2: a bucket of t frames needs T > 2t source frames
    assert b.get_bucket_id(103, 144, 256, frame_interval=2) == ("144p", 51, "0.56")
    assert b.get_bucket_id(102, 144, 256, frame_interval=2) is None
    assert b.get_bucket_id(205, 144, 256, frame_interval=2) == ("144p", 102, "0.56")
    # a video never takes the image bucket, an image never a video bucket
    assert Bucket({"144p": {1: (1.0, 8)}}).get_bucket_id(30, 144, 256) is None
    assert Bucket({"144p": {51: (1.0, 8)}}).get_bucket_id(1, 144, 256) is None


def test_bucket_ids_and_count_follow_upstream_numbering():
    b = Bucket({"144p": {51: (1.0, 4), 1: (1.0, 8)}, "240p": {102: (0.0, None), 51: (0.5, 2), 1: (1.0, 4)}})
    # (resolution, t) pairs numbered in order: resolutions by pixels descending, frame buckets descending
    assert {k: dict(v) for k, v in b.bucket_id.items()} == {"240p": {102: 0, 51: 1, 1: 2}, "144p": {51: 3, 1: 4}}
    assert b.num_bucket == len(b) == 5 * 17  # every (resolution, t, ratio) triple counts


def test_number_keep_prob_uses_the_first_draw_and_falls_to_the_next_resolution():
    b = Bucket({"240p": {51: (0.5, 2)}, "144p": {51: (1.0, 4)}})  # ids: (240p, 51) = 0, (144p, 51) = 1
    seen = set()
    for seed in range(40):
        expected = "240p" if u(seed)[0] < 0.5 else "144p"
        got = b.get_bucket_id(60, 240, 426, seed=seed)
        assert got == (expected, 51, "0.56"), seed
        seen.add(expected)
    assert seen == {"240p", "144p"}


def test_tuple_keep_prob_gates_then_keeps_with_the_second_draw():
    # (240p, 51) = id 0 with (p_res, p_time) = (0.5, 0.5); (240p, 1) = id 1; (144p, 51) = id 2 always keeps
    b = Bucket({"240p": {51: ((0.5, 0.5), 2), 1: (1.0, 4)}, "144p": {51: (1.0, 4)}})
    cases = {"gate closed": None, "kept": None, "gate open, keep failed": None}
    for seed in range(200):
        g, k = u(seed, 2)
        case = "gate closed" if g > 0.5 else ("kept" if k < 0.5 else "gate open, keep failed")
        cases[case] = cases[case] if cases[case] is not None else seed
    assert all(s is not None for s in cases.values()), cases
    assert b.get_bucket_id(60, 240, 426, seed=cases["gate closed"]) == ("144p", 51, "0.56")
    assert b.get_bucket_id(60, 240, 426, seed=cases["kept"]) == ("240p", 51, "0.56")
    # the keep test is the 2nd draw: here the 1st draw (<= 0.5) alone would have kept it
    assert u(cases["gate open, keep failed"])[0] <= 0.5
    assert b.get_bucket_id(60, 240, 426, seed=cases["gate open, keep failed"]) == ("144p", 51, "0.56")
    # lists work like tuples (YAML / JSON configs); upstream v1.2 would compare a float with a list and crash
    b_list = Bucket({"240p": {51: [[0.5, 0.5], 2], 1: [1.0, 4]}, "144p": {51: [1.0, 4]}})
    for seed in cases.values():
        assert b_list.get_bucket_id(60, 240, 426, seed=seed) == b.get_bucket_id(60, 240, 426, seed=seed)


def test_image_keep_prob_is_one_draw_of_its_own_generator():
    b = Bucket({"240p": {1: (0.5, 4), 51: (1.0, 2)}, "144p": {1: (1.0, 8)}})  # (240p, 51) = 0, (240p, 1) = 1
    for seed in range(20):
        expected = "240p" if u(seed + 1)[0] < 0.5 else "144p"
        assert b.get_bucket_id(1, 240, 426, seed=seed) == (expected, 1, "0.56")
    # an image with no image bucket at its resolution goes down to the next one that has one
    b2 = Bucket({"240p": {51: (1.0, 2)}, "144p": {1: (1.0, 4)}})
    assert b2.get_bucket_id(1, 240, 426) == ("144p", 1, "0.56")


def test_disabled_bucket_still_catches_the_videos_it_is_the_largest_fit_for():
    b = Bucket({"240p": {102: (0.0, None), 51: (1.0, 2)}, "144p": {102: (1.0, 1), 51: (1.0, 4)}})
    # 150 frames: (240p, 102) is the largest fit, its keep test fails, so the NEXT RESOLUTION is tried,
    # not (240p, 51)
    assert all(b.get_bucket_id(150, 240, 426, seed=s) == ("144p", 102, "0.56") for s in range(10))
    assert b.get_bucket_id(60, 240, 426) == ("240p", 51, "0.56")
    assert Bucket({"240p": {51: (0.0, None)}}).get_bucket_id(60, 240, 426) is None


@pytest.mark.parametrize("cfg, message", [
    ({"999p": {1: (1.0, 1)}}, "unknown resolution"),
    ({"240p": {51: (0.5, None)}}, "no batch size"),
    ({"240p": {51: (1.5, 2)}}, "[0, 1]"),
    ({"240p": {51: ((0.5,), 2)}}, "(p_res, p_time)"),
    ({"240p": {51: (0.5, -2)}}, "batch size"),
    ({"240p": {0: (0.5, 2)}}, "integers >= 1"),
    ({"240p": {51: 0.5}}, "(keep_prob, batch_size)"),
    ({}, "non-empty"),
])
def test_bad_bucket_configs_raise_one_clear_error(cfg, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Bucket(cfg)


def test_json_style_string_frame_keys_are_numbers():
    assert Bucket({"144p": {"51": [1.0, 4]}}).get_bucket_id(60, 144, 256) == ("144p", 51, "0.56")


# ---------------------------------------------------------------------------------------------------------------
# VariableVideoBatchSampler

CFG = {"240p": {1: (1.0, 3), 51: (0.5, 2), 102: (1.0, 2)}, "144p": {1: (1.0, 4), 51: (1.0, 3)}}


def _rows(n=60, seed=0):
    """(T, H, W) of a mixed table: images and videos of several sizes."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 426), (426, 240), (240, 320), (144, 256), (256, 144), (200, 200)]
    rows = []
    for _ in range(n):
        h, w = sizes[int(rng.integers(len(sizes)))]
        t = 1 if rng.random() < 0.3 else int(rng.integers(40, 140))
        rows.append((t, h, w))
    return rows


def _batches(sampler):
    return [list(b) for b in sampler]


def test_sampler_uses_upstream_per_row_seeds():
    rows = _rows()
    sampler = VariableVideoBatchSampler(rows, CFG, seed=7)
    sampler.set_epoch(3)
    b = sampler.bucket
    groups = sampler.group_by_bucket()
    assigned = {i: bid for bid, members in groups.items() for i in members}
    for i, (t, h, w) in enumerate(rows):
        # upstream: seed = sampler seed + epoch + row id * num_bucket, then + the (resolution, t) id
        assert assigned.get(i) == b.get_bucket_id(t, h, w, 1, 7 + 3 + i * b.num_bucket), i
    # and the (240p, 51) keep test (p = 0.5, id 1) is decided by that seed's first draw: some rows go down to 144p
    wide = [i for i, (t, h, w) in enumerate(rows) if (h, w) == (240, 426) and 51 < t <= 102]
    assert wide
    for i in wide:
        kept = u(7 + 3 + i * b.num_bucket + 1)[0] < 0.5
        assert assigned[i][:2] == (("240p", 51) if kept else ("144p", 51)), i


def test_sampler_batches_share_a_bucket_are_full_and_cover_every_row():
    rows = _rows()
    sampler = VariableVideoBatchSampler(rows, CFG, seed=1)
    groups = sampler.group_by_bucket()
    bucket_of = {i: bid for bid, members in groups.items() for i in members}
    batches = _batches(sampler)
    assert len(batches) == len(sampler) == sampler.num_batches() > 0
    for batch in batches:
        (t, h, w), = {item[1:] for item in batch}
        bids = {bucket_of[item[0]] for item in batch}
        assert len(bids) == 1
        bid = bids.pop()
        assert sampler.bucket.get_thw(bid) == (t, h, w)
        assert len(batch) == sampler.bucket.get_batch_size(bid)
    assert {item[0] for batch in batches for item in batch} == set(bucket_of)
    # drop_last: only whole batches of distinct rows
    dropped = _batches(VariableVideoBatchSampler(rows, CFG, seed=1, drop_last=True))
    flat = [item[0] for batch in dropped for item in batch]
    assert len(flat) == len(set(flat)) and len(dropped) <= len(batches)


def test_sampler_is_deterministic_per_seed_and_epoch():
    rows = _rows()
    a = VariableVideoBatchSampler(rows, CFG, seed=5)
    b = VariableVideoBatchSampler(rows, CFG, seed=5)
    assert _batches(a) == _batches(b)
    a.set_epoch(1)
    epoch1 = _batches(a)
    assert epoch1 != _batches(b)  # another epoch, another order (and other keep draws)
    b.set_epoch(1)
    assert _batches(b) == epoch1
    assert _batches(VariableVideoBatchSampler(rows, CFG, seed=6)) != _batches(VariableVideoBatchSampler(rows, CFG,
                                                                                                       seed=5))
    unshuffled = VariableVideoBatchSampler(rows, CFG, seed=5, shuffle=False)
    assert _batches(unshuffled) == _batches(VariableVideoBatchSampler(rows, CFG, seed=5, shuffle=False))


def test_two_ranks_split_the_single_process_batches():
    rows = _rows(80)
    single = _batches(VariableVideoBatchSampler(rows, CFG, seed=3))
    if len(single) % 2:  # make the count even so that no padding is involved
        rows = rows[:-1]
        single = _batches(VariableVideoBatchSampler(rows, CFG, seed=3))
    assert len(single) % 2 == 0 and len(single) >= 6
    r0 = _batches(VariableVideoBatchSampler(rows, CFG, num_replicas=2, rank=0, seed=3))
    r1 = _batches(VariableVideoBatchSampler(rows, CFG, num_replicas=2, rank=1, seed=3))
    assert r0 == single[0::2] and r1 == single[1::2]
    key = lambda b: tuple(b)  # noqa: E731
    assert not {key(b) for b in r0} & {key(b) for b in r1}  # disjoint
    assert sorted(map(key, r0 + r1)) == sorted(map(key, single))  # union = single process


def test_uneven_batch_count_pads_ranks_with_full_batches():
    rows = [(60, 144, 256)] * 9  # one bucket, batch size 3: three batches for four ranks
    cfg = {"144p": {51: (1.0, 3)}}
    per_rank = [_batches(VariableVideoBatchSampler(rows, cfg, num_replicas=4, rank=r, seed=0)) for r in range(4)]
    assert [len(b) for b in per_rank] == [1, 1, 1, 1]
    # upstream gives the padded access an empty slice; here it re-reads the bucket from its start
    assert all(len(b[0]) == 3 for b in per_rank)
    assert per_rank[3][0] == per_rank[0][0]
    assert all(len(b) == 0 for b in (_batches(VariableVideoBatchSampler(rows, cfg, num_replicas=4, rank=r,
                                                                         drop_last=True)) for r in range(4)))
    # a bucket smaller than its batch size is padded cyclically (upstream's rows + rows[:k] stays short)
    one = _batches(VariableVideoBatchSampler([(60, 144, 256)], {"144p": {51: (1.0, 3)}}))
    assert one == [[(0, 51, 144, 256)] * 3]


def test_resume_from_state_dict_mid_epoch():
    rows = _rows(70)
    full = _batches(VariableVideoBatchSampler(rows, CFG, seed=11))
    assert len(full) >= 6
    sampler = VariableVideoBatchSampler(rows, CFG, seed=11)
    sampler.set_epoch(0)
    it = iter(sampler)
    first = [next(it) for _ in range(4)]
    state = sampler.state_dict()
    assert state == {"seed": 11, "epoch": 0, "last_micro_batch_access_index": 4}
    resumed = VariableVideoBatchSampler(rows, CFG, seed=0)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert first + _batches(resumed) == full
    assert resumed.batches_done == 0  # the epoch was exhausted: back to its start
    # two ranks: the state counts accesses of all ranks; each rank resumes where it stopped
    r1 = VariableVideoBatchSampler(rows, CFG, num_replicas=2, rank=1, seed=11)
    r1.set_epoch(2)
    all_r1 = _batches(r1)
    it = iter(r1)
    next(it), next(it)
    state = r1.state_dict()
    assert state["epoch"] == 2 and state["last_micro_batch_access_index"] == 4
    again = VariableVideoBatchSampler(rows, CFG, num_replicas=2, rank=1)
    again.load_state_dict(state)
    assert _batches(again) == all_r1[2:]
    # upstream's state_dict(num_steps) form
    assert r1.state_dict(num_steps=3)["last_micro_batch_access_index"] == 6
    with pytest.raises(DataError, match="keys"):
        again.load_state_dict({"epoch": 1})


def test_sampler_rejects_bad_arguments():
    with pytest.raises(DataError, match="rank"):
        VariableVideoBatchSampler(_rows(4), CFG, num_replicas=2, rank=2)
    with pytest.raises(DataError, match="num_replicas"):
        VariableVideoBatchSampler(_rows(4), CFG, num_replicas=0)


# ---------------------------------------------------------------------------------------------------------------
# MaskGenerator


def test_mask_presets_have_upstream_numbers():
    assert MASK_RATIOS_V1_2_STAGE2 == MASK_RATIOS_V1_2_STAGE1
    assert dict(MASK_RATIOS_V1_2_STAGE1) == {
        "random": 0.05, "intepolate": 0.005, "quarter_random": 0.005, "quarter_head": 0.005, "quarter_tail": 0.005,
        "quarter_head_tail": 0.005, "image_random": 0.025, "image_head": 0.05, "image_tail": 0.025,
        "image_head_tail": 0.025}
    assert dict(MASK_RATIOS_V1_2_STAGE3) == {
        "random": 0.01, "intepolate": 0.002, "quarter_random": 0.002, "quarter_head": 0.002, "quarter_tail": 0.002,
        "quarter_head_tail": 0.002, "image_random": 0.0, "image_head": 0.22, "image_tail": 0.005,
        "image_head_tail": 0.005}
    assert dict(MASK_RATIOS_V1_1) == {
        "identity": 0.75, "quarter_random": 0.025, "quarter_head": 0.025, "quarter_tail": 0.025,
        "quarter_head_tail": 0.05, "image_random": 0.025, "image_head": 0.025, "image_tail": 0.025,
        "image_head_tail": 0.05}
    assert MaskGenerator(MASK_RATIOS_V1_2_STAGE1).mask_ratios["identity"] == pytest.approx(0.80)
    assert MaskGenerator(MASK_RATIOS_V1_2_STAGE3).mask_ratios["identity"] == pytest.approx(0.75)
    assert MaskGenerator(MASK_RATIOS_V1_1).mask_ratios["identity"] == 0.75
    with pytest.raises(TypeError):
        MASK_RATIOS_V1_2_STAGE1["random"] = 0.5  # presets are read-only


@pytest.mark.parametrize("ratios, message", [
    ({"mask_random": 0.1}, "unknown mask name"),
    ({"random": -0.1}, r"\[0, 1\]"),
    ({"random": 1.2}, r"\[0, 1\]"),
    ({"random": 0.7, "image_head": 0.5}, "sum to"),  # upstream accepts it with identity = -0.2
    ({"identity": 0.5, "random": 0.3}, "sum to 1"),
    ({"random": float("nan")}, "number"),
    ({}, "non-empty"),
])
def test_mask_ratio_validation(ratios, message):
    with pytest.raises(DataError, match=message):
        MaskGenerator(ratios)


def test_mask_generator_copies_its_input():
    ratios = {"random": 0.2}
    MaskGenerator(ratios)
    assert ratios == {"random": 0.2}  # upstream adds "identity" to the caller's dict


@pytest.mark.parametrize("preset", [MASK_RATIOS_V1_2_STAGE1, MASK_RATIOS_V1_2_STAGE3, MASK_RATIOS_V1_1])
def test_mask_name_frequencies(preset):
    """N = 20000 draws from default_rng(0). A name of probability p is drawn Binomial(N, p) times: mean N p,
    std sqrt(N p (1 - p)). Tolerance: 5 std (two-sided chance of a false failure < 1e-6 per name), plus 0.5 for
    the integer count; p = 0 must never be drawn."""
    gen = MaskGenerator(preset)
    rng = np.random.default_rng(0)
    n = 20000
    counts = dict.fromkeys(MASK_NAMES, 0)
    for _ in range(n):
        counts[gen.draw_name(rng)] += 1
    for name in MASK_NAMES:
        p = gen.mask_ratios.get(name, 0.0)
        std = (n * p * (1 - p)) ** 0.5
        assert abs(counts[name] - n * p) <= 5 * std + 0.5, (name, counts[name], n * p, std)


def test_mask_shapes_per_name():
    gen = MaskGenerator({"random": 0.1})
    rng = np.random.default_rng(1)
    T = 16  # q = T // 4 = 4 conditioning frames at most for the quarter masks
    for _ in range(200):
        m = gen.mask_for("identity", T, rng)
        assert m.dtype == bool and m.shape == (T,) and m.all()
        m = gen.mask_for("image_head", T, rng)
        assert not m[0] and m[1:].all()
        m = gen.mask_for("image_tail", T, rng)
        assert not m[-1] and m[:-1].all()
        m = gen.mask_for("image_head_tail", T, rng)
        assert not m[0] and not m[-1] and m[1:-1].all()
        m = gen.mask_for("image_random", T, rng)
        assert (~m).sum() == 1
        m = gen.mask_for("quarter_head", T, rng)
        k = (~m).sum()
        assert 1 <= k <= 4 and not m[:k].any() and m[k:].all()
        m = gen.mask_for("quarter_tail", T, rng)
        k = (~m).sum()
        assert 1 <= k <= 4 and not m[T - k:].any() and m[:T - k].all()
        m = gen.mask_for("quarter_head_tail", T, rng)
        k = (~m).sum() // 2
        assert (~m).sum() % 2 == 0 and 1 <= k <= 4 and not m[:k].any() and not m[T - k:].any() and m[k:T - k].all()
        m = gen.mask_for("quarter_random", T, rng)
        off = np.flatnonzero(~m)
        assert 1 <= len(off) <= 4 and np.all(np.diff(off) == 1)  # one run
        m = gen.mask_for("intepolate", T, rng)
        assert (~m).sum() == T // 2 and (np.array_equal(~m, np.arange(T) % 2 == 0)
                                         or np.array_equal(~m, np.arange(T) % 2 == 1))
        m = gen.mask_for("random", T, rng)
        assert m.any()
    # every quarter size 1..4 and both interpolation phases occur
    sizes = {int((~gen.mask_for("quarter_head", T, rng)).sum()) for _ in range(200)}
    assert sizes == {1, 2, 3, 4}


def test_random_mask_keeps_half_the_frames_on_average():
    """Per frame P(True) = E[1 - r], r ~ U(0.1, 0.9): 0.5. The fraction of True frames of one T = 16 mask has
    variance Var(r) + E[r (1 - r)] / T = 0.0533 + 0.1967 / 16 = 0.0656; over 4000 masks the mean has std
    0.0041. Tolerance 5 std = 0.02."""
    gen = MaskGenerator({"random": 1.0})
    rng = np.random.default_rng(2)
    fractions = [gen.get_mask(16, rng).mean() for _ in range(4000)]
    assert abs(np.mean(fractions) - 0.5) <= 0.02


def test_masks_short_clips_and_reproducibility():
    gen = MaskGenerator({"quarter_head": 0.5, "intepolate": 0.5})
    rng = np.random.default_rng(3)
    assert gen.get_mask(1, rng).tolist() == [True] and gen.get_mask(0, rng).shape == (0,)
    # T = 2 or 3: upstream's random.randint(1, T // 4 = 0) raises; here one frame is conditioned
    assert gen.mask_for("quarter_head", 2, rng).tolist() == [False, True]
    assert gen.mask_for("quarter_tail", 3, rng).tolist() == [True, True, False]
    a = MaskGenerator(MASK_RATIOS_V1_2_STAGE3).get_masks(64, 15, np.random.default_rng(9))
    b = MaskGenerator(MASK_RATIOS_V1_2_STAGE3).get_masks(64, 15, np.random.default_rng(9))
    assert a.shape == (64, 15) and a.dtype == bool and np.array_equal(a, b)
    assert not a.all()  # stage 3 conditions about a quarter of the samples
    with pytest.raises(DataError, match="Generator"):
        gen.get_mask(4, 0)


# ---------------------------------------------------------------------------------------------------------------
# synthetic dataset, dataset reading, loader, info tool


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    path = make_synthetic_dataset(folder, n_videos=5, n_images=2, num_frames=(16, 24, 32), fps=24, seed=0,
                                  corrupt=1, missing=1)
    return path


def _table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_synthetic_csv_files_and_captions(synthetic):
    rows = _table(synthetic)
    assert list(rows[0]) == ["path", "text", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps"]
    assert len(rows) == 5 + 2 + 1 + 1
    videos = [r for r in rows if r["path"].endswith(".mp4") and "video_" in r["path"]]
    images = [r for r in rows if r["path"].endswith(".png")]
    assert len(videos) == 5 and len(images) == 2
    for r in videos:
        frames, fps = read_video(r["path"])
        assert frames.shape[:3] == (int(r["num_frames"]), int(r["height"]), int(r["width"]))
        assert fps == float(r["fps"]) == 24.0
        assert float(r["aspect_ratio"]) == int(r["height"]) / int(r["width"])
        assert int(r["resolution"]) == int(r["height"]) * int(r["width"])
        # the caption says where the shape goes: follow the centroid of the pixels unlike the background
        words = r["text"].split()
        assert words[0] in ("a", "an") and words[2] in ("square", "circle") and words[3] == "moving"
        direction = words[4]
        background = frames[:, :2, :2].reshape(frames.shape[0], -1, 3).mean(1)

        def centroid(t):
            diff = np.abs(frames[t].astype(int) - background[t].astype(int)).sum(-1) > 60
            ys, xs = np.nonzero(diff)
            return ys.mean(), xs.mean()

        (y0, x0), (y1, x1) = centroid(0), centroid(-1)
        moved = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0}[direction]
        assert moved > 0.3 * min(frames.shape[1:3]), (r["text"], (y0, x0), (y1, x1))
    for r in images:
        assert r["num_frames"] == "1" and r["fps"] == "" and "moving" not in r["text"]
    assert {os.path.basename(r["path"]) for r in rows} >= {"corrupt_000.mp4", "missing_000.mp4"}
    assert not os.path.exists([r["path"] for r in rows if "missing_" in r["path"]][0])
    # same arguments, same files
    again = make_synthetic_dataset(os.path.join(os.path.dirname(synthetic), "again"), n_videos=2, n_images=0,
                                   num_frames=(16,), seed=0)
    first, _ = read_video(videos[0]["path"])
    assert np.array_equal(read_video(_table(again)[0]["path"])[0], first)


def test_table_reading_requires_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,height\na.mp4,10\n")
    with pytest.raises(DataError, match="missing required column\\(s\\) text, num_frames, width, aspect_ratio"):
        read_table(bad)
    with pytest.raises(DataError, match=r"missing required column\(s\) text \("):
        read_table(bad, variable=False)
    ok = tmp_path / "ok.csv"
    ok.write_text("path,text\na.mp4,hello\n")
    assert read_table(ok, variable=False) == [{"path": "a.mp4", "text": "hello"}]
    empty = tmp_path / "empty.csv"
    empty.write_text("path,text,num_frames,height,width,aspect_ratio\na.mp4,x,,10,10,1.0\n")
    with pytest.raises(DataError, match="row 1 .*empty num_frames"):
        read_table(empty)
    try:
        import pandas  # noqa: F401
    except ImportError:
        (tmp_path / "t.parquet").write_bytes(b"PAR1")
        with pytest.raises(DataError, match="pandas"):
            read_table(tmp_path / "t.parquet")
    with pytest.raises(DataError, match="csv or .parquet"):
        (tmp_path / "t.json").write_text("{}")
        read_table(tmp_path / "t.json")


def test_temporal_crop_indices_follow_upstream():
    # total 20, T 4, interval 2: size 8, begin in 0..11, indices linspace(b, b + 7, 4) -> b + [0, 2, 4, 7]
    begins = set()
    rng = np.random.default_rng(0)
    for _ in range(300):
        idx = temporal_crop_indices(20, 4, 2, rng)
        b = int(idx[0])
        begins.add(b)
        assert idx.tolist() == [b, b + 2, b + 4, b + 7]
    assert begins == set(range(12))  # never 12: upstream's rand_end = total - size - 1
    # total 10 < size 12 but >= T: the whole clip, spread
    assert temporal_crop_indices(10, 6, 2, np.random.default_rng(0)).tolist() == [0, 1, 3, 5, 7, 9]
    for total, t, fi in itertools.product((1, 5, 17, 40), (1, 4, 16), (1, 2, 3)):
        if total < t:
            with pytest.raises(DataError, match="not enough frames"):
                temporal_crop_indices(total, t, fi, np.random.default_rng(1))
            continue
        idx = temporal_crop_indices(total, t, fi, np.random.default_rng(1))
        assert len(idx) == t and idx.min() >= 0 and idx.max() <= total - 1 and np.all(np.diff(idx) >= 0)


def test_dataset_reads_videos_and_images(synthetic):
    rows = _table(synthetic)
    ds = VariableVideoTextDataset(synthetic)
    assert len(ds) == len(rows)
    vid = next(i for i, r in enumerate(rows) if r["num_frames"] == "24")
    assert ds.get_data_info(vid) == (24, int(rows[vid]["height"]), int(rows[vid]["width"]))
    s = ds.get(vid, 16, 144, 256, rng=np.random.default_rng(4))
    assert s["video"].shape == (3, 16, 144, 256) and s["video"].dtype == np.float32
    assert s["video"].min() >= -1.0 and s["video"].max() <= 1.0 and s["video"].min() < -0.5 < 0.5 < s["video"].max()
    assert s["fps"] == 24.0 and s["ar"] == 144 / 256 and s["text"] == rows[vid]["text"]
    assert (s["num_frames"], s["height"], s["width"]) == (16, 144, 256)
    # the crop is the reference transform of the whole clip at upstream's crop indices
    idx = temporal_crop_indices(24, 16, 1, np.random.default_rng(4))
    whole = read_reference(rows[vid]["path"], (144, 256))
    assert np.array_equal(s["video"], whole[:, idx])
    # frame interval 2 halves the fps (v1.2.0: fps // frame_interval)
    ds2 = VariableVideoTextDataset(synthetic, frame_interval=2)
    s2 = ds2.get(vid, 8, 144, 256, rng=np.random.default_rng(4))
    assert s2["fps"] == 12.0 and s2["video"].shape == (3, 8, 144, 256)
    idx2 = temporal_crop_indices(24, 8, 2, np.random.default_rng(4))
    assert np.array_equal(s2["video"], whole[:, idx2])
    img = next(i for i, r in enumerate(rows) if r["path"].endswith(".png"))
    si = ds[f"{img}-1-144-256"]  # upstream's "index-T-H-W" key
    assert si["video"].shape == (3, 1, 144, 256) and si["fps"] == 120.0
    assert np.array_equal(si["video"], read_reference(rows[img]["path"], (144, 256)))


def test_bad_samples_raise_corrupt_sample_error(synthetic):
    rows = _table(synthetic)
    ds = VariableVideoTextDataset(synthetic)
    find = lambda word: next(i for i, r in enumerate(rows) if word in r["path"])  # noqa: E731
    with pytest.raises(CorruptSampleError, match="file not found") as e:
        ds.get(find("missing_"), 16, 144, 256)
    assert e.value.path.endswith("missing_000.mp4")
    with pytest.raises(CorruptSampleError, match="unreadable video"):
        ds.get(find("corrupt_"), 16, 144, 256)
    short = next(i for i, r in enumerate(rows) if r["num_frames"] == "16")
    with pytest.raises(CorruptSampleError, match="not enough frames"):
        ds.get(short, 24, 144, 256)
    with pytest.raises(CorruptSampleError, match="image cannot give 16 frames"):
        ds.get(find(".png"), 16, 144, 256)


def test_loader_skips_and_counts_bad_samples_without_ending_the_epoch(synthetic):
    ds = VariableVideoTextDataset(synthetic)
    cfg = {"144p": {1: (1.0, 2), 16: (1.0, 2)}}  # videos of 24 and 32 frames (and the two bad rows) fit t = 16
    sampler = VariableVideoBatchSampler(ds, cfg, seed=0)
    planned = _batches(sampler)
    bad_rows = {i for i, r in enumerate(ds.rows) if "corrupt_" in r["path"] or "missing_" in r["path"]}
    planned_bad = sum(1 for b in planned for item in b if item[0] in bad_rows)
    assert planned_bad >= 2  # both bad rows are in this epoch
    loader = SkippingLoader(ds, sampler)
    batches = list(loader)
    yielded = sum(len(b["text"]) for b in batches)
    assert yielded + len(loader.skipped) == sum(len(b) for b in planned)
    assert len(batches) + loader.empty_batches == len(planned)
    assert loader.skipped_this_epoch == len(loader.skipped) == planned_bad
    reasons = dict(loader.skipped)
    assert any(p.endswith("missing_000.mp4") and r == "file not found" for p, r in reasons.items())
    assert any(p.endswith("corrupt_000.mp4") and r.startswith("unreadable video") for p, r in reasons.items())
    for b in batches:
        assert b["video"].ndim == 5 and b["video"].shape[0] == len(b["text"]) == len(b["fps"])
        assert not any("corrupt_" in p or "missing_" in p for p in b["path"])
    assert loader.report().startswith(f"{planned_bad} sample(s) skipped")


def test_loader_resume_reads_the_same_crops(synthetic):
    ds = VariableVideoTextDataset(synthetic)
    cfg = {"144p": {16: (1.0, 1)}}
    full = [b["video"] for b in SkippingLoader(ds, VariableVideoBatchSampler(ds, cfg, seed=4))]
    sampler = VariableVideoBatchSampler(ds, cfg, seed=4)
    loader = SkippingLoader(ds, sampler)
    it = iter(loader)
    first = [next(it)["video"] for _ in range(2)]
    state = loader.state_dict()
    fresh = VariableVideoBatchSampler(ds, cfg, seed=4)
    fresh.load_state_dict(state)
    rest = [b["video"] for b in SkippingLoader(ds, fresh)]
    assert len(first + rest) == len(full)
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, full))
    # another epoch draws other crops of the same rows
    def crops(epoch):
        s = VariableVideoBatchSampler(ds, cfg, seed=4)
        s.set_epoch(epoch)
        return {int(b["index"][0]): b["video"] for b in SkippingLoader(ds, s)}

    e0, e1 = crops(0), crops(1)
    assert set(e0) == set(e1) and any(not np.array_equal(e0[i], e1[i]) for i in e0)


def test_info_tool_fills_columns_and_drops_unreadable(synthetic, tmp_path, capsys):
    rows = _table(synthetic)
    src = tmp_path / "meta.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text", "aes"])
        for r in rows:
            w.writerow([r["path"], r["text"], "5.5"])
    summary = run_info(src, progress=False)
    assert summary["output"] == str(tmp_path / "meta_info.csv")
    assert (summary["rows"], summary["kept"], summary["failed"]) == (9, 7, 2)
    out = _table(tmp_path / "meta_info.csv")
    assert list(out[0]) == ["path", "text", "aes", "num_frames", "height", "width", "aspect_ratio", "fps",
                            "resolution"]
    expected = {r["path"]: r for r in rows if "corrupt_" not in r["path"] and "missing_" not in r["path"]}
    assert {r["path"] for r in out} == set(expected)
    for r in out:
        e = expected[r["path"]]
        for c in ("num_frames", "height", "width", "resolution", "fps"):
            assert r[c] == e[c] or float(r[c]) == float(e[c]), (r["path"], c)
        assert float(r["aspect_ratio"]) == float(e["aspect_ratio"]) and r["aes"] == "5.5"
    failed = _table(tmp_path / "meta_info_failed.csv")
    assert {os.path.basename(r["path"]): r["error"].split(" (")[0] for r in failed} == {
        "corrupt_000.mp4": "unreadable video", "missing_000.mp4": "file not found"}
    assert "unreadable: " in capsys.readouterr().err
    # --fmin: rows with fewer frames go (images count as 1 frame, as upstream's filter)
    summary = run_info(src, fmin=20, progress=False)
    assert summary["output"].endswith("meta_info_fmin20.csv") and summary["too_short"] == 2 + 2
    assert all(int(r["num_frames"]) >= 20 for r in _table(summary["output"]))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    assert probe_media(expected[out[0]["path"]]["path"])["num_frames"] == int(out[0]["num_frames"])


def test_info_cli(synthetic, tmp_path):
    src = tmp_path / "only_path.csv"
    src.write_text("path\n" + "\n".join(r["path"] for r in _table(synthetic)) + "\n")
    script = os.path.join(ROOT, "scripts", "datautil_info.py")
    out = subprocess.run([sys.executable, script, str(src), "--fmin", "1", "--no-progress"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "7 written" in out.stdout and "2 unreadable" in out.stdout
    assert len(_table(tmp_path / "only_path_info_fmin1.csv")) == 7
    bad = tmp_path / "nopath.csv"
    bad.write_text("file\nx.mp4\n")
    out = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "missing required column path" in out.stderr
