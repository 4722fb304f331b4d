"""Converters: formats in/out, bit-exact round trips, dtype casting, the mindone dialect both ways, PixArt
initialisation, every bad input (one clear error, exit 2, no output left), streaming and interrupted writes."""
import json
import os
import struct
import subprocess
import sys
import weakref

import mindspore as ms
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as st_load_np
from safetensors.torch import save_file as st_save_torch
from torch import nn

import converters as C
from converters import api, ckpt_io, dtypes, rules
from converters.cli import main as cli
from converters.spec import spec_from_torch
from opensora_dual import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = "STDiT3-S/2"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def _spec_cache(tmp_path_factory, monkeypatch):
    """Tests use their own oracle cache (shared across the session, never the user's)."""
    monkeypatch.setenv("OPENSORA_DUAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))

def _rand_state(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in model.state_dict(keep_vars=True).items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def s2():
    """STDiT3-S/2 with random weights and its state dict."""
    m = _rand_state(registry.build(PRESET, "pt"))
    return m, {k: v.clone() for k, v in m.state_dict().items()}


@pytest.fixture()
def release(tmp_path, s2):
    m, _ = s2
    fam, kw = registry.resolve(PRESET)
    return C.save_release_folder(m, "pt", str(tmp_path / "OpenSora-STDiT-v3"), kw, preset=PRESET)


def _bytes_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_same_state(ck, sd):
    assert sorted(ck.keys()) == sorted(sd)
    for k, v in sd.items():
        assert _bytes_equal(ck.get(k), v.numpy()), k


def _no_leftovers(d, allowed=()):
    left = [f for f in os.listdir(d) if f not in allowed]
    assert not left, f"files left behind in {d}: {left}"


class Toy(nn.Module):
    """Every module type the rules care about: affine LayerNorm/GroupNorm, Embedding, a Conv3d patch
    embedder, Linear blocks, a persistent (and a non-persistent) buffer, an int buffer."""

    def __init__(self, c=8):
        super().__init__()
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(4, c, (1, 2, 2), stride=(1, 2, 2))
        self.emb = nn.Embedding(10, c)
        self.norm = nn.LayerNorm(c)
        self.gn = nn.GroupNorm(2, c)
        self.spatial_blocks = nn.ModuleList([nn.Linear(c, c) for _ in range(2)])
        self.register_buffer("y_embedding", torch.randn(5, c))
        self.register_buffer("step", torch.tensor([7], dtype=torch.int64))
        self.register_buffer("cache", torch.zeros(3), persistent=False)


class Evil:
    """An arbitrary object in a pickle: weights_only loading must refuse it."""


def _toy():
    torch.manual_seed(1)
    return _rand_state(Toy())


# ------------------------------------------------------------------------------------------------ formats
def test_ckpt_writer_bytes_equal_protobuf_and_mindspore_reads_them(tmp_path):
    from mindspore.train.checkpoint_pb2 import Checkpoint as PB

    rng = np.random.default_rng(0)
    tensors = {"a.weight": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
               "b": ("F16", rng.standard_normal((7,)).astype(np.float16)),
               "c": ("I64", np.arange(6, dtype=np.int64).reshape(2, 3)),
               "scalar": ("F32", np.array(1.5, np.float32)),
               "bf": ("BF16", dtypes.cast(rng.standard_normal((4, 4)).astype(np.float32), "F32", "BF16")[0])}
    p = str(tmp_path / "x.ckpt")
    w = ckpt_io.CkptWriter(p)
    for k, (dt, a) in tensors.items():
        w.write(k, a, dt)
    w.close()
    ref = b""
    for k, (dt, a) in tensors.items():
        pb = PB()
        v = pb.value.add()
        v.tag = k
        v.tensor.dims.extend(a.shape)
        v.tensor.tensor_type = dtypes.DTYPES[dt][1]
        v.tensor.tensor_content = a.tobytes()
        ref += pb.SerializeToString()
    assert open(p, "rb").read() == ref
    d = ms.load_checkpoint(p)
    for k, (dt, a) in tensors.items():
        got = d[k]
        if dt == "BF16":
            assert got.dtype == ms.bfloat16
            assert _bytes_equal(got.asnumpy().view(np.uint16), a)
        else:
            assert _bytes_equal(got.asnumpy(), a), k
    ck = C.read_checkpoint(p)
    for k, (dt, a) in tensors.items():
        raw, rdt = ck.read_raw(k)
        assert rdt == dt and _bytes_equal(raw, a)


def test_ckpt_big_tensors_are_chunked_like_mindspore(tmp_path):
    a = np.random.default_rng(1).standard_normal((50, 33)).astype(np.float32)
    p = str(tmp_path / "chunks.ckpt")
    w = ckpt_io.CkptWriter(p, chunk=1000)          # 6600 bytes -> 7 consecutive values with one tag
    w.write("big", a, "F32")
    w.write("small", a[:1], "F32")
    w.close()
    assert len(ckpt_io.scan(p)["big"][2]) == 7
    d = ms.load_checkpoint(p)
    assert _bytes_equal(d["big"].asnumpy(), a) and _bytes_equal(d["small"].asnumpy(), a[:1])
    assert _bytes_equal(C.read_checkpoint(p).get("big"), a)


def test_reads_mindspore_written_ckpt_with_bf16_and_crc(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    items = [{"name": "w", "data": ms.Tensor(a)}, {"name": "h", "data": ms.Tensor(a.astype(np.float16))},
             {"name": "b", "data": ms.Tensor(a).astype(ms.bfloat16)}]
    p = str(tmp_path / "ms.ckpt")
    ms.save_checkpoint(items, p, crc_check=True)
    ck = C.read_checkpoint(p)
    assert ck.format == "ckpt" and ck.keys() == ["w", "h", "b"]
    assert _bytes_equal(ck.get("w"), a) and _bytes_equal(ck.get("h"), a.astype(np.float16))
    raw, dt = ck.read_raw("b")
    assert dt == "BF16"
    assert _bytes_equal(raw, torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))


def test_safetensors_writer_output_opens_with_the_library(tmp_path, s2):
    _, sd = s2
    from converters.st_io import SafetensorsWriter

    p = str(tmp_path / "m.safetensors")
    w = SafetensorsWriter(p, [(k, "F32", tuple(v.shape)) for k, v in sd.items()], {"format": "pt"})
    for k, v in sd.items():
        w.write(k, v.numpy())
    w.close()
    back = st_load_np(p)
    assert all(_bytes_equal(back[k], v.numpy()) for k, v in sd.items())


def test_release_folder_layout(release, s2):
    assert sorted(os.listdir(release)) == ["config.json", "model.safetensors"]
    cfg = json.load(open(os.path.join(release, "config.json")))
    assert cfg["model_type"] == "STDiT3" and cfg["hidden_size"] == 96 and cfg["depth"] == 2
    ck = C.read_checkpoint(release)
    assert ck.format == "folder/safetensors" and ck.config["model_type"] == "STDiT3"
    _assert_same_state(ck, s2[1])


# ------------------------------------------------------------------------------------------------ round trips
def test_roundtrip_release_ms_pt_bit_exact(tmp_path, release, s2):
    ms_ckpt, pt_st = str(tmp_path / "m.ckpt"), str(tmp_path / "back.safetensors")
    rep = C.convert(release, ms_ckpt, progress=False)
    assert rep.target_format == "ms" and rep.tensors == len(s2[1])
    # MindSpore reads our .ckpt exactly and strict-loads it into the MindSpore twin
    d = ms.load_checkpoint(ms_ckpt)
    assert sorted(d) == sorted(s2[1]) and all(_bytes_equal(d[k].asnumpy(), v.numpy()) for k, v in s2[1].items())
    net = registry.build(PRESET, "ms")
    not_loaded, unused = ms.load_param_into_net(net, d)
    assert not not_loaded and not unused
    C.convert(ms_ckpt, pt_st, to="pt", model=PRESET, progress=False)
    _assert_same_state(C.read_checkpoint(pt_st), s2[1])
    assert C.verify(pt_st, against=release)["identical"]
    # and back into a release folder
    rel2 = str(tmp_path / "rel2")
    C.convert(pt_st, rel2, progress=False)
    assert json.load(open(os.path.join(rel2, "config.json"))) == json.load(open(os.path.join(release, "config.json")))
    _assert_same_state(C.read_checkpoint(rel2), s2[1])


def test_ms_safetensors_target(tmp_path, release, s2):
    p = str(tmp_path / "m.safetensors")
    C.convert(release, p, to="ms-safetensors", progress=False)
    d = ms.load_checkpoint(p, format="safetensors")
    assert all(_bytes_equal(d[k].asnumpy(), v.numpy()) for k, v in s2[1].items())


def test_from_pretrained_both_backends_and_model_tensors(tmp_path, release, s2):
    msm = C.from_pretrained(None, release, "ms")
    got = C.model_tensors(msm, "ms")
    assert all(_bytes_equal(got[k], v.numpy()) for k, v in s2[1].items())
    ck = str(tmp_path / "m.ckpt")
    C.convert(release, ck, progress=False)
    ptm = C.from_pretrained(registry.get_family("stdit3").model_class("pt"), ck, "pt", model=PRESET)
    assert all(torch.equal(ptm.state_dict()[k], v) for k, v in s2[1].items())
    # our safetensors carry their config: no model= needed
    st = str(tmp_path / "m.safetensors")
    C.convert(release, st, progress=False)
    C.from_pretrained(None, st, "pt")
    with pytest.raises(C.ConversionError, match="no config.json"):
        C.from_pretrained(None, ck, "pt")


def test_load_state_into_strict_and_lenient(s2):
    m = registry.build(PRESET, "pt")
    t = {k: v.numpy() for k, v in s2[1].items()}
    rep = C.load_state_into(m, t, "pt")
    assert rep.ok and rep.loaded == len(t)
    t2 = dict(t)
    t2.pop("rope.freqs")
    t2["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(C.ConversionError) as e:
        C.load_state_into(m, t2, "pt")
    assert "rope.freqs" in str(e.value) and "extra.weight" in str(e.value)
    rep = C.load_state_into(m, t2, "pt", strict=False)
    assert rep.missing == ["rope.freqs"] and rep.unexpected == ["extra.weight"]
    msm = registry.build(PRESET, "ms")
    assert C.load_state_into(msm, t, "ms").ok


# ------------------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dt,tdt,st", [("fp16", torch.float16, "F16"), ("bf16", torch.bfloat16, "BF16")])
def test_dtype_cast_matches_torch_and_loads_in_mindspore(tmp_path, release, s2, dt, tdt, st):
    p = str(tmp_path / f"{dt}.ckpt")
    rep = C.convert(release, p, dtype=dt, progress=False)
    assert rep.dtype == st
    ck = C.read_checkpoint(p)
    d = ms.load_checkpoint(p)
    for k, v in s2[1].items():
        raw, rdt = ck.read_raw(k)
        assert rdt == st
        ref = v.to(tdt)
        ref_np = ref.view(torch.int16).numpy().view(np.uint16) if tdt == torch.bfloat16 else ref.numpy()
        assert _bytes_equal(raw, ref_np), k
        assert _bytes_equal(d[k].astype(ms.float32).asnumpy(), ref.float().numpy()), k
    # a half checkpoint loads into the fp32 twins (cast on load) and converts back to fp32
    back = str(tmp_path / "back.safetensors")
    C.convert(p, back, model=PRESET, dtype="fp32", progress=False)
    b = st_load_np(back)
    assert all(_bytes_equal(b[k], v.to(tdt).float().numpy()) for k, v in s2[1].items())
    C.from_pretrained(None, p, "ms", model=PRESET)


def test_bf16_rounding_special_values():
    x = np.array([0.0, -0.0, 1.0, 3.14159, 1e-40, 65504.0, 3.4e38, np.inf, -np.inf, np.nan, 1.00390625,
                  1.01171875], np.float32)
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got, _ = dtypes.cast(x, "F32", "BF16")
    assert np.array_equal(got[~np.isnan(x)], ref[~np.isnan(x)])
    assert np.isnan(dtypes.cast(got, "BF16", "F32")[0][np.isnan(x)]).all()


# ------------------------------------------------------------------------------------------------ mindone dialect
def _ms_native_toy(c=8):
    """The Toy as mindone would write it: MindSpore's own nn cells (gamma/beta, embedding_table)."""
    from mindspore import Parameter, nn as msnn

    class PE(msnn.Cell):
        def __init__(self):
            super().__init__()
            self.proj = msnn.Dense(16, c)          # patch conv replaced by a Linear (patchify_conv3d_replace)

    class MSToy(msnn.Cell):
        def __init__(self):
            super().__init__()
            self.x_embedder = PE()
            self.emb = msnn.Embedding(10, c)
            self.norm = msnn.LayerNorm((c,))
            self.gn = msnn.GroupNorm(2, c)
            self.blocks = msnn.CellList([msnn.Dense(c, c) for _ in range(2)])
            self.y_embedding = Parameter(ms.Tensor(np.random.default_rng(3).standard_normal((5, c)), ms.float32))
            self.step = Parameter(ms.Tensor(np.array([3], np.int64)), requires_grad=False)

    return MSToy()


def test_mindone_checkpoint_written_by_mindspore_cells_converts(tmp_path):
    net = _ms_native_toy()
    p = str(tmp_path / "mindone.ckpt")
    ms.save_checkpoint(net, p)
    names = C.read_checkpoint(p).keys()
    assert "norm.gamma" in names and "emb.embedding_table" in names and "blocks.0.weight" in names
    toy = Toy()
    out = str(tmp_path / "ours.safetensors")
    rep = C.convert(p, out, model=toy, progress=False)
    assert rep.source_dialect == "mindone"
    got = st_load_np(out)
    src = {n: prm.asnumpy() for n, prm in net.parameters_and_names()}
    assert _bytes_equal(got["norm.weight"], src["norm.gamma"])
    assert _bytes_equal(got["gn.bias"], src["gn.beta"])
    assert _bytes_equal(got["emb.weight"], src["emb.embedding_table"])
    assert _bytes_equal(got["spatial_blocks.1.weight"], src["blocks.1.weight"])
    assert _bytes_equal(got["x_embedder.proj.weight"], src["x_embedder.proj.weight"].reshape(8, 4, 1, 2, 2))
    rep = C.load_state_into(toy, C.read_checkpoint(p), "pt")
    assert rep.dialect == "mindone" and rep.ok


@pytest.mark.parametrize("form,shape", [("conv3d", (8, 4, 1, 2, 2)), ("linear", (8, 16)), ("conv2d", (8, 4, 2, 2))])
def test_mindone_both_ways_bit_exact(tmp_path, form, shape):
    toy = _toy()
    sd = toy.state_dict()
    src = str(tmp_path / "ours.safetensors")
    st_save_torch(dict(sd), src)
    mo = str(tmp_path / "mo.ckpt")
    C.convert(src, mo, to="mindone", model=toy, patch_form=form, progress=False)
    d = ms.load_checkpoint(mo)
    assert set(d) == {"x_embedder.proj.weight", "x_embedder.proj.bias", "emb.embedding_table", "norm.gamma",
                      "norm.beta", "gn.gamma", "gn.beta", "spatial_blocks.0.weight", "spatial_blocks.0.bias",
                      "spatial_blocks.1.weight", "spatial_blocks.1.bias", "y_embedding", "step"}
    assert tuple(d["x_embedder.proj.weight"].shape) == shape
    back = str(tmp_path / "back.safetensors")
    C.convert(mo, back, to="pt", model=toy, progress=False)
    b = st_load_np(back)
    assert sorted(b) == sorted(sd) and all(_bytes_equal(b[k], v.numpy()) for k, v in sd.items())


def test_mindone_prefixes_are_stripped(tmp_path):
    toy = _toy()
    spec = spec_from_torch(toy)
    dia = rules.mindone()
    items = [{"name": "network._backbone." + dia.encode(k, p.shape, p.dtype, spec).name,
              "data": ms.Tensor(v.numpy())} for (k, v), p in zip(toy.state_dict().items(), spec.params.values())]
    p = str(tmp_path / "wrapped.ckpt")
    ms.save_checkpoint(items, p)
    assert C.verify(p, model=spec)["dialect"] == "mindone"


def test_spec_cache_equals_a_fresh_meta_build(tmp_path, monkeypatch):
    from converters import spec as S

    monkeypatch.setenv("OPENSORA_DUAL_CACHE", str(tmp_path / "c"))
    for name in (PRESET, "STDiT3-XL/2"):
        fam, kw = registry.resolve(name)
        fresh = S.spec_from_torch(S.build_meta(fam, kw))
        first = S.spec_for(fam, kw, "x")                  # builds and stores
        assert os.path.exists(S._cache_path(fam, kw))
        cached = S.spec_for(fam, kw, "x")                 # loads
        assert cached.params == fresh.params == first.params
    n = len(os.listdir(tmp_path / "c" / "specs"))
    S.spec_for(fam, dict(kw, depth=3), "x")               # other kwargs, other entry
    assert len(os.listdir(tmp_path / "c" / "specs")) == n + 1
    monkeypatch.setenv("OPENSORA_DUAL_SPEC_CACHE", "0")
    assert S._cache_path(fam, kw) is None


def test_every_dialect_rule_inverts_exactly():
    for model in (_toy(), registry.build(PRESET, "pt")):
        spec = spec_from_torch(model)
        for form in ("conv3d", "linear", "conv2d"):
            dia = rules.mindone(patch_form=form)
            for k, p in spec.params.items():
                enc = dia.encode(k, p.shape, p.dtype, spec)
                dec = dia.decode(enc.name, enc.shape, p.dtype, spec)
                assert dec.name == k and dec.shape == p.shape, (form, k, enc.name, dec.name)
                a = np.arange(int(np.prod(p.shape)), dtype=np.float32).reshape(p.shape)
                assert _bytes_equal(dec.apply(enc.apply(a)), a)


# ------------------------------------------------------------------------------------------------ PixArt init
def _pixart_state(sd, rows):
    """A PixArt-style 2D checkpoint for the S/2 shapes: blocks.N, [C,4,2,2] patch conv, pos_embed, y rows."""
    pa = {}
    for k, v in sd.items():
        if k.startswith("temporal_blocks.") or k.startswith("fps_embedder.") or k == "rope.freqs":
            continue
        if k.startswith("spatial_blocks."):
            if ".q_norm." in k or ".k_norm." in k:
                continue
            pa["blocks." + k[len("spatial_blocks."):]] = v
        elif k == "x_embedder.proj.weight":
            pa[k] = v[:, :, 0]
        elif k == "y_embedder.y_embedding":
            pa[k] = torch.randn(rows, v.shape[1])
        else:
            pa[k] = v
    pa["pos_embed"] = torch.randn(1, 64, 96)
    pa["csize_embedder.mlp.0.weight"] = torch.randn(4, 4)   # PixArt-alpha 1024 extras: ignored
    return pa


@pytest.mark.parametrize("rows", [120, 10])
def test_pixart_init(tmp_path, s2, rows):
    sd = s2[1]
    pa = _pixart_state(sd, rows)
    src = str(tmp_path / "PixArt-XL-2-512x512.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in pa.items()}, "step": 3}, src)
    out = str(tmp_path / "init.safetensors")
    rep = C.convert(src, out, model=PRESET, init_from="pixart", progress=False)
    got = st_load_np(out)
    fresh = [k for k in sd if k.startswith("temporal_blocks.") or k.startswith("fps_embedder.")
             or k == "rope.freqs" or ".q_norm." in k or ".k_norm." in k]
    assert sorted(rep.initialised_fresh) == sorted(fresh)
    assert rep.ignored == ["csize_embedder.mlp.0.weight"]
    assert any("pos_embed" in d for d in rep.dropped)
    assert "initialised fresh" in str(rep)
    assert sorted(got) == sorted(set(sd) - set(fresh))
    assert _bytes_equal(got["x_embedder.proj.weight"], pa["x_embedder.proj.weight"].unsqueeze(2).numpy())
    assert _bytes_equal(got["spatial_blocks.1.mlp.fc2.weight"], pa["blocks.1.mlp.fc2.weight"].numpy())
    y = pa["y_embedder.y_embedding"].numpy()
    L = sd["y_embedder.y_embedding"].shape[0]
    want = y[:L] if rows >= L else np.concatenate([y, np.repeat(y[-1:], L - rows, 0)])
    assert _bytes_equal(got["y_embedder.y_embedding"], want)
    m = registry.build(PRESET, "pt")
    lr = C.load_state_into(m, C.read_checkpoint(out), "pt", strict=False)
    assert sorted(lr.missing) == sorted(fresh) and not lr.unexpected
    # without --init-from the same file is an error naming the problem
    with pytest.raises(C.ConversionError, match="does not match"):
        C.convert(src, str(tmp_path / "x.safetensors"), model=PRESET, progress=False)


# ------------------------------------------------------------------------------------------------ torch sources
def test_pth_wrappers_module_prefix_and_legacy_format(tmp_path, s2):
    sd = dict(s2[1])
    sd["t_block.1.weight"] = sd["t_block.1.weight"].T.contiguous().T    # a non-contiguous tensor in the pickle
    assert not sd["t_block.1.weight"].is_contiguous()
    for i, (obj, kw) in enumerate([({"ema": {"module." + k: v for k, v in sd.items()}, "optimizer": {}}, {}),
                                   ({"model": dict(sd)}, {"_use_new_zipfile_serialization": False}),
                                   (dict(sd), {})]):
        p = str(tmp_path / f"m{i}.pth")
        torch.save(obj, p, **kw)
        ck = C.read_checkpoint(p)
        assert sorted(ck.keys()) == sorted(sd)
        assert all(_bytes_equal(ck.get(k), v.contiguous().numpy()) for k, v in sd.items())
        out = str(tmp_path / f"m{i}.ckpt")
        C.convert(p, out, model=PRESET, progress=False)
        assert C.verify(out, model=PRESET, against=p)["identical"]


def test_sharded_sources(tmp_path, s2):
    sd = s2[1]
    keys = list(sd)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    # HF T5 style: pytorch_model-0000K-of-0000N.bin + index
    d1 = tmp_path / "bins"
    d1.mkdir()
    wm = {}
    for i, part in enumerate(halves):
        fn = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, d1 / fn)
        wm.update({k: fn for k in part})
    (d1 / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    # safetensors shards + index, with the release config.json
    d2 = tmp_path / "st"
    d2.mkdir()
    wm = {}
    for i, part in enumerate(halves):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        st_save_torch({k: sd[k].contiguous() for k in part}, str(d2 / fn))
        wm.update({k: fn for k in part})
    (d2 / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    fam, kw = registry.resolve(PRESET)
    (d2 / "config.json").write_text(json.dumps(fam.config_to_json(kw)))
    for d, fmt, model in ((d1, "folder/pth-sharded", PRESET), (d2, "folder/safetensors-sharded", None)):
        ck = C.read_checkpoint(str(d))
        assert ck.format == fmt
        _assert_same_state(ck, sd)
        out = str(tmp_path / f"{d.name}.ckpt")
        C.convert(str(d), out, model=model, progress=False)
        _assert_same_state(C.read_checkpoint(out), sd)
    # an index file given directly works too
    assert C.read_checkpoint(str(d2 / "model.safetensors.index.json")).format == "safetensors-sharded"


def test_family_converter_hooks(tmp_path):
    """Family.extra["converter"]: extra source rename rules and ignored keys (e.g. diffusers' old attention
    names, T5's decoder.* / lm_head.*)."""
    from opensora_dual.registry import Family

    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.to_q = nn.Linear(4, 4)
            self.norm = nn.GroupNorm(2, 4)

    toy = _rand_state(Att())
    spec = spec_from_torch(toy)
    spec.family = Family(name="toyfam", class_path="x:Y", extra={"converter": {
        "source_rules": [rules.RegexRename(r"(^|\.)query\.", r"\1to_q.")], "ignore": ["decoder.*", "lm_head.*"]}})
    src = {"query.weight": toy.to_q.weight.detach(), "query.bias": toy.to_q.bias.detach(),
           "norm.weight": toy.norm.weight.detach(), "norm.bias": toy.norm.bias.detach(),
           "decoder.block.0.weight": torch.zeros(2), "lm_head.weight": torch.zeros(2)}
    p = str(tmp_path / "old.safetensors")
    st_save_torch(src, p)
    out = str(tmp_path / "new.safetensors")
    rep = C.convert(p, out, model=spec, progress=False)
    assert len(rep.dropped) == 2
    got = st_load_np(out)
    assert _bytes_equal(got["to_q.weight"], src["query.weight"].numpy())
    with pytest.raises(C.ConversionError, match="query.weight"):
        spec.family = None
        C.convert(p, str(tmp_path / "n2.safetensors"), model=spec, progress=False)


def test_family_derived_keys_and_pth_target(tmp_path, s2):
    """Family.extra["converter"]["derived"]: keys the model computes from its config (STDiT's position tables).
    A source without them converts and loads (noted, left out of the output); one with another shape has them
    dropped; one with the model's shape provides them. ``--to pth`` writes a flat torch.save dict."""
    from opensora_dual.registry import Family

    toy = _toy()
    spec = spec_from_torch(toy)
    spec.family = Family(name="toyfam", class_path="x:Y", extra={"converter": {"derived": ["y_embedding"]}})
    sd = {k: v.clone() for k, v in toy.state_dict().items()}
    for label, mutate, kept in [("without", lambda t: t.pop("y_embedding"), False),
                                ("other shape", lambda t: t.__setitem__("y_embedding", torch.zeros(7, 8)), False),
                                ("same shape", lambda t: None, True)]:
        t = dict(sd)
        mutate(t)
        src = str(tmp_path / f"{label.replace(' ', '_')}.pth")
        torch.save(t, src)
        out = str(tmp_path / f"{label.replace(' ', '_')}.out.pth")
        rep = C.convert(src, out, model=spec, progress=False)
        got = torch.load(out, weights_only=True)
        assert ("y_embedding" in got) == kept, label
        assert any("computed by the model" in n for n in rep.notes) == (not kept), label
        assert any("another input size" in d for d in rep.dropped) == (label == "other shape"), label
        for k, v in t.items():
            if k != "y_embedding":
                assert _bytes_equal(got[k].numpy(), v.numpy()), k
    # without the family hook the missing key is an error
    spec.family = None
    with pytest.raises(C.ConversionError, match="missing keys: y_embedding"):
        C.convert(str(tmp_path / "without.pth"), str(tmp_path / "n.pth"), model=spec, progress=False)
    # STDiT3 release -> .pth -> .ckpt, bit-exact
    back = str(tmp_path / "stdit3.pth")
    rel = C.save_release_folder(s2[0], "pt", str(tmp_path / "rel"), registry.resolve(PRESET)[1], preset=PRESET)
    C.convert(rel, back, progress=False)
    assert api.infer_target(back) == "pth"
    _assert_same_state(C.read_checkpoint(back), s2[1])
    assert C.verify(back, model=PRESET, against=rel)["identical"]


# ------------------------------------------------------------------------------------------------ bad input
def _run_cli(args, capsys):
    code = cli(args)
    out, err = capsys.readouterr()
    return code, out, err


def _truncate(path, keep):
    with open(path, "rb+") as f:
        f.truncate(keep)


def _bad_inputs(tmp_path, release, s2):
    """(name, argv builder, expected message fragment)."""
    sd = s2[1]
    cases = []
    d = tmp_path / "bad"
    d.mkdir()
    st = str(d / "trunc.safetensors")
    st_save_torch(dict(sd), st)
    _truncate(st, os.path.getsize(st) - 100)
    cases.append(("truncated safetensors", st, ["--model", PRESET], "truncated safetensors"))
    hdr = str(d / "hdr.safetensors")
    with open(hdr, "wb") as f:
        f.write(struct.pack("<Q", 20) + b"{not json at all....")
    cases.append(("corrupt safetensors header", hdr, ["--model", PRESET], "corrupt safetensors header"))
    ck = str(d / "trunc.ckpt")
    C.convert(release, ck, progress=False)
    _truncate(ck, os.path.getsize(ck) // 2)
    cases.append(("truncated ckpt", ck, ["--model", PRESET], "truncated"))
    junk = str(d / "junk.ckpt")
    with open(junk, "wb") as f:
        f.write(os.urandom(4096))
    cases.append(("garbage ckpt", junk, ["--model", PRESET], ".ckpt"))
    pth = str(d / "trunc.pth")
    torch.save(dict(sd), pth)
    _truncate(pth, os.path.getsize(pth) // 2)
    cases.append(("truncated pth", pth, ["--model", PRESET], "corrupt or truncated PyTorch file"))
    evil = str(d / "evil.pth")
    torch.save({"w": torch.zeros(2), "obj": Evil()}, evil)
    cases.append(("non-tensor pickle", evil, ["--model", PRESET], "weights_only"))
    empty_ckpt = str(d / "empty.ckpt")
    open(empty_ckpt, "wb").close()
    cases.append(("empty file", empty_ckpt, ["--model", PRESET], "empty file"))
    npz = str(d / "weights.npz")
    np.savez(npz, a=np.zeros(2))
    cases.append(("unknown format", npz, ["--model", PRESET], "unknown checkpoint format"))
    cases.append(("missing file", str(d / "nope.safetensors"), ["--model", PRESET], "no such file"))
    for label, mutate, frag in [
        ("missing key", lambda t: t.pop("final_layer.linear.bias"), "missing keys: final_layer.linear.bias"),
        ("extra key", lambda t: t.__setitem__("bogus.weight", torch.zeros(2)), "unexpected keys: bogus.weight"),
        ("wrong shape", lambda t: t.__setitem__("t_block.1.weight", torch.zeros(3, 3)),
         "mis-shaped: t_block.1.weight: file [3, 3] vs model [576, 96]"),
        ("wrong dtype", lambda t: t.__setitem__("rope.freqs", torch.zeros(12, dtype=torch.int32)),
         "wrong dtype: rope.freqs: file I32 vs model F32"),
    ]:
        t = {k: v.clone() for k, v in sd.items()}
        mutate(t)
        p = str(d / f"{label.replace(' ', '_')}.safetensors")
        st_save_torch(t, p)
        cases.append((label, p, ["--model", PRESET], frag))
    mism = d / "mismatch"
    mism.mkdir()
    cfg = json.load(open(os.path.join(release, "config.json")))
    cfg["hidden_size"] = 192
    (mism / "config.json").write_text(json.dumps(cfg))
    os.link(os.path.join(release, "model.safetensors"), mism / "model.safetensors")
    cases.append(("config.json mismatch", str(mism), [], "hint: the weights and config.json disagree"))
    bare = str(d / "bare.ckpt")
    C.convert(release, bare, progress=False)
    cases.append(("no config, no model", bare, [], "pass --model NAME"))
    cases.append(("unknown model", bare, ["--model", "STDiT9-Z/1"], "unknown model 'STDiT9-Z/1'"))
    badcfg = d / "badcfg"
    badcfg.mkdir()
    (badcfg / "config.json").write_text('{"model_type": "Nope"}')
    os.link(os.path.join(release, "model.safetensors"), badcfg / "model.safetensors")
    cases.append(("unknown model_type", str(badcfg), [], "model_type 'Nope' is not a registered family"))
    shards = d / "shards"
    shards.mkdir()
    st_save_torch({k: v for k, v in list(sd.items())[:10]}, str(shards / "model-00001-of-00002.safetensors"))
    wm = {k: ("model-00001-of-00002.safetensors" if i < 10 else "model-00002-of-00002.safetensors")
          for i, k in enumerate(sd)}
    (shards / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    cases.append(("missing shard", str(shards), ["--model", PRESET], "shard model-00002-of-00002.safetensors is missing"))
    badidx = d / "badidx"
    badidx.mkdir()
    (badidx / "model.safetensors.index.json").write_text("{ nope")
    cases.append(("corrupt index", str(badidx), ["--model", PRESET], "corrupt index file"))
    badjson = d / "badjson"
    badjson.mkdir()
    (badjson / "config.json").write_text("{ nope")
    os.link(os.path.join(release, "model.safetensors"), badjson / "model.safetensors")
    cases.append(("corrupt config.json", str(badjson), [], "corrupt config.json"))
    empty = d / "empty"
    empty.mkdir()
    cases.append(("folder without weights", str(empty), ["--model", PRESET], "no weights file found"))
    return cases


def test_duplicate_and_destination_errors(tmp_path, release, capsys):
    toy = _toy()
    sd = {k: v.clone() for k, v in toy.state_dict().items()}
    sd["norm.gamma"] = sd["norm.weight"].clone()        # mindone and torch names for one parameter
    p = str(tmp_path / "dup.safetensors")
    st_save_torch(sd, p)
    with pytest.raises(C.ConversionError, match="norm.gamma and norm.weight both map to norm.weight"):
        C.convert(p, str(tmp_path / "o.safetensors"), model=toy, src_dialect="mindone", progress=False)
    (tmp_path / "adir.ckpt").mkdir()
    code, _, err = _run_cli(["convert", release, str(tmp_path / "adir.ckpt")], capsys)
    assert code == 2 and "is a folder" in err
    (tmp_path / "afile").write_text("x")
    code, _, err = _run_cli(["convert", release, str(tmp_path / "afile"), "--to", "release"], capsys)
    assert code == 2 and "is a file" in err
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):   # running as root: permissions are not enforced; use a path under a file
            target = str(tmp_path / "afile" / "x.ckpt")
        else:
            target = str(ro / "x.ckpt")
        code, _, err = _run_cli(["convert", release, target], capsys)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    finally:
        os.chmod(ro, 0o700)


def test_bad_inputs_one_clear_error_exit_2_no_output(tmp_path, release, s2, capsys):
    outdir = tmp_path / "out"
    outdir.mkdir()
    cases = _bad_inputs(tmp_path, release, s2)
    for label, src, extra, frag in cases:
        for dst in ("x.ckpt", "x.safetensors", "relfolder"):
            code, out, err = _run_cli(["convert", src, str(outdir / dst), "--no-progress"] + extra, capsys)
            assert code == 2, (label, out, err)
            assert err.startswith("error: ") and frag in err, (label, err)
            assert "Traceback" not in err
            _no_leftovers(outdir)
        code, _, err = _run_cli(["verify", src] + extra, capsys)
        assert code == 2 and frag in err, (label, err)


def test_cli_subprocess_no_traceback_and_existing_output_untouched(tmp_path, release, s2, capsys):
    dst = tmp_path / "keep.ckpt"
    dst.write_bytes(b"previous contents")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 5)
    r = subprocess.run([sys.executable, "-m", "converters", "convert", str(bad), str(dst), "--model", PRESET],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error: ")
    assert dst.read_bytes() == b"previous contents"
    _no_leftovers(tmp_path, {"keep.ckpt", "bad.safetensors", "OpenSora-STDiT-v3"})
    r = subprocess.run([sys.executable, "-m", "converters", "convert", release, str(dst), "--report",
                        str(tmp_path / "rep.json")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "89 tensors" in r.stdout and json.load(open(tmp_path / "rep.json"))["tensors"] == 89
    code, out, err = _run_cli(["inspect", str(dst), "--model", PRESET], capsys)
    assert code == 0 and "matches the model" in out, out + err
    code, out, err = _run_cli(["verify", str(dst), "--model", PRESET, "--against", release, "--load", "ms"], capsys)
    assert code == 0 and "bit-identical" in out and "strict-loaded" in out, out + err
    code, out, err = _run_cli(["verify", str(dst), "--model", PRESET, "--against", str(tmp_path / "x.ckpt")],
                              capsys)
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize("dst,to", [("int.ckpt", "ms"), ("int.safetensors", "pt"), ("int_rel", "release"),
                                    ("int_mo.ckpt", "mindone")])
def test_interrupted_write_leaves_nothing(tmp_path, release, monkeypatch, dst, to):
    import tqdm

    calls = {"n": 0}
    orig = tqdm.tqdm.update

    def boom(self, n=1):   # the conversion loop reports every tensor written: interrupt at the 5th
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return orig(self, n)

    monkeypatch.setattr(tqdm.tqdm, "update", boom)
    monkeypatch.setattr(api, "PASSTHROUGH", to != "mindone")   # both write paths
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        C.convert(release, str(out / dst), to=to, progress=False)
    _no_leftovers(out)
    if to != "release":   # an existing file survives an interrupted rewrite, unchanged
        (out / dst).write_bytes(b"old contents")
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            C.convert(release, str(out / dst), to=to, progress=False)
        assert (out / dst).read_bytes() == b"old contents" and os.listdir(out) == [dst]
    # an existing release folder survives a failed rewrite
    if to == "release":
        monkeypatch.setattr(tqdm.tqdm, "update", orig)
        C.convert(release, str(out / dst), to=to, progress=False)
        before = sorted(os.listdir(out / dst))
        calls["n"] = 0
        monkeypatch.setattr(tqdm.tqdm, "update", boom)
        with pytest.raises(KeyboardInterrupt):
            C.convert(release, str(out / dst), to=to, progress=False)
        assert sorted(os.listdir(out)) == [dst] and sorted(os.listdir(out / dst)) == before


# ------------------------------------------------------------------------------------------------ streaming
def test_reader_holds_one_tensor_at_a_time(tmp_path, release, monkeypatch):
    from converters.checkpoint import Checkpoint

    live, peak = [], {"n": 0, "reads": 0}
    orig = Checkpoint.read_raw

    def tracked(self, name):
        raw, dt = orig(self, name)
        peak["reads"] += 1
        alive = [r for r in live if r() is not None]
        peak["n"] = max(peak["n"], len(alive) + 1)
        live[:] = alive + [weakref.ref(raw.base if raw.base is not None else raw)]
        return raw, dt

    monkeypatch.setattr(Checkpoint, "read_raw", tracked)
    monkeypatch.setattr(api, "PASSTHROUGH", False)
    for dst in ("a.ckpt", "a.safetensors"):
        C.convert(release, str(tmp_path / dst), progress=False)
        assert peak["n"] == 1, peak
    C.convert(str(tmp_path / "a.ckpt"), str(tmp_path / "b.safetensors"), model=PRESET, dtype="bf16", progress=False)
    assert peak["n"] == 1
    assert peak["reads"] == 3 * 89


@pytest.mark.parametrize("to,dst,kw", [("ms", "x.ckpt", {}), ("pt", "x.safetensors", {}),
                                        ("mindone", "x.ckpt", {"patch_form": "linear"}),
                                        ("ms", "x.ckpt", {"dtype": "fp16"})])
def test_kernel_copy_path_gives_the_same_bytes(tmp_path, release, monkeypatch, to, dst, kw):
    """Unchanged tensors are copied file-to-file by the kernel; the output equals the read/write path's."""
    a, b = tmp_path / "fast", tmp_path / "slow"
    a.mkdir(), b.mkdir()
    C.convert(release, str(a / dst), to=to, progress=False, **kw)
    ck = str(a / dst)
    C.convert(ck, str(a / ("2" + dst)), to=to, model=PRESET, progress=False)   # a .ckpt source too
    monkeypatch.setattr(api, "PASSTHROUGH", False)
    C.convert(release, str(b / dst), to=to, progress=False, **kw)
    C.convert(str(b / dst), str(b / ("2" + dst)), to=to, model=PRESET, progress=False)
    for f in (dst, "2" + dst):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


_RSS_CHILD = r"""
import os, sys, resource
sys.path.insert(0, {repo!r})
import numpy as np, torch
from torch import nn
import converters as C
from converters.st_io import SafetensorsWriter
class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2048, 2048) for _ in range(24)])   # 24 x 16 MiB = 384 MiB fp32
with torch.device("meta"):
    big = Big()
src, dst = sys.argv[1], sys.argv[2]
if sys.argv[3] == "write":
    sd = big.state_dict()
    rng = np.random.default_rng(0)
    if src.endswith(".pth"):
        torch.save({{"ema": {{"module." + k: torch.from_numpy(rng.standard_normal(tuple(v.shape), dtype=np.float32))
                            for k, v in sd.items()}}}}, src)
    else:
        w = SafetensorsWriter(src, [(k, "F32", tuple(v.shape)) for k, v in sd.items()])
        for k, v in sd.items():
            w.write(k, rng.standard_normal(tuple(v.shape), dtype=np.float32))
        w.close()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    C.convert(src, dst, model=big, progress=False, dtype=sys.argv[4] if sys.argv[4] != "-" else None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(base, peak)
"""


@pytest.mark.parametrize("src_name,dtype", [("big.safetensors", "-"), ("big.pth", "-"), ("big.pth", "bf16")])
def test_streaming_peak_rss_on_a_large_file(tmp_path, src_name, dtype):
    """A 384 MiB source converts with far less than its size in extra memory (kernel copy and read path)."""
    child = tmp_path / "child.py"
    child.write_text(_RSS_CHILD.format(repo=REPO))
    src, dst = str(tmp_path / src_name), str(tmp_path / "big.ckpt")
    subprocess.run([sys.executable, str(child), src, dst, "write", "-"], check=True, timeout=600)
    assert os.path.getsize(src) > 380 * 2**20
    r = subprocess.run([sys.executable, str(child), src, dst, "convert", dtype], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    base, peak = (int(x) for x in r.stdout.split()[-2:])
    grew_mib = (peak - base) / 1024
    assert grew_mib < 100, f"conversion grew RSS by {grew_mib:.0f} MiB for a 384 MiB file"
    assert os.path.getsize(dst) > (190 if dtype == "bf16" else 380) * 2**20


def test_cli_interrupt_exit_130_and_inspect_json(tmp_path, release, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "convert", interrupted)
    code, _, err = _run_cli(["convert", release, str(tmp_path / "x.ckpt")], capsys)
    assert code == 130 and "no output written" in err and "Traceback" not in err
    code, out, _ = _run_cli(["inspect", release, "--json", "--limit", "3"], capsys)
    info = json.loads(out)
    assert code == 0 and info["tensors"] == 89 and info["dialect"] == "ours" and info["problems"] == {}
    assert info["config"]["model_type"] == "STDiT3" and len(info["keys"]) == 3


# ------------------------------------------------------------------------------------------------ MMDiT layouts
# Open-Sora 2.0 (separate q/k/v, rotate-half RoPE) and BFL Flux (fused qkv / linear1, adjacent-pair RoPE).
def _mm(name, **over):
    return _rand_state(registry.build(name, "pt", **over))


def _np_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_mmdit_bare_release_file_and_flux_file_load_into_both_twins(tmp_path):
    """Open_Sora_v2.safetensors is a bare file (no config.json): it loads with a preset; so does a Flux file."""
    for preset in ("MMDiT-S", "Flux-S"):
        m = _mm(preset)
        path = str(tmp_path / f"{preset}.safetensors")
        st_save_torch({k: v.contiguous() for k, v in m.state_dict().items()}, path)   # upstream: no config
        with pytest.raises(C.ConversionError, match="no config.json"):
            C.from_pretrained(None, path, "pt")
        for backend in ("pt", "ms"):
            got = C.model_tensors(C.from_pretrained(None, path, backend, model=preset), backend)
            ref = _np_state(m)
            assert set(got) == set(ref)
            assert all(_bytes_equal(got[k], ref[k]) for k in ref)


def test_mmdit_split_rows_and_concat_view_are_inverse_bit_exact(tmp_path):
    """flux dialect: fused qkv/linear1 split into separate projections (one source key -> three of ours);
    ConcatRowsView fuses them back; file conversion through convert() and back is bit-exact."""
    from converters.engine import ConcatRowsView
    from opensora_dual.families.mmdit import fuse_groups

    fam = registry.get_family("mmdit")
    flux = _mm("Flux-S")
    src = _np_state(flux)
    sep_kw = dict(registry.resolve("Flux-S")[1], fused_qkv=False)
    sep = _rand_state(registry.get_family("mmdit").model_class("pt")(**sep_kw), seed=3)
    rep = C.load_state_into(sep, src, "pt", family=fam, dialect="flux")
    assert rep.ok
    s = _np_state(sep)
    C_ = 96
    np.testing.assert_array_equal(s["double_blocks.0.img_attn.k_proj.weight"],
                                  src["double_blocks.0.img_attn.qkv.weight"][C_:2 * C_])
    np.testing.assert_array_equal(s["single_blocks.1.v_mlp.bias"], src["single_blocks.1.linear1.bias"][2 * C_:])
    with pytest.raises(C.ConversionError, match="unexpected"):   # without the dialect: a clear mismatch
        C.load_state_into(registry.get_family("mmdit").model_class("pt")(**sep_kw), src, "pt", family=fam)
    view = ConcatRowsView(s, fuse_groups(s))
    back = _rand_state(registry.build("Flux-S", "pt"), seed=4)
    assert C.load_state_into(back, view, "pt", family=fam).ok
    assert all(_bytes_equal(v, src[k]) for k, v in _np_state(back).items())
    # the same split through a file conversion (the dialect is a converter option)
    path = str(tmp_path / "flux.safetensors")
    st_save_torch({k: v.contiguous() for k, v in flux.state_dict().items()}, path)
    out = str(tmp_path / "sep.safetensors")
    C.convert(path, out, model="Flux-S", overrides={"fused_qkv": False}, src_dialect="flux", progress=False)
    conv = st_load_np(out)
    assert all(_bytes_equal(conv[k], s[k]) for k in s)


def test_mmdit_rope_pairing_permutation_round_trips_bit_exact():
    """flux-to-liger permutes q/k head dims (rearrange_tensor: 2d -> d, 2d+1 -> D/2+d) and the QK-norm scales;
    its encode is the inverse; liger-to-flux is the reverse dialect: every key round-trips bit for bit."""
    from converters.engine import ConcatRowsView
    from opensora_dual.families.mmdit import fuse_groups

    fam = registry.get_family("mmdit")
    dialects = fam.extra["converter"]["dialects"]
    for preset, over in (("MMDiT-S", {}), ("Flux-S", {}), ("Flux-S", {"use_liger_rope": True})):
        spec = spec_from_torch(registry.build(preset, "pt", **over))
        for name in ("flux-to-liger", "liger-to-flux", "flux"):
            dia = dialects[name]({})
            for k, p in spec.params.items():
                enc = dia.encode(k, p.shape, p.dtype, spec)
                dec = dia.decode(enc.name, enc.shape, p.dtype, spec)
                assert dec.name == k and dec.shape == p.shape, (name, k)
                a = np.arange(int(np.prod(p.shape)), dtype=np.float32).reshape(p.shape)
                assert _bytes_equal(dec.apply(enc.apply(a)), a)
    # the permutation itself, on a q weight and a norm scale (D = 24)
    D = 24
    idx = rules.rope_pair_index(D, "liger")
    assert list(idx[:3]) == [0, 2, 4] and list(idx[D // 2:D // 2 + 3]) == [1, 3, 5]
    assert list(rules.rope_pair_index(D, "adjacent")[idx]) == list(range(D))
    flux = _mm("Flux-S")
    src = _np_state(flux)
    liger_kw = dict(registry.resolve("Flux-S")[1], use_liger_rope=True, fused_qkv=False)
    cls = fam.model_class("pt")
    liger = cls(**liger_kw)
    assert C.load_state_into(liger, src, "pt", family=fam, dialect="flux-to-liger").ok
    s = _np_state(liger)
    np.testing.assert_array_equal(s["single_blocks.0.norm.key_norm.scale"], src["single_blocks.0.norm.key_norm.scale"][idx])
    q = src["double_blocks.1.txt_attn.qkv.weight"][:96].reshape(4, D, 96)[:, idx].reshape(96, 96)
    np.testing.assert_array_equal(s["double_blocks.1.txt_attn.q_proj.weight"], q)
    np.testing.assert_array_equal(s["double_blocks.1.txt_attn.v_proj.weight"],
                                  src["double_blocks.1.txt_attn.qkv.weight"][192:])     # v untouched
    # and back: fuse + liger-to-flux gives the Flux file again, bit for bit
    back = cls(**registry.resolve("Flux-S")[1])
    assert C.load_state_into(back, ConcatRowsView(s, fuse_groups(s)), "pt", family=fam, dialect="liger-to-flux").ok
    assert all(_bytes_equal(v, src[k]) for k, v in _np_state(back).items())


def test_mmdit_config_json_round_trip_and_release_folder(tmp_path):
    fam, kw = registry.resolve("MMDiT-S")
    cfg = fam.config_to_json(kw)
    assert cfg["model_type"] == "MMDiT" and cfg["axes_dim"] == [4, 10, 10]
    assert fam.config_from_json(json.loads(json.dumps(cfg))) == {**{k: v for k, v in
                                                                   fam.config_from_json(cfg).items()}, **kw}
    m = _mm("MMDiT-S")
    folder = C.save_release_folder(m, "pt", str(tmp_path / "mm"), kw, preset="MMDiT-S")
    got = C.model_tensors(C.from_pretrained(None, folder, "ms"), "ms")
    assert all(_bytes_equal(got[k], v) for k, v in _np_state(m).items())
