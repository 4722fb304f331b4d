"""Flux image autoencoder (Open-Sora 2.0 ``autoencoder_2d`` / ``AutoEncoderFlux``) parity: Downsample (pad right /
bottom), Upsample (nearest x2), ResnetBlock with and without ``nin_shortcut``, the 1x1-conv AttnBlock, Encoder,
Decoder and the whole small AE (posterior mode, sampled with pre-drawn noise, decode, round trip), fp32/fp16,
PyNative and graph mode, the port's micro-batch and im2col-conv switches against the reference, the release key
layout (and the diffusers layout) through the converter, and full-width blocks / the full AE on tiny inputs.
"""
import gc
import json
import os

import numpy as np
import pytest

import mindspore as ms  # noqa: F401  (before anything that may import decord)
import torch

import converters
from opensora_dual.families import flux_ae as fam_mod
from opensora_dual.registry import build, get_family, resolve
from parity_tests import standard
from parity_tests.engine import Case, assert_case
from parity_tests.inputs import (assert_release_roundtrip, encode_inputs, model_case_factory, randn, switched,
                                 video)

import pt_reference.models.vae.autoencoder_2d as P
import ms_impl.models.vae.autoencoder_2d as M
from ms_impl.layers import set_conv_impl

SMALL, FULL = "FluxAE-S", "FluxAE"
_, SKW = resolve(SMALL)
CH, MULT, NRB, Z = SKW["ch"], SKW["ch_mult"], SKW["num_res_blocks"], SKW["z_channels"]   # 32, (1, 2), 1, 16
ENC = dict(resolution=SKW["resolution"], in_channels=3, ch=CH, ch_mult=MULT, num_res_blocks=NRB, z_channels=Z)
DEC = dict(resolution=SKW["resolution"], ch=CH, out_ch=3, ch_mult=MULT, num_res_blocks=NRB, z_channels=Z)
F = 2 ** (len(MULT) - 1)    # small preset's spatial compression (2)


# ------------------------------------------------------------------------- calls shared by both twins
def encode_mode(model, x):
    return model.encode(x, sample_posterior=False)


def encode_sampled(model, x, noise):
    z, posterior = model.encode(x, sample_posterior=True, noise=noise, return_posterior=True)
    return z, posterior.mean, posterior.std


def encode_default(model, x, noise):
    """``encode(x, noise=...)`` with ``sample_posterior=None``: follows ``model.sample`` (True, upstream's)."""
    return model.encode(x, noise=noise)


def encode_decode(model, x, noise):
    z = model.encode(x, noise=noise)
    return z, model.decode(z)


def _pt_ae(**attrs):
    return switched(SMALL, "pt", **attrs)


def _ms_ae(**switches):
    """The small port with switches set after construction (``set_<name>`` methods or attributes)."""
    return switched(SMALL, "ms", **switches)


ae_case = model_case_factory(_pt_ae, _ms_ae)


def _enc_inputs(b, t, h, w):
    return encode_inputs(fam_mod.latent_size, SKW, Z, b, t, h, w)


