"""opensora_dual.inference: the framework-free v1.2 inference utilities against upstream's behaviour
(shared/opensora_facts.md sections 5 and 6, upstream ``opensora/utils/inference_utils.py``,
``opensora/datasets/{aspect,utils,video_transforms}.py``)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from opensora_dual.inference import (ASPECT_RATIO_MAP, ASPECT_RATIOS, IMG_FPS, MASK_DEFAULT, InferenceInputError,
                                     append_generated, append_score_to_prompts, apply_mask_strategy,
                                     collect_reference_paths, dframe_to_frame, extract_json_from_prompts,
                                     extract_prompts_loop, find_nearest_point, get_closest_ratio, get_image_size,
                                     get_num_frames, get_num_pixels, get_save_path_name, load_prompts,
                                     merge_prompt, parse_mask_strategy, prepare_multi_resolution_info, read_reference,
                                     read_video, save_sample, split_prompt, to_uint8_frames, write_side_by_side)

# ---------------------------------------------------------------------------------------------------------------
# package hygiene


def test_package_imports_no_framework():
    code = ("import sys, opensora_dual.inference; "
            "bad = [m for m in ('torch', 'mindspore', 'pt_reference', 'ms_impl', 'parity_tests', 'PIL', 'av') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# aspect ratios, resolutions, frame counts


@pytest.mark.parametrize("resolution, ratio, size", [
    ("240p", "9:16", (240, 426)), ("240p", "1:1", (320, 320)), ("240p", "3:4", (276, 368)),
    ("240p", "16:9", (426, 240)), ("240p", "2:1", (452, 226)),
    ("144p", "9:16", (144, 256)), ("360p", "9:16", (360, 640)), ("480p", "9:16", (480, 854)),
    ("720p", "9:16", (720, 1280)), ("1080p", "9:16", (1080, 1920)),
    # entries upstream edited by hand (not what its own get_h_w formula gives)
    ("480p", "12:25", (444, 925)), ("144p", "50:27", (277, 132)), ("240p", "27:50", (236, 436)),
    ("240p", "2:3", (262, 393)), ("720p", "50:27", (1386, 666)),
    ("240p", "0.56", (240, 426)),  # a ratio key is accepted directly
])
def test_image_size_table_spot_checks(resolution, ratio, size):
    assert get_image_size(resolution, ratio) == size


def test_pixel_counts_and_table_shapes():
    expected = {"144p": 36864, "240p": 102240, "360p": 230400, "480p": 409920, "720p": 921600,
                "1080p": 2073600, "256": 65536, "512": 262144, "1024": 1048576, "2048": 4194304}
    for name, pixels in expected.items():
        assert get_num_pixels(name) == pixels
    for name in ("144p", "240p", "360p", "480p", "720p", "1080p"):
        table = ASPECT_RATIOS[name][1]
        assert len(table) == 17 and set(table) == set(ASPECT_RATIO_MAP.values())
    for name in ("256", "512", "1024", "2048"):
        assert len(ASPECT_RATIOS[name][1]) == 40
        assert "1.0" in ASPECT_RATIOS[name][1] and "1.00" not in ASPECT_RATIOS[name][1]  # upstream's spelling
    # the PixArt tables are the 1024 table scaled
    base = ASPECT_RATIOS["1024"][1]
    for name, f in (("256", 0.25), ("512", 0.5), ("2048", 2)):
        assert ASPECT_RATIOS[name][1] == {k: (int(h * f), int(w * f)) for k, (h, w) in base.items()}
    assert ASPECT_RATIO_MAP["9:16"] == "0.56" and ASPECT_RATIO_MAP["16:9"] == "1.78"


def test_square_resolutions_by_closest_ratio():
    assert get_image_size("1024", "1:1") == (1024, 1024)  # "1.00" matched to upstream's "1.0" by value
    assert get_image_size("512", "1:2") == (352, 704)  # "0.50" -> "0.5"
    assert get_image_size("256", "9:16") == (192, 336)  # 0.56 -> closest 0.57
    assert get_image_size("2048", "16:9") == (2688, 1536)  # 1.78 -> closest 1.75


def test_closest_ratio():
    table = ASPECT_RATIOS["240p"][1]
    assert get_closest_ratio(240, 426, table) == "0.56"
    assert get_closest_ratio(1080, 1920, table) == "0.56"
    assert get_closest_ratio(100, 100, table) == "1.00"
    assert get_closest_ratio(300, 100, table) == "2.08"


@pytest.mark.parametrize("call, needle", [
    (lambda: get_image_size("999p", "9:16"), "240p"),
    (lambda: get_image_size("240p", "16:10"), "9:16"),
    (lambda: get_num_pixels("huge"), "1080p"),
])
def test_unknown_names_list_valid_ones(call, needle):
    with pytest.raises(InferenceInputError) as e:
        call()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_num_frames_names():
    names = {"2s": 51, "1x": 51, "4s": 102, "2x": 102, "8s": 204, "4x": 204, "16s": 408, "8x": 408,
             "32s": 816, "16x": 816}
    for name, n in names.items():
        assert get_num_frames(name) == n
    assert get_num_frames(51) == 51 and get_num_frames("68") == 68 and get_num_frames(np.int64(1)) == 1
    for bad in ("3s", "abc", "", 0, -1, "0", 1.5, None, True):
        with pytest.raises(InferenceInputError):
            get_num_frames(bad)


def test_multi_resolution_info():
    info = prepare_multi_resolution_info(2, (240, 426), 51, 24)
    assert set(info) == {"height", "width", "num_frames", "ar", "fps"}
    for v in info.values():
        assert v.dtype == np.float32 and v.shape == (2,)
    assert info["height"].tolist() == [240, 240] and info["width"].tolist() == [426, 426]
    assert info["num_frames"].tolist() == [51, 51] and info["fps"].tolist() == [24, 24]
    assert info["ar"][0] == np.float32(240 / 426)  # H / W
    image = prepare_multi_resolution_info(1, (320, 320), 1, 24)
    assert image["fps"].tolist() == [IMG_FPS] == [120]
    with pytest.raises(InferenceInputError):
        prepare_multi_resolution_info(0, (240, 426), 51, 24)
    with pytest.raises(InferenceInputError):
        prepare_multi_resolution_info(1, (240,), 51, 24)


# ---------------------------------------------------------------------------------------------------------------
# prompts


def test_load_prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("  a cat  \n\n   \nb dog\nc bird\n", encoding="utf-8")
    assert load_prompts(p) == ["a cat", "b dog", "c bird"]
    assert load_prompts(p, 1) == ["b dog", "c bird"]
    assert load_prompts(p, 0, 2) == ["a cat", "b dog"]
    with pytest.raises(InferenceInputError, match="select no prompt"):
        load_prompts(p, 5)
    with pytest.raises(InferenceInputError, match="not found"):
        load_prompts(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(InferenceInputError, match="UTF-8"):
        load_prompts(bad)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    with pytest.raises(InferenceInputError, match="no non-empty prompt"):
        load_prompts(blank)
    with pytest.raises(InferenceInputError):
        load_prompts(tmp_path)  # a directory


def test_append_score_to_prompts():
    out = append_score_to_prompts(["a cat", "a dog aesthetic score: 5.0.", "x motion score: 1.0."],
                                  aes=6.5, flow=None)
    assert out == ["a cat aesthetic score: 6.5.", "a dog aesthetic score: 5.0.",
                   "x motion score: 1.0. aesthetic score: 6.5."]
    # .1f rounding (Python's: 6.25 is exact in binary and rounds half to even), order aes, flow, camera
    assert append_score_to_prompts(["p"], aes=6.25, flow=0, camera_motion="pan right") == [
        "p aesthetic score: 6.2. motion score: 0.0. camera motion: pan right."]
    assert append_score_to_prompts(["p"], aes=6.96) == ["p aesthetic score: 7.0."]
    assert append_score_to_prompts(["p camera motion: static."], camera_motion="zoom") == ["p camera motion: static."]
    assert append_score_to_prompts(["p"]) == ["p"]


def test_extract_json_from_prompts():
    prompts = ['a cat{"reference_path": "a.png;b.mp4", "mask_strategy": "0"}', "plain",
               'dog {"mask_strategy": "0,0,-8"}', 'x{"reference_path": "odd{name}.png"}']
    ref, ms = [""] * 4, [""] * 4
    texts, ref2, ms2 = extract_json_from_prompts(prompts, ref, ms)
    assert texts == ["a cat", "plain", "dog ", "x"]
    assert ref2 is ref and ms2 is ms
    assert ref == ["a.png;b.mp4", "", "", "odd{name}.png"] and ms == ["0", "", "0,0,-8", ""]
    for bad, needle in (('a{"reference_path": "x"', "invalid JSON"), ('a{"prompt": "x"}', "unknown JSON key"),
                        ('a{"mask_strategy": 0}', "must be a string"), ("a{not json}", "invalid JSON")):
        with pytest.raises(InferenceInputError, match=needle):
            extract_json_from_prompts([bad], [""], [""])
    with pytest.raises(InferenceInputError):
        extract_json_from_prompts(["a", "b"], [""], ["", ""])


def test_loop_prompts():
    text = "|0| a beautiful day |1| a sunny day |3| a rainy day"
    texts, idx = split_prompt(text)
    assert texts == ["a beautiful day", "a sunny day", "a rainy day"] and idx == [0, 1, 3]
    merged = merge_prompt(texts, idx)
    assert merged == "|0|a beautiful day|1|a sunny day|3|a rainy day"
    assert split_prompt(merged) == (texts, idx)
    assert split_prompt("no loops") == (["no loops"], None)
    assert merge_prompt(["only"]) == "only"
    chosen = [extract_prompts_loop([merged, "plain"], i) for i in range(6)]
    assert [c[0] for c in chosen] == ["a beautiful day", "a sunny day", "a sunny day", "a rainy day",
                                      "a rainy day", "a rainy day"]
    assert all(c[1] == "plain" for c in chosen)
    assert extract_prompts_loop(["|0| a |2| b"], 1) == [" a "]  # not stripped (upstream)
    for bad in ("|0|a|x|b", "|0|a|2", "|0|a|3|b|1|c"):
        with pytest.raises(InferenceInputError):
            split_prompt(bad)
        with pytest.raises(InferenceInputError):
            extract_prompts_loop([bad], 0)


def test_save_path_names():
    assert get_save_path_name("out", sample_idx=3) == os.path.join("out", "sample_0003")
    assert get_save_path_name("out", sample_name="run", sample_idx=12) == os.path.join("out", "run_0012")
    assert get_save_path_name("out", sample_idx=0, num_sample=2, k=1) == os.path.join("out", "sample_0000-1")
    assert get_save_path_name("out", prompt="a cat", prompt_as_path=True) == os.path.join("out", "a cat")
    assert get_save_path_name("out", sample_name="p_", prompt="a cat", prompt_as_path=True, num_sample=3, k=2) == \
        os.path.join("out", "p_a cat-2")
    name = os.path.basename(get_save_path_name("out", prompt="a/b\0c", prompt_as_path=True))
    assert name == "a_b_c"
    long = os.path.basename(get_save_path_name("out", prompt="é" * 300, prompt_as_path=True))
    assert long == "é" * 100 and len(long.encode()) == 200
    with pytest.raises(InferenceInputError):
        get_save_path_name("out")
    with pytest.raises(InferenceInputError):
        get_save_path_name("out", sample_idx=0, num_sample=2)


# ---------------------------------------------------------------------------------------------------------------
# mask strategies


def test_parse_mask_strategy():
    assert MASK_DEFAULT == ["0", "0", "0", "0", "1", "0"]
    assert parse_mask_strategy("") == [] and parse_mask_strategy(None) == []
    groups = parse_mask_strategy("0")
    assert groups == [[0, 0, 0, 0, 1, 0.0]]
    assert [type(v) for v in groups[0]] == [int] * 5 + [float]
    assert parse_mask_strategy("0;0,1,0,-1,1") == [[0, 0, 0, 0, 1, 0.0], [0, 1, 0, -1, 1, 0.0]]
    assert parse_mask_strategy("0,0,0,0,15,0.8") == [[0, 0, 0, 0, 15, 0.8]]
    assert parse_mask_strategy("1, 0, -8, 0, 8, 0.5") == [[1, 0, -8, 0, 8, 0.5]]
    for bad in ("a", "0,0,0,0,0,0,0", "0;", "0,1.5", "0,0,0,0,1,x", "0,0,0,0,1,2", "0,0,0,0,1,nan"):
        with pytest.raises(InferenceInputError):
            parse_mask_strategy(bad)


def test_find_nearest_point():
    assert [find_nearest_point(v, 5, 15) for v in range(15)] == [0, 0, 0, 5, 5, 5, 5, 5, 10, 10, 10, 10, 10, 10, 10]
    assert find_nearest_point(14, 5, 20) == 15  # 13 and 14 stay at 10 above: 15 would leave no whole chunk
    assert find_nearest_point(7, 5, 15) == 5


def _latents(b=1, t=15, c=4, h=2, w=3):
    return np.zeros((b, c, t, h, w), np.float32)


def _ref(t, offset=100.0, c=4, h=2, w=3):
    # frame k of the reference holds offset + k everywhere
    return np.broadcast_to((offset + np.arange(t, dtype=np.float32))[None, :, None, None], (c, t, h, w)).copy()


def test_apply_mask_strategy_examples():
    # "0": image-to-video, the image latent becomes frame 0
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(1)]], ["0"], 0)
    assert mask.dtype == np.float32 and mask.shape == (1, 15)
    assert mask[0].tolist() == [0.0] + [1.0] * 14
    assert np.all(z[0, :, 0] == 100) and np.all(z[0, :, 1:] == 0)
    # "0,0,-8,0,8": continue a video, its last 8 latent frames become frames 0..7
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(15)]], ["0,0,-8,0,8"], 0)
    assert mask[0].tolist() == [0.0] * 8 + [1.0] * 7
    assert z[0, 0, :8, 0, 0].tolist() == list(range(107, 115))
    # "0,0,0,0,15,0.8": edit the whole clip
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(15)]], ["0,0,0,0,15,0.8"], 0)
    assert np.allclose(mask, 0.8) and mask[0, 0] == np.float32(0.8)
    assert z[0, 0, :, 0, 0].tolist() == list(range(100, 115))
    # "0;0,1,0,-1,1": connect two images: first frame from ref 0, last frame from ref 1
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(1, 100), _ref(1, 200)]], ["0;0,1,0,-1,1"], 0)
    assert mask[0].tolist() == [0.0] + [1.0] * 13 + [0.0]
    assert z[0, 0, 0, 0, 0] == 100 and z[0, 0, 14, 0, 0] == 200 and np.all(z[0, :, 1:14] == 0)


def test_apply_mask_strategy_align_and_clamp():
    # align=5 snaps both starts: the connect example's last frame (14) goes to 10 (upstream behaviour)
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(1, 100), _ref(1, 200)]], ["0;0,1,0,-1,1"], 0, align=5)
    assert np.flatnonzero(mask[0] == 0).tolist() == [0, 10] and z[0, 0, 10, 0, 0] == 200
    # ref start -8 of 15 -> 7 -> aligned to 5
    z = _latents()
    apply_mask_strategy(z, [[_ref(15)]], ["0,0,-8,0,8"], 0, align=5)
    assert z[0, 0, :8, 0, 0].tolist() == list(range(105, 113))
    # length clamped by the video end and by the reference end
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(15)]], ["0,0,0,-3,10"], 0)
    assert np.flatnonzero(mask[0] == 0).tolist() == [12, 13, 14] and z[0, 0, 12:, 0, 0].tolist() == [100, 101, 102]
    z = _latents()
    mask = apply_mask_strategy(z, [[_ref(4)]], ["0,0,1,2,10,0.5"], 0)
    assert np.flatnonzero(mask[0] == 0.5).tolist() == [2, 3, 4] and z[0, 0, 2:5, 0, 0].tolist() == [101, 102, 103]


def test_apply_mask_strategy_quirks():
    z = _latents(b=2)
    assert apply_mask_strategy(z, [[], []], [], 0) is None
    mask = apply_mask_strategy(z, [[], None], ["", None], 0)
    assert mask.shape == (2, 15) and np.all(mask == 1) and np.all(z == 0)
    # groups of other loops are ignored; per-sample strategies
    mask = apply_mask_strategy(z, [[_ref(15)], [_ref(15, 300)]], ["1,0,0,0,5", "0,0,0,0,2;1,0,0,5,5"], 0)
    assert np.all(mask[0] == 1) and mask[1].tolist() == [0, 0] + [1] * 13
    assert np.all(z[0] == 0) and z[1, 0, :3, 0, 0].tolist() == [300, 301, 0]
    # a negative ref_id counts from the end of the list (Python indexing, as upstream)
    z = _latents()
    apply_mask_strategy(z, [[_ref(1, 100), _ref(1, 200)]], ["0,-1"], 0)
    assert z[0, 0, 0, 0, 0] == 200


@pytest.mark.parametrize("refs, strategy, needle", [
    ([_ref(1)], "0,1", "reference 1 does not exist"),
    ([], "0", "reference 0 does not exist"),
    ([_ref(15)], "0,0,0,15,1", "target_start"),
    ([_ref(15)], "0,0,0,-16,1", "target_start"),
    ([_ref(15)], "0,0,15,0,1", "ref_start"),
    ([_ref(15)], "0,0,-20,0,1", "ref_start"),
    ([_ref(15)], "0,0,0,0,0", "length"),
    ([_ref(15)], "0,0,0,0,-1", "length"),
    ([_ref(15, c=3)], "0", "shape"),
])
def test_apply_mask_strategy_errors(refs, strategy, needle):
    z = _latents()
    with pytest.raises(InferenceInputError, match=needle) as e:
        apply_mask_strategy(z, [refs], [strategy], 0)
    assert "\n" not in str(e.value)
    with pytest.raises(InferenceInputError):
        apply_mask_strategy(_latents(b=2), [refs], [strategy], 0)  # one strategy for a batch of two


def test_append_generated():
    gen = np.arange(2 * 4 * 15 * 2 * 3, dtype=np.float32).reshape(2, 4, 15, 2, 3)
    refs = [[_ref(1)], None]
    ms = ["0", ""]
    refs2, ms2 = append_generated(gen, refs, ms, 1, 5, 0.0)
    assert refs2 is refs and ms2 is ms
    assert ms == ["0;1,1,-5,0,5,0.0", "1,0,-5,0,5,0.0"]
    assert len(refs[0]) == 2 and len(refs[1]) == 1 and np.array_equal(refs[1][0], gen[1])
    gen[1] = -1  # the stored reference is a copy
    assert refs[1][0][0, 0, 0, 0] != -1
    # the strategy then pastes the previous clip's last 5 latent frames into frames 0..4 of loop 1
    z = _latents(b=2)
    mask = apply_mask_strategy(z, refs, ms, 1)
    assert mask[:, :5].tolist() == [[0.0] * 5] * 2 and np.all(mask[:, 5:] == 1)
    assert np.array_equal(z[0, :, :5], refs[0][1][:, 10:])
    refs3, ms3 = append_generated(gen, [[], [_ref(1)]], [None, "0"], 2, 3, 0.5)
    assert ms3 == ["2,0,-3,0,3,0.5", "0;2,1,-3,0,3,0.5"]
    with pytest.raises(InferenceInputError):
        append_generated(gen, [[]], [""], 1, 5, 0.0)


def test_dframe_to_frame():
    assert dframe_to_frame(5) == 17 and dframe_to_frame(15) == 51 and dframe_to_frame(0) == 0
    for bad in (3, 7, 1.0):
        with pytest.raises(InferenceInputError):
            dframe_to_frame(bad)


# ---------------------------------------------------------------------------------------------------------------
# references


def _gradient_frames(t, h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(t):
        r = (xx * 255 // max(w - 1, 1) + 9 * k) % 256
        g = yy * 255 // max(h - 1, 1)
        b = (r // 2 + g // 2 + rng.integers(0, 8, size=(h, w))) % 256
        frames.append(np.stack([r, g, b], -1))
    return np.asarray(frames, np.uint8)


def _smooth_frames(t, h, w):
    """Slowly varying colours, which H.264 / yuv420p keep within a few levels."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = [np.stack([40 + 170 * xx / (w - 1), 40 + 170 * yy / (h - 1), np.full_like(xx, 60 + 20 * k)], -1)
              for k in range(t)]
    return np.rint(frames).astype(np.uint8)


def _write_mp4(path, frames, fps=24):
    import av
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_collect_reference_paths():
    assert collect_reference_paths("a.png;b.mp4") == ["a.png", "b.mp4"]
    assert collect_reference_paths("") == [] and collect_reference_paths(None) == []
    with pytest.raises(InferenceInputError):
        collect_reference_paths("a.png;")


def test_read_reference_png(tmp_path):
    from PIL import Image
    src = _gradient_frames(1, 20, 36)[0]
    path = tmp_path / "ref.png"
    Image.fromarray(src).save(path)
    out = read_reference(path, (8, 11))
    assert out.dtype == np.float32 and out.shape == (3, 1, 8, 11)
    # upstream: PIL bicubic to (14, 8) (8/20 > 11/36: height fits), crop columns at round(3/2) = 2
    resized = np.asarray(Image.fromarray(src).resize((14, 8), Image.BICUBIC))[:, 2:13]
    expected = (resized.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    assert np.array_equal(out[:, 0], expected.transpose(2, 0, 1))
    # a portrait target crops rows; a grey image is converted to RGB
    Image.fromarray(src[..., 0]).save(tmp_path / "grey.png")
    grey = read_reference(tmp_path / "grey.png", (30, 10))
    assert grey.shape == (3, 1, 30, 10) and np.array_equal(grey[0], grey[1])
    assert -1 <= out.min() and out.max() <= 1


def test_read_reference_mp4(tmp_path):
    torch = pytest.importorskip("torch")
    import av
    frames = _gradient_frames(3, 20, 36)
    path = tmp_path / "ref.mp4"
    _write_mp4(path, frames)
    with av.open(str(path)) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    out = read_reference(path, (8, 11))
    assert out.dtype == np.float32 and out.shape == (3, 3, 8, 11)
    # upstream: /255, F.interpolate bilinear to (8, 14), crop columns at int(round(14 - 11) / 2) = 1
    x = torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(8, 14), mode="bilinear", align_corners=False)
    expected = ((x[..., :, 1:12] - 0.5) / 0.5).permute(1, 0, 2, 3).numpy()
    assert np.abs(out - expected).max() < 5e-7
    shifted = ((x[..., :, 2:13] - 0.5) / 0.5).permute(1, 0, 2, 3).numpy()  # the image code's offset would differ
    assert np.abs(out - shifted).max() > 1e-2
    # a portrait target crops rows (bilinear upscale)
    tall = read_reference(path, (30, 12))
    x2 = torch.nn.functional.interpolate(
        torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255.0, size=(30, 54), mode="bilinear",
        align_corners=False)
    expected2 = ((x2[..., :, 21:33] - 0.5) / 0.5).permute(1, 0, 2, 3).numpy()
    assert np.abs(tall - expected2).max() < 5e-7