# ------------------------------------------------------------------------- the case table (small configs)
CASES = [
    # layers: stride-2 conv after a (0, 1, 0, 1) zero pad (odd and even sizes), nearest x2 + conv
    Case("downsample_even", lambda: P.Downsample(32), lambda: M.Downsample(32),
         lambda rng: {"x": randn(rng, 2, 32, 8, 6)}, level="layer"),
    Case("downsample_odd", lambda: P.Downsample(32), lambda: M.Downsample(32),
         lambda rng: {"x": randn(rng, 1, 32, 7, 5)}, level="layer"),
    Case("upsample", lambda: P.Upsample(32), lambda: M.Upsample(32), lambda rng: {"x": randn(rng, 2, 32, 3, 5)},
         level="layer"),
    # blocks (x1e-3 and x1e3 inputs exercise the GroupNorm eps 1e-6)
    Case("resnet_same_ch", lambda: P.ResnetBlock(32, 32), lambda: M.ResnetBlock(32, 32),
         lambda rng: {"x": randn(rng, 2, 32, 6, 6)}, level="block"),
    Case("resnet_shortcut", lambda: P.ResnetBlock(32, 64), lambda: M.ResnetBlock(32, 64),
         lambda rng: {"x": randn(rng, 2, 32, 6, 5)}, level="block"),
    Case("resnet_small_scale", lambda: P.ResnetBlock(32, 64), lambda: M.ResnetBlock(32, 64),
         lambda rng: {"x": 1e-3 * randn(rng, 1, 32, 4, 4)}, level="block"),
    Case("resnet_large_scale", lambda: P.ResnetBlock(32, 32), lambda: M.ResnetBlock(32, 32),
         lambda rng: {"x": 1e3 * randn(rng, 1, 32, 4, 4)}, level="block"),
    Case("attn_block", lambda: P.AttnBlock(64), lambda: M.AttnBlock(64),
         lambda rng: {"x": randn(rng, 2, 64, 4, 5)}, level="block"),
    Case("attn_block_large_scale", lambda: P.AttnBlock(64), lambda: M.AttnBlock(64),
         lambda rng: {"x": 1e3 * randn(rng, 1, 64, 3, 3)}, level="block"),
    # encoder, decoder, whole AE (mode, sampled with pre-drawn noise, default = upstream's sample=True, decode)
    Case("encoder", lambda: P.Encoder(**ENC), lambda: M.Encoder(**ENC),
         lambda rng: {"x": video(rng, 2, 3, 16, 12)}, level="model_small"),
    Case("decoder", lambda: P.Decoder(**DEC), lambda: M.Decoder(**DEC),
         lambda rng: {"z": randn(rng, 2, Z, 6, 8)}, level="model_small"),
    ae_case("ae_encode_mode", encode_mode, lambda rng: {"x": video(rng, 2, 3, 2, 16, 12)}, cache_key="flux_ae_small"),
    ae_case("ae_encode_sampled", encode_sampled, _enc_inputs(1, 2, 16, 16), cache_key="flux_ae_small"),
    ae_case("ae_encode_default_samples", encode_default, _enc_inputs(1, 2, 16, 16), cache_key="flux_ae_small"),
    ae_case("ae_decode", "decode", lambda rng: {"z": randn(rng, 2, Z, 2, 8, 6)}, cache_key="flux_ae_small"),
    ae_case("ae_roundtrip", encode_decode, _enc_inputs(1, 2, 16, 16), cache_key="flux_ae_small"),
    # fp16: port in fp16 (GroupNorm, swish, softmax, posterior fp32); PyTorch fp32 / fp16 / fp64 for the floor
    Case("resnet_shortcut", lambda: P.ResnetBlock(32, 64), lambda: M.ResnetBlock(32, 64),
         lambda rng: {"x": randn(rng, 2, 32, 6, 5)}, level="block", dtype="fp16"),
    Case("attn_block", lambda: P.AttnBlock(64), lambda: M.AttnBlock(64),
         lambda rng: {"x": randn(rng, 2, 64, 4, 5)}, level="block", dtype="fp16", noise_floor="attention"),
    ae_case("ae_encode_sampled", encode_sampled, _enc_inputs(1, 1, 16, 16), dtype="fp16",
            cache_key="flux_ae_small"),
    ae_case("ae_decode", "decode", lambda rng: {"z": randn(rng, 1, Z, 1, 8, 8)}, dtype="fp16",
            cache_key="flux_ae_small"),
    # graph mode: encoder and decoder compiled with ms.jit, with the device conv kernel (``conv_impl="native"``,
    # the default): MindSpore's compile time grows with the unrolled im2col convs (decoder measured 33 s vs 12 s
    # native on this loaded machine)
    Case("encoder_native_conv", lambda: P.Encoder(**ENC), lambda: set_conv_impl(M.Encoder(**ENC), "native"),
         lambda rng: {"x": video(rng, 1, 3, 8, 8)}, level="model_small", mode="graph"),
    Case("decoder_native_conv", lambda: P.Decoder(**DEC), lambda: set_conv_impl(M.Decoder(**DEC), "native"),
         lambda rng: {"z": randn(rng, 1, Z, 4, 4)}, level="model_small", mode="graph"),
    # port switches against the (untouched) reference: micro-batching over frames (B*T = 6 frames 4 at a time;
    # 3 frames 1 at a time), the im2col conv form
    ae_case("micro_batch_4_encode", encode_sampled, _enc_inputs(2, 3, 8, 8), port=_ms_ae(micro_batch_size=4),
            capture=False),
    ae_case("micro_batch_1_decode", "decode", lambda rng: {"z": randn(rng, 1, Z, 3, 4, 4)},
            port=_ms_ae(micro_batch_size=1), capture=False),
    ae_case("micro_batch_both_twins_roundtrip", encode_decode, _enc_inputs(1, 3, 4, 4),
            pt=_pt_ae(micro_batch_size=2), port=_ms_ae(micro_batch_size=2), capture=False),
    ae_case("conv_impl_im2col_encode", encode_sampled, _enc_inputs(1, 1, 8, 8), port=_ms_ae(conv_impl="im2col"),
            capture=False),
    ae_case("conv_impl_im2col_decode", "decode", lambda rng: {"z": randn(rng, 1, Z, 1, 4, 4)},
            port=_ms_ae(conv_impl="im2col"), capture=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_flux_ae_parity(case):
    assert_case(case)


# ------------------------------------------------------------------------- semantics, attributes, shapes
def test_attributes_and_latent_shapes():
    for preset, f in ((SMALL, F), (FULL, 8)):
        for backend in ("pt", "ms"):
            if preset == FULL and backend == "pt":
                with torch.device("meta"):
                    m = build(preset, backend)
            elif preset == FULL:
                continue   # the full port is built in the full-size tests
            else:
                m = build(preset, backend)
            assert m.latent_channels == 16 and m.out_channels == 3 and m.sample is True
            assert m.spatial_compression_ratio == f and m.time_compression_ratio == 1
            assert m.compression == (1, f, f) and m.micro_batch_size is None
            assert m.get_latent_size([5, 8 * f + 1, 4 * f]) == [5, 8, 4]
    assert fam_mod.latent_size(resolve(FULL)[1], 1, 768, 1024) == (1, 96, 128)
    assert fam_mod.latent_size(resolve(FULL)[1], 3, 17, 16) == (3, 2, 2)   # floor: pad right/bottom, stride 2
    # shapes through both twins (odd size: 17 -> 8)
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    converters.pt_to_ms(pt, port)
    x = video(np.random.default_rng(0), 1, 3, 2, 17, 10)
    with torch.no_grad():
        z = pt.encode(torch.from_numpy(x), sample_posterior=False)
        assert tuple(z.shape) == (1, 16, 2, 8, 5) and tuple(pt.decode(z).shape) == (1, 3, 2, 16, 10)
    zm = port.encode(x, sample_posterior=False)
    assert tuple(zm.shape) == (1, 16, 2, 8, 5) and tuple(port.decode(zm).shape) == (1, 3, 2, 16, 10)


def test_frames_are_independent_and_posterior_semantics():
    """Each frame is encoded alone (a 2D AE: changing frame 1 leaves latent frame 0 bit-identical); logvar is
    clamped to [-30, 20]; z = 0.3611 * (mean - 0.1159) deterministically; ``sample=True`` (upstream's default)
    makes ``encode`` draw fresh noise when none is given, ``sample=False`` makes it the mean."""
    rng = np.random.default_rng(1)
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    with torch.no_grad():
        pt.encoder.conv_out.bias[Z:Z + 4] += 100.0
        pt.encoder.conv_out.bias[Z + 4:] -= 100.0
    converters.pt_to_ms(pt, port)
    x = video(rng, 1, 3, 2, 8, 8)
    x2 = x.copy()
    x2[:, :, 1] = video(rng, 1, 3, 8, 8)
    with torch.no_grad():
        a, b = (pt.encode(torch.from_numpy(v), sample_posterior=False).numpy() for v in (x, x2))
        z, post = pt.encode(torch.from_numpy(x), sample_posterior=False, return_posterior=True)
        s1, s2 = pt.encode(torch.from_numpy(x)).numpy(), pt.encode(torch.from_numpy(x)).numpy()
    c, d = (port.encode(v, sample_posterior=False).asnumpy() for v in (x, x2))
    zm, postm = port.encode(x, sample_posterior=False, return_posterior=True)
    t1, t2 = port.encode(x).asnumpy(), port.encode(x).asnumpy()
    for lo, hi in ((a, b), (c, d)):
        np.testing.assert_array_equal(lo[:, :, 0], hi[:, :, 0])
        assert np.abs(lo[:, :, 1] - hi[:, :, 1]).max() > 1e-4
    for lv in (post.logvar.numpy(), postm.logvar.asnumpy()):
        assert lv[:, :4].max() == 20.0 and lv[:, 4:].min() == -30.0
    np.testing.assert_allclose(z.numpy(), 0.3611 * (post.mean.numpy() - 0.1159), rtol=1e-6, atol=1e-7)
    v = standard.judge(standard.compare(zm.asnumpy(), z.numpy(), "float32"), "model_small", "fp32")
    assert v.passed, v.reasons
    for u1, u2 in ((s1, s2), (t1, t2)):   # sampled twice without noise: different draws
        assert np.abs(u1 - u2).max() > 1e-3
    pt.sample, port.sample = False, False
    with torch.no_grad():
        np.testing.assert_array_equal(pt.encode(torch.from_numpy(x)).numpy(), a)
    np.testing.assert_array_equal(port.encode(x).asnumpy(), c)


# ------------------------------------------------------------------------- configs and the converter
def test_config_json_roundtrip_and_presets_from_yaml():
    import yaml

    fam = get_family("flux_ae")
    assert fam.model_class("pt") is P.AutoEncoderFlux and fam.model_class("ms") is M.AutoEncoderFlux
    for preset in (SMALL, FULL):
        kw = resolve(preset)[1]
        assert fam.config_from_json(fam.config_to_json(kw)) == {**fam_mod.CONFIG_DEFAULTS, **kw}
    # upstream's t2i2v plugin config dict
    up = dict(type="autoencoder_2d", from_pretrained="./ckpts/flux1-dev-ae.safetensors", resolution=256,
              in_channels=3, ch=128, out_ch=3, ch_mult=[1, 2, 4, 4], num_res_blocks=2, z_channels=16,
              scale_factor=0.3611, shift_factor=0.1159)
    assert {**fam_mod.CONFIG_DEFAULTS, **fam.config_from_json(up)} == {**fam_mod.CONFIG_DEFAULTS, **resolve(FULL)[1]}
    with pytest.raises(ValueError):
        fam.config_from_json(dict(type="hunyuan_vae"))
    # the diffusers FLUX.1-dev vae/config.json
    dc = {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512], "in_channels": 3,
          "out_channels": 3, "latent_channels": 16, "layers_per_block": 2, "norm_num_groups": 32,
          "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
          "use_post_quant_conv": False}
    got = fam.config_from_json(dc)
    assert {k: got[k] for k in ("ch", "ch_mult", "num_res_blocks", "z_channels", "scale_factor", "shift_factor")} \
        == dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16, scale_factor=0.3611,
                shift_factor=0.1159)
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "vae", "flux_ae.yaml")) as f:
        data = yaml.safe_load(f)
    assert {k: {a: tuple(b) if isinstance(b, list) else b for a, b in v.items()} for k, v in data.items()} == \
        {SMALL: resolve(SMALL)[1], FULL: resolve(FULL)[1]}