def test_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    from opensora_dual.inference.references import resize_bilinear
    rng = np.random.default_rng(3)
    for (h, w, oh, ow) in ((6, 640, 4, 426), (7, 5, 13, 11), (480, 64, 240, 43)):
        x = rng.random((2, 3, h, w)).astype(np.float32)
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(oh, ow), mode="bilinear",
                                              align_corners=False).numpy()
        # same source positions and weights as torch (its fused multiply-add included): <= 2 ulps apart
        assert np.abs(resize_bilinear(x, oh, ow) - ref).max() <= 2.5e-7


def test_read_reference_errors(tmp_path):
    with pytest.raises(InferenceInputError, match="reference not found"):
        read_reference(tmp_path / "nope.png", (8, 8))
    with pytest.raises(InferenceInputError, match="URL"):
        read_reference("https://example.com/cat.png", (8, 8))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(InferenceInputError, match="cannot read"):
        read_reference(tmp_path / "bad.png", (8, 8))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(InferenceInputError, match="cannot read"):
        read_reference(tmp_path / "bad.mp4", (8, 8))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InferenceInputError, match="unsupported"):
        read_reference(tmp_path / "notes.txt", (8, 8))
    with pytest.raises(InferenceInputError):
        read_reference(tmp_path / "bad.png", (0, 8))


# ---------------------------------------------------------------------------------------------------------------
# writing and reading samples


def test_to_uint8_frames_rounding():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0, 2 / 255 - 1, 1 - 1 / 255, 1 - 4 / 255], np.float32).reshape(1, 1, 1, 8)
    out = to_uint8_frames(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 8, 1)
    # clamp; (x+1)/2*255 + 0.5 truncated: 0 -> 128 (127.5 + 0.5), 2/255-1 -> trunc(1.5) = 1,
    # 1-1/255 -> 254.5 + 0.5 = 255, 1-4/255 -> trunc(253.5) = 253
    assert out.ravel().tolist() == [0, 0, 128, 255, 255, 1, 255, 253]
    rng = np.random.default_rng(1)
    v = rng.uniform(-1.2, 1.2, size=(3, 2, 4, 5)).astype(np.float32)
    ref = np.floor(np.clip((np.clip(v, -1, 1) + 1) / 2 * 255 + 0.5, 0, 255)).astype(np.uint8).transpose(1, 2, 3, 0)
    assert np.array_equal(to_uint8_frames(v), ref)
    with pytest.raises(InferenceInputError):
        to_uint8_frames(np.full((3, 1, 2, 2), np.nan, np.float32))


def test_save_sample_mp4_roundtrip(tmp_path):
    import av
    frames = _smooth_frames(6, 32, 48)
    old = os.umask(0o027)
    try:
        path = save_sample(frames, 24, str(tmp_path / "sub" / "clip"))
    finally:
        os.umask(old)
    assert path == str(tmp_path / "sub" / "clip.mp4")
    assert os.stat(path).st_mode & 0o777 == 0o640  # umask honoured (not mkstemp's 0600)
    assert os.listdir(tmp_path / "sub") == ["clip.mp4"]  # no temporary left behind
    with av.open(path) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
    back, fps = read_video(path)
    assert back.shape == frames.shape and fps == 24
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4