def test_same_keys_small_both_backends():
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    a, b = converters.model_tensors(pt, "pt"), converters.model_tensors(port, "ms")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert a["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert "encoder.down.1.block.0.nin_shortcut.weight" in a and "decoder.up.1.upsample.conv.weight" in a
    assert not any(".attn." in k or "quant_conv" in k for k in a)


def _release_file(tmp_path, preset, name="flux1-dev-ae.safetensors", rename=None, dtype=None):
    """A bare safetensors in the release layout (upstream key names, no config), from a seeded reference."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pt = build(preset, "pt")
    sd = {k: v.contiguous() for k, v in pt.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    if rename:
        sd = dict(rename(k, v) for k, v in sd.items())
    path = tmp_path / name
    save_file(sd, str(path))
    del sd
    return pt, path


def test_release_layout_loads_strict_and_roundtrips_bit_exact(tmp_path):
    pt, path = _release_file(tmp_path, SMALL)
    want = {k: v.numpy() for k, v in pt.state_dict().items()}
    # strict loads in both twins; release -> MindSpore ckpt -> PyTorch safetensors: bit-exact both ways
    assert_release_roundtrip(path, SMALL, want, tmp_path)
    # a folder holding the release file name; the class method
    folder = tmp_path / "release"
    folder.mkdir()
    os.replace(str(path), str(folder / "flux1-dev-ae.safetensors"))
    m = M.AutoEncoderFlux.from_pretrained(str(folder), model=SMALL)
    np.testing.assert_array_equal(converters.model_tensors(m, "ms")["decoder.up.1.upsample.conv.weight"],
                                  want["decoder.up.1.upsample.conv.weight"])


def test_bf16_release_file_loads(tmp_path):
    """A bf16 copy of the weights loads into both twins (the converter casts to the model's fp32)."""
    pt, path = _release_file(tmp_path, SMALL, dtype=torch.bfloat16)
    want = {k: v.to(torch.bfloat16).float().numpy() for k, v in pt.state_dict().items()}
    for backend in ("pt", "ms"):
        got = converters.model_tensors(converters.from_pretrained(None, str(path), backend, model=SMALL), backend)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _to_diffusers(n_levels):
    """BFL name -> diffusers AutoencoderKL name (and attention 1x1 conv -> Linear), for the dialect test."""
    import re

    def rename(k, v):
        d = k
        m = re.match(r"^decoder\.up\.(\d+)\.(block\.(\d+)\.|upsample\.conv\.)", d)
        if m:
            i = n_levels - 1 - int(m.group(1))
            tail = f"resnets.{m.group(3)}." if m.group(3) is not None else "upsamplers.0.conv."
            d = f"decoder.up_blocks.{i}.{tail}" + d[m.end():]
        for pat, rep in ((r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
                         (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
                         (r"\.mid\.block_1\.", ".mid_block.resnets.0."), (r"\.mid\.block_2\.", ".mid_block.resnets.1."),
                         (r"\.mid\.attn_1\.norm\.", ".mid_block.attentions.0.group_norm."),
                         (r"\.mid\.attn_1\.q\.", ".mid_block.attentions.0.to_q."),
                         (r"\.mid\.attn_1\.k\.", ".mid_block.attentions.0.to_k."),
                         (r"\.mid\.attn_1\.v\.", ".mid_block.attentions.0.to_v."),
                         (r"\.mid\.attn_1\.proj_out\.", ".mid_block.attentions.0.to_out.0."),
                         (r"\.norm_out\.", ".conv_norm_out."), (r"\.nin_shortcut\.", ".conv_shortcut.")):
            d = re.sub(pat, rep, d)
        if ".attentions.0.to_" in d and v.ndim == 4:
            v = v.reshape(v.shape[0], v.shape[1]).contiguous()
        return d, v
    return rename


def test_diffusers_layout_loads(tmp_path):
    """The diffusers copy (``FLUX.1-dev/vae/diffusion_pytorch_model.safetensors``: AutoencoderKL names, decoder
    up blocks counted the other way, attention Linears) decodes to the BFL names, same bytes."""
    pt, path = _release_file(tmp_path, SMALL, "diffusion_pytorch_model.safetensors", rename=_to_diffusers(len(MULT)))
    from safetensors.numpy import load_file

    keys = set(load_file(str(path)))
    assert "decoder.up_blocks.0.upsamplers.0.conv.weight" in keys and "encoder.mid_block.attentions.0.to_q.weight" in keys
    want = {k: v.numpy() for k, v in pt.state_dict().items()}
    for backend in ("pt", "ms"):
        got = converters.model_tensors(converters.from_pretrained(None, str(path), backend, model=SMALL), backend)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_release_config_folder_roundtrip(tmp_path):
    """``save_release_folder`` writes config.json + model.safetensors; from_pretrained rebuilds without a preset."""
    pt = build(SMALL, "pt")
    converters.save_release_folder(pt, "pt", str(tmp_path / "rel"), resolve(SMALL)[1], preset=SMALL)
    with open(tmp_path / "rel" / "config.json") as f:
        assert json.load(f)["model_type"] == "AutoEncoderFlux"
    port = converters.from_pretrained(None, str(tmp_path / "rel"), "ms")
    got = converters.model_tensors(port, "ms")
    for k, v in converters.model_tensors(pt, "pt").items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


# ------------------------------------------------------------------------- full size
# FluxAE: 244 tensors, 83,819,683 parameters (computed here; = the BFL FLUX.1 ae.safetensors, ~335 MB in fp32)
FULL_KEYS, FULL_PARAMS = 244, 83_819_683


@pytest.mark.full_size
def test_full_size_release_file_loads_strict(tmp_path):
    """The full-size release layout (upstream names/shapes, fp32 like BFL's ae.safetensors) loads strict into both
    twins; then the whole released architecture decodes a 1x2x2 latent and encodes a 16x16 frame in both."""
    pt, path = _release_file(tmp_path, FULL)
    sd = pt.state_dict()
    assert len(sd) == FULL_KEYS and sum(p.numel() for p in pt.parameters()) == FULL_PARAMS
    assert sd["encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert sd["decoder.up.3.upsample.conv.weight"].shape == (512, 512, 3, 3)
    assert sd["encoder.conv_out.weight"].shape == (32, 512, 3, 3)
    assert sd["decoder.up.0.block.0.nin_shortcut.weight"].shape == (128, 256, 1, 1)
    port = converters.from_pretrained(None, str(path), "ms", model=FULL)
    got = converters.model_tensors(port, "ms")
    assert set(got) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)
    pt2 = converters.from_pretrained(None, str(path), "pt", model=FULL)
    assert set(pt2.state_dict()) == set(sd)
    del pt2, got, sd
    gc.collect()
    rng = np.random.default_rng(0)
    x, z = video(rng, 1, 3, 1, 16, 16), randn(rng, 1, 16, 1, 2, 2)
    with torch.no_grad():
        want = [pt.encode(torch.from_numpy(x), sample_posterior=False).numpy(), pt.decode(torch.from_numpy(z)).numpy()]
    got = [port.encode(x, sample_posterior=False).asnumpy(), port.decode(z).asnumpy()]
    for g, w in zip(got, want):
        v = standard.judge(standard.compare(g, w, "float32"), "model_full", "fp32")
        assert v.passed, v.reasons
    del pt, port
    gc.collect()


FULL_BLOCK_CASES = [
    # full width (512 ch) blocks of the release config on tiny inputs
    Case("full_resnet_512", lambda: P.ResnetBlock(512, 512), lambda: M.ResnetBlock(512, 512),
         lambda rng: {"x": randn(rng, 1, 512, 4, 4)}, level="block"),
    Case("full_resnet_256_128", lambda: P.ResnetBlock(256, 128), lambda: M.ResnetBlock(256, 128),
         lambda rng: {"x": randn(rng, 1, 256, 4, 4)}, level="block"),
    Case("full_mid_attn_512", lambda: P.AttnBlock(512), lambda: M.AttnBlock(512),
         lambda rng: {"x": randn(rng, 1, 512, 4, 4)}, level="block"),
]


@pytest.mark.full_size
@pytest.mark.parametrize("case", FULL_BLOCK_CASES, ids=lambda c: c.id)
def test_flux_ae_parity_full_size(case):
    assert_case(case)
    gc.collect()