def test_save_sample_png_and_odd_sizes(tmp_path):
    from PIL import Image
    one = _gradient_frames(1, 7, 9)
    path = save_sample(one, 24, str(tmp_path / "img"))
    assert path.endswith("img.png")
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), one[0])
    odd = _smooth_frames(4, 17, 23)
    path = save_sample(odd, 8, str(tmp_path / "odd"))
    back, fps = read_video(path)
    assert back.shape == (4, 18, 24, 3) and fps == 8
    assert np.abs(back[:, :17, :23].astype(int) - odd.astype(int)).mean() < 6
    assert np.abs(back[:, 17].astype(int) - back[:, 16].astype(int)).mean() < 6  # replicated edge row
    with pytest.raises(InferenceInputError):
        save_sample(odd.astype(np.float32), 8, str(tmp_path / "x"))
    with pytest.raises(InferenceInputError):
        save_sample(odd, 0, str(tmp_path / "x"))
    with pytest.raises(InferenceInputError, match="video not found"):
        read_video(tmp_path / "missing.mp4")


def test_write_side_by_side(tmp_path):
    left = _smooth_frames(3, 16, 20)
    right = 255 - left
    path = write_side_by_side(left, right, str(tmp_path / "pair.mp4"), 12)
    assert path == str(tmp_path / "pair.mp4")
    back, _ = read_video(path)
    assert back.shape == (3, 16, 40, 3)
    assert np.abs(back[:, :, 20:].astype(int) - right.astype(int)).mean() < 8  # measured 4.4 (tiny clip)
    assert np.abs(back[:, :, :20].astype(int) - left.astype(int)).mean() < 8
    with pytest.raises(InferenceInputError):
        write_side_by_side(left, right[:2], str(tmp_path / "bad"), 12)
