"""HunyuanVideo causal 3D VAE (Open-Sora 2.0 ``AutoencoderKLCausal3D``) parity: CausalConv3d (replicate pad),
down/up sampling (first frame space-only), resnets, the causal-by-frame mid attention, down/up blocks, encoder,
decoder and the whole small VAE (posterior mode, sampled with pre-drawn noise, decode), fp32/fp16, PyNative and
graph mode, every port switch (tiling, slicing, attention query chunks, im2col conv, Conv3d fp16) against the
reference, the release key layout through the converter, and full-width blocks / the full VAE on tiny inputs.
"""
import json
import os

import numpy as np
import pytest

import mindspore as ms
import torch

import converters
from opensora_dual.families import hunyuan_vae as fam_mod
from opensora_dual.registry import build, get_family, resolve
from parity_tests import standard
from parity_tests.engine import Case, assert_case, build_pair
from parity_tests.inputs import (assert_release_roundtrip, encode_inputs, model_case_factory, randn, switched,
                                 video)

import pt_reference.models.hunyuan_vae.unet_causal_3d_blocks as PB
import ms_impl.models.hunyuan_vae.unet_causal_3d_blocks as MB
import pt_reference.models.hunyuan_vae.vae as PV
import ms_impl.models.hunyuan_vae.vae as MV

SMALL, FULL = "HunyuanVAE-S", "HunyuanVAE"
_, SKW = resolve(SMALL)
G = SKW["norm_num_groups"]          # 8
CH = SKW["block_out_channels"]      # (32, 64, 64)
LAT = SKW["latent_channels"]        # 8
ARCH = dict(block_out_channels=CH, layers_per_block=SKW["layers_per_block"], norm_num_groups=G,
            time_compression_ratio=4, spatial_compression_ratio=4)
GRAPH_ARCH = dict(ARCH, block_out_channels=(16, 16))   # 2 levels, both halve T and H/W


def upstream_mask(n_frame, n_hw):
    """Upstream's ``prepare_causal_attention_mask`` loop (float 0 / -inf), as a boolean "attend" mask."""
    seq = n_frame * n_hw
    mask = np.full((seq, seq), -np.inf, np.float32)
    for i in range(seq):
        mask[i, :(i // n_hw + 1) * n_hw] = 0
    return mask == 0


# ------------------------------------------------------------------------- calls shared by both twins
def encode_mode(model, x):
    return model.encode(x, sample_posterior=False)


def encode_sampled(model, x, noise):
    z, posterior = model.encode(x, sample_posterior=True, return_posterior=True, noise=noise)
    return z, posterior.mean, posterior.std


def encode_decode(model, x, noise):
    z = model.encode(x, noise=noise)
    return z, model.decode(z)


class _PtMask(torch.nn.Module):
    def forward(self, x):
        b, _, t, h, w = x.shape
        return PB.prepare_causal_attention_mask(t, h * w, batch_size=b).float()


class _MsMask(ms.nn.Cell):
    def construct(self, x):
        b, _, t, h, w = x.shape
        return MB.prepare_causal_attention_mask(t, h * w, batch_size=b).astype(ms.float32)


def _pt_vae(**switches):
    return switched(SMALL, "pt", **switches)


def _ms_vae(**switches):
    """The small port with switches set after construction (names: attributes or ``set_<name>`` methods)."""
    return switched(SMALL, "ms", **switches)


vae_case = model_case_factory(_pt_vae, _ms_vae)


def _enc_inputs(b, t, h, w):
    return encode_inputs(fam_mod.latent_size, SKW, LAT, b, t, h, w)


# ------------------------------------------------------------------------- the case table (small configs)
CASES = [
    # layers: causal conv (replicate pad 2 frames in front, 1 pixel each side), 1x1x1 shortcut, strided downsample
    Case("causal_conv3d_k3", lambda: PB.CausalConv3d(8, 16, 3), lambda: MB.CausalConv3d(8, 16, 3),
         lambda rng: {"x": randn(rng, 2, 8, 5, 6, 7)}, level="layer"),
    Case("causal_conv3d_k1", lambda: PB.CausalConv3d(8, 4, 1), lambda: MB.CausalConv3d(8, 4, 1),
         lambda rng: {"x": randn(rng, 1, 8, 3, 4, 4)}, level="layer"),
    Case("downsample_t2s2", lambda: PB.DownsampleCausal3D(8, stride=(2, 2, 2)),
         lambda: MB.DownsampleCausal3D(8, stride=(2, 2, 2)), lambda rng: {"x": randn(rng, 2, 8, 9, 8, 7)},
         level="layer"),
    Case("downsample_t1s2", lambda: PB.DownsampleCausal3D(8, stride=(1, 2, 2)),
         lambda: MB.DownsampleCausal3D(8, stride=(1, 2, 2)), lambda rng: {"x": randn(rng, 1, 8, 4, 6, 6)},
         level="layer"),
    Case("upsample_t2s2", lambda: PB.UpsampleCausal3D(8, upsample_factor=(2, 2, 2)),
         lambda: MB.UpsampleCausal3D(8, upsample_factor=(2, 2, 2)), lambda rng: {"x": randn(rng, 2, 8, 3, 4, 5)},
         level="layer"),
    Case("upsample_t1s2", lambda: PB.UpsampleCausal3D(8, upsample_factor=(1, 2, 2)),
         lambda: MB.UpsampleCausal3D(8, upsample_factor=(1, 2, 2)), lambda rng: {"x": randn(rng, 1, 8, 3, 4, 4)},
         level="layer"),
    Case("upsample_t2s2_T1", lambda: PB.UpsampleCausal3D(8, upsample_factor=(2, 2, 2)),
         lambda: MB.UpsampleCausal3D(8, upsample_factor=(2, 2, 2)), lambda rng: {"x": randn(rng, 1, 8, 1, 4, 4)},
         level="layer"),
    Case("causal_mask", _PtMask, _MsMask, lambda rng: {"x": randn(rng, 2, 1, 3, 2, 3)}, level="op",
         transfer_weights=False),
    # blocks (x1e-3 and x1e3 inputs exercise the GroupNorm eps)
    Case("resnet_same_ch", lambda: PB.ResnetBlockCausal3D(in_channels=32, out_channels=32, groups=8),
         lambda: MB.ResnetBlockCausal3D(in_channels=32, out_channels=32, groups=8),
         lambda rng: {"input_tensor": randn(rng, 2, 32, 5, 6, 6)}, level="block"),
    Case("resnet_shortcut", lambda: PB.ResnetBlockCausal3D(in_channels=32, out_channels=64, groups=8),
         lambda: MB.ResnetBlockCausal3D(in_channels=32, out_channels=64, groups=8),
         lambda rng: {"input_tensor": randn(rng, 2, 32, 5, 6, 6)}, level="block"),
    Case("resnet_small_scale", lambda: PB.ResnetBlockCausal3D(in_channels=32, out_channels=32, groups=8),
         lambda: MB.ResnetBlockCausal3D(in_channels=32, out_channels=32, groups=8),
         lambda rng: {"input_tensor": 1e-3 * randn(rng, 1, 32, 3, 4, 4)}, level="block"),
    Case("resnet_large_scale", lambda: PB.ResnetBlockCausal3D(in_channels=32, out_channels=32, groups=8),
         lambda: MB.ResnetBlockCausal3D(in_channels=32, out_channels=32, groups=8),
         lambda rng: {"input_tensor": 1e3 * randn(rng, 1, 32, 3, 4, 4)}, level="block"),
    Case("attention_causal_mask", lambda: PB.Attention(64, heads=1, dim_head=64, norm_num_groups=8),
         lambda: MB.Attention(64, heads=1, dim_head=64, norm_num_groups=8),
         lambda rng: {"hidden_states": randn(rng, 2, 3 * 12, 64),
                      "attention_mask": np.broadcast_to(upstream_mask(3, 12), (2, 36, 36)).copy()}, level="block"),
    Case("mid_block_causal_mask", lambda: PB.UNetMidBlockCausal3D(64, resnet_groups=8, attention_head_dim=64),
         lambda: MB.UNetMidBlockCausal3D(64, resnet_groups=8, attention_head_dim=64),
         lambda rng: {"hidden_states": randn(rng, 1, 64, 3, 4, 3), "attention_mask": upstream_mask(3, 12)},
         level="block"),
    Case("down_block_t2s2", lambda: PB.DownEncoderBlockCausal3D(32, 64, num_layers=2, resnet_groups=8,
                                                                downsample_stride=(2, 2, 2)),
         lambda: MB.DownEncoderBlockCausal3D(32, 64, num_layers=2, resnet_groups=8, downsample_stride=(2, 2, 2)),
         lambda rng: {"hidden_states": randn(rng, 1, 32, 5, 8, 8)}, level="block"),
    Case("up_block_t2s2", lambda: PB.UpDecoderBlockCausal3D(64, 32, num_layers=3, resnet_groups=8,
                                                            upsample_scale_factor=(2, 2, 2)),
         lambda: MB.UpDecoderBlockCausal3D(64, 32, num_layers=3, resnet_groups=8, upsample_scale_factor=(2, 2, 2)),
         lambda rng: {"hidden_states": randn(rng, 1, 64, 3, 4, 4)}, level="block"),
    # encoder, decoder, whole VAE (mode, sampled with pre-drawn noise, decode); 9 frames -> 3 latent frames
    Case("encoder", lambda: PV.EncoderCausal3D(3, LAT, **ARCH), lambda: MV.EncoderCausal3D(3, LAT, **ARCH),
         lambda rng: {"sample": video(rng, 1, 3, 9, 16, 16)}, level="model_small"),
    Case("decoder", lambda: PV.DecoderCausal3D(LAT, 3, **ARCH), lambda: MV.DecoderCausal3D(LAT, 3, **ARCH),
         lambda rng: {"sample": randn(rng, 1, LAT, 3, 4, 4)}, level="model_small"),
    vae_case("vae_encode_mode", encode_mode, lambda rng: {"x": video(rng, 2, 3, 9, 16, 12)},
             cache_key="hunyuan_vae_small"),
    vae_case("vae_encode_sampled", encode_sampled, _enc_inputs(1, 5, 16, 16), cache_key="hunyuan_vae_small"),
    vae_case("vae_decode", "decode", lambda rng: {"z": randn(rng, 1, LAT, 3, 4, 4)}, cache_key="hunyuan_vae_small"),
    vae_case("vae_decode_T1", "decode", lambda rng: {"z": randn(rng, 2, LAT, 1, 3, 4)},
             cache_key="hunyuan_vae_small"),
    vae_case("vae_roundtrip", encode_decode, _enc_inputs(1, 9, 16, 16), cache_key="hunyuan_vae_small"),
    # fp16: port in fp16 (GroupNorm, SiLU, softmax, posterior fp32); PyTorch fp32 / fp16 / fp64 for the floor
    Case("resnet_shortcut", lambda: PB.ResnetBlockCausal3D(in_channels=32, out_channels=64, groups=8),
         lambda: MB.ResnetBlockCausal3D(in_channels=32, out_channels=64, groups=8),
         lambda rng: {"input_tensor": randn(rng, 2, 32, 5, 6, 6)}, level="block", dtype="fp16"),
    Case("attention_causal_mask", lambda: PB.Attention(64, heads=1, dim_head=64, norm_num_groups=8),
         lambda: MB.Attention(64, heads=1, dim_head=64, norm_num_groups=8),
         lambda rng: {"hidden_states": randn(rng, 2, 36, 64),
                      "attention_mask": np.broadcast_to(upstream_mask(3, 12), (2, 36, 36)).copy()},
         level="block", dtype="fp16", noise_floor="attention"),
    vae_case("vae_encode_sampled", encode_sampled, _enc_inputs(1, 5, 16, 16), dtype="fp16",
             cache_key="hunyuan_vae_small"),
    vae_case("vae_decode", "decode", lambda rng: {"z": randn(rng, 1, LAT, 3, 4, 4)}, dtype="fp16",
             cache_key="hunyuan_vae_small"),
    # graph mode: encoder and decoder compiled with ms.jit (mask built from static shapes inside). A 2-level,
    # 16-channel arch: MindSpore's compile time grows with the unrolled im2col convs (~100-200 s for the 3-level one)
    Case("encoder", lambda: PV.EncoderCausal3D(3, 4, **GRAPH_ARCH), lambda: MV.EncoderCausal3D(3, 4, **GRAPH_ARCH),
         lambda rng: {"sample": video(rng, 1, 3, 5, 8, 8)}, level="model_small", mode="graph"),
    Case("decoder", lambda: PV.DecoderCausal3D(4, 3, **GRAPH_ARCH), lambda: MV.DecoderCausal3D(4, 3, **GRAPH_ARCH),
         lambda rng: {"sample": randn(rng, 1, 4, 2, 2, 2)}, level="model_small", mode="graph"),
    # tiling (upstream's, on in both twins): spatial 24x24 px = 2x2 tiles of 16 px (latent 4, blend 1);
    # temporal 33 frames = 3 tiles of 17 (latent 5, blend 1); latent decode 6x6 / 9 frames likewise
    vae_case("spatial_tiled_encode", encode_sampled, _enc_inputs(1, 5, 24, 24),
             pt=_pt_vae(use_spatial_tiling=True), port=_ms_vae(use_spatial_tiling=True), capture=False),
    vae_case("spatial_tiled_decode", "decode", lambda rng: {"z": randn(rng, 1, LAT, 2, 6, 6)},
             pt=_pt_vae(use_spatial_tiling=True), port=_ms_vae(use_spatial_tiling=True), capture=False),
    vae_case("temporal_tiled_encode", encode_sampled, _enc_inputs(1, 33, 8, 8),
             pt=_pt_vae(use_temporal_tiling=True), port=_ms_vae(use_temporal_tiling=True), capture=False),
    vae_case("temporal_tiled_decode", "decode", lambda rng: {"z": randn(rng, 1, LAT, 9, 2, 2)},
             pt=_pt_vae(use_temporal_tiling=True), port=_ms_vae(use_temporal_tiling=True), capture=False),
    vae_case("spatiotemporal_tiled_roundtrip", encode_decode, _enc_inputs(1, 33, 24, 20),
             pt=_pt_vae(use_temporal_tiling=True, use_spatial_tiling=True),
             port=_ms_vae(use_temporal_tiling=True, use_spatial_tiling=True), capture=False),
    # port switches against the (untouched) reference; encode and decode gated separately (each side fed the
    # same input), as every whole-model case here
    vae_case("slicing_batch2_encode", encode_sampled, _enc_inputs(2, 5, 16, 16), port=_ms_vae(use_slicing=True),
             capture=False),
    vae_case("slicing_batch2_decode", "decode", lambda rng: {"z": randn(rng, 2, LAT, 2, 4, 4)},
             port=_ms_vae(use_slicing=True), capture=False),
    vae_case("attention_query_chunk_5_encode", encode_sampled, _enc_inputs(1, 9, 16, 16),
             port=_ms_vae(attention_query_chunk=5), capture=False),
    vae_case("attention_query_chunk_5_decode", "decode", lambda rng: {"z": randn(rng, 1, LAT, 3, 4, 4)},
             port=_ms_vae(attention_query_chunk=5), capture=False),
    vae_case("conv_impl_im2col_encode", encode_sampled, _enc_inputs(1, 5, 8, 8), port=_ms_vae(conv_impl="im2col"),
             capture=False),
    vae_case("conv_impl_im2col_decode", "decode", lambda rng: {"z": randn(rng, 1, LAT, 2, 2, 2)},
             port=_ms_vae(conv_impl="im2col"), capture=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hunyuan_vae_parity(case):
    assert_case(case)


# ------------------------------------------------------------------------- semantics, switches, shapes
def test_causal_mask_matches_upstream_loop():
    for t, hw in ((1, 4), (3, 2), (4, 6)):
        want = upstream_mask(t, hw)
        assert np.array_equal(PB.prepare_causal_attention_mask(t, hw).numpy(), want)
        assert np.array_equal(MB.prepare_causal_attention_mask(t, hw).asnumpy(), want)


def test_causal_layers_and_groupnorm_non_causality():
    """CausalConv3d, the down/up samplers and the masked attention core never look at later frames; the whole
    VAE still does, through GroupNorm (statistics over all frames, as upstream): changing frames 5..8 changes
    latent frame 0 too. Both twins show both properties."""
    rng = np.random.default_rng(0)
    x = randn(rng, 1, 8, 5, 4, 4)
    x2 = x.copy()
    x2[:, :, 3:] += randn(rng, 1, 8, 2, 4, 4)
    for pt_cls, ms_cls, kw in ((PB.CausalConv3d, MB.CausalConv3d, dict(chan_in=8, chan_out=8, kernel_size=3)),
                               (PB.DownsampleCausal3D, MB.DownsampleCausal3D, dict(channels=8, stride=(2, 2, 2)))):
        pt, port = pt_cls(**kw), ms_cls(**kw)
        converters.pt_to_ms(pt, port)
        with torch.no_grad():
            a, b = (pt(torch.from_numpy(v)).numpy() for v in (x, x2))
        c, d = (port(ms.Tensor(v)).asnumpy() for v in (x, x2))
        keep = 3 if pt_cls is PB.CausalConv3d else 2     # output frames that only see input frames 0..2
        for lo, hi in ((a, b), (c, d)):
            np.testing.assert_array_equal(lo[:, :, :keep], hi[:, :, :keep])
            assert np.abs(lo[:, :, keep:] - hi[:, :, keep:]).max() > 1e-3
    v = video(rng, 1, 3, 9, 8, 8)
    v2 = v.copy()
    v2[:, :, 5:] = video(rng, 1, 3, 4, 8, 8)
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    converters.pt_to_ms(pt, port)
    with torch.no_grad():
        a, b = (pt.encode(torch.from_numpy(u), sample_posterior=False).numpy() for u in (v, v2))
    c, d = (port.encode(ms.Tensor(u), sample_posterior=False).asnumpy() for u in (v, v2))
    for lo, hi in ((a, b), (c, d)):
        assert np.abs(lo[:, :, 0] - hi[:, :, 0]).max() > 1e-4   # GroupNorm leaks future frames into the past


def test_latent_shapes_and_level_rule():
    """Release: encoder space at levels 0-2, time at 1-2 (17 -> 9 -> 5 frames); decoder up blocks 0-2 upsample
    space, 1-2 also time (5 -> 9 -> 17); T -> (T-1)/4+1, H/8."""
    fk = resolve(FULL)[1]
    assert [fam_mod.level_factors(i, 4, 4, 8) for i in range(4)] == [(1, 2), (2, 2), (2, 2), (1, 1)]
    assert fam_mod.latent_size(fk, 129, 256, 256) == (33, 32, 32)
    assert fam_mod.latent_size(fk, 1, 64, 64) == (1, 8, 8)
    for backend in ("pt", "ms"):
        m = build(SMALL, backend)
        assert m.get_latent_size([17, 16, 16]) == [5, 4, 4]
    with torch.device("meta"):
        full = build(FULL, "pt")
    strides = [tuple(b.downsamplers[0].conv.conv.stride) if b.downsamplers is not None else None
               for b in full.encoder.down_blocks]
    assert strides == [(1, 2, 2), (2, 2, 2), (2, 2, 2), None]
    assert [b.upsamplers[0].upsample_factor if b.upsamplers is not None else None for b in full.decoder.up_blocks] \
        == [(1, 2, 2), (2, 2, 2), (2, 2, 2), None]
    assert all(len(b.resnets) == 3 for b in full.decoder.up_blocks)
    assert full.tile_latent_min_size == 32 and full.tile_latent_min_tsize == 16
    assert full.use_spatial_tiling and not full.use_temporal_tiling


def _roundtrip(model, x, noise):
    z = model.encode(x, noise=noise)
    return z, model.decode(z)


def test_tiling_on_vs_off_in_each_twin():
    """Tiled and untiled results are NOT the same numbers in either twin: each tile is encoded without its
    neighbours' context and the seams are only linearly blended (upstream's own docstring says so), so this is
    not a parity gate. It checks that the switch takes effect identically in both twins (same tiled-vs-untiled
    gap, to the model_small ceiling) and records the gap (docs/hunyuan_vae.md)."""
    inputs = _enc_inputs(1, 5, 24, 24)(np.random.default_rng(0))
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    converters.pt_to_ms(pt, port)
    gaps = {}
    for backend, m in (("pt", pt), ("ms", port)):
        outs = []
        for tiled in (False, True):
            m.use_spatial_tiling = tiled
            if backend == "pt":
                with torch.no_grad():
                    outs.append([t.numpy() for t in _roundtrip(m, torch.from_numpy(inputs["x"]),
                                                              torch.from_numpy(inputs["noise"]))])
            else:
                outs.append([t.asnumpy() for t in _roundtrip(m, ms.Tensor(inputs["x"]),
                                                             ms.Tensor(inputs["noise"]))])
        gaps[backend] = [standard.rel_fro(t, u) for t, u in zip(outs[1], outs[0])]
        assert all(g > 1e-3 for g in gaps[backend]), (backend, gaps[backend])   # the tiled path really ran
    for g_ms, g_pt in zip(gaps["ms"], gaps["pt"]):
        assert abs(g_ms - g_pt) <= standard.ceiling("model_small", "fp32").rel_fro * max(1.0, g_pt)


def test_conv3d_fp16_only_matches_reference():
    """The Ascend handling (no fp32 Conv3D): only the Conv3d cells compute in fp16; gated at the fp16 ceiling."""
    case = vae_case("conv3d_fp16", encode_decode, _enc_inputs(1, 5, 16, 16), port=_ms_vae(conv3d_dtype=ms.float16))
    pt_model, ms_model = build_pair(case)
    inputs = _enc_inputs(1, 5, 16, 16)(np.random.default_rng(0))
    with torch.no_grad():
        want = [t.numpy() for t in encode_decode(pt_model, *(torch.from_numpy(inputs[k]) for k in ("x", "noise")))]
    got = [t.asnumpy() for t in encode_decode(ms_model, *(ms.Tensor(inputs[k]) for k in ("x", "noise")))]
    convs = [c for _, c in ms_model.cells_and_names() if type(c).__name__ == "Conv3d"]
    assert convs and all(c.compute_dtype == ms.float16 for c in convs)
    for g, w in zip(got, want):
        m = standard.compare(g, w, "float32")
        assert standard.judge(m, "model_small", "fp16").passed, m
        assert m.rel_fro > 0, "Conv3d fp16 switch had no effect"


def test_posterior_logvar_clamp_and_scaling():
    """logvar is clamped to [-30, 20] (moments pushed past both ends), z = 0.476986 * (z - 0)."""
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    converters.pt_to_ms(pt, port)
    with torch.no_grad():
        pt.quant_conv.bias[LAT:LAT + 4] += 100.0
        pt.quant_conv.bias[LAT + 4:] -= 100.0
    converters.pt_to_ms(pt, port)
    x = video(np.random.default_rng(1), 1, 3, 5, 8, 8)
    with torch.no_grad():
        z, post = pt.encode(torch.from_numpy(x), sample_posterior=False, return_posterior=True)
    zm, postm = port.encode(ms.Tensor(x), sample_posterior=False, return_posterior=True)
    for lv in (post.logvar.numpy(), postm.logvar.asnumpy()):
        assert lv[:, :4].max() == 20.0 and lv[:, 4:].min() == -30.0
    np.testing.assert_allclose(z.numpy(), 0.476986 * post.mean.numpy(), rtol=1e-6)
    v = standard.judge(standard.compare(zm.asnumpy(), z.numpy(), "float32"), "model_small", "fp32")
    assert v.passed, v.reasons


# ------------------------------------------------------------------------- configs and the converter
def test_config_json_roundtrip_and_presets_from_yaml():
    import yaml

    fam = get_family("hunyuan_vae")
    for preset in (SMALL, FULL):
        kw = resolve(preset)[1]
        assert fam.config_from_json(fam.config_to_json(kw)) == {**fam_mod.CONFIG_DEFAULTS, **kw}
    # upstream's inference config dict and a diffusers-style HunyuanVideo vae/config.json
    up = dict(type="hunyuan_vae", from_pretrained="./ckpts/hunyuan_vae.safetensors", in_channels=3, out_channels=3,
              layers_per_block=2, latent_channels=16, use_spatial_tiling=True, use_temporal_tiling=False)
    assert {**fam_mod.CONFIG_DEFAULTS, **fam.config_from_json(up)} == {**fam_mod.CONFIG_DEFAULTS, **resolve(FULL)[1]}
    hv = {"_class_name": "AutoencoderKLCausal3D", "block_out_channels": [128, 256, 512, 512], "scaling_factor":
          0.476986, "latent_channels": 16, "down_block_types": ["DownEncoderBlockCausal3D"] * 4}
    assert fam.config_from_json(hv)["scale_factor"] == 0.476986
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "vae", "hunyuan_vae.yaml")) as f:
        data = yaml.safe_load(f)
    assert {k: {a: tuple(b) if isinstance(b, list) else b for a, b in v.items()} for k, v in data.items()} == \
        {SMALL: resolve(SMALL)[1], FULL: resolve(FULL)[1]}


def test_same_keys_small_both_backends():
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    a, b = converters.model_tensors(pt, "pt"), converters.model_tensors(port, "ms")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def _release_file(tmp_path, preset, name="hunyuan_vae.safetensors", rename=None):
    """A bare safetensors in the release layout (upstream key names, no config), from a seeded reference."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pt = build(preset, "pt")
    sd = {k: v.contiguous() for k, v in pt.state_dict().items()}
    if rename:
        sd = {rename(k): v for k, v in sd.items()}
    path = tmp_path / name
    save_file(sd, str(path))
    return pt, path


def test_release_layout_loads_strict_and_roundtrips_bit_exact(tmp_path):
    pt, path = _release_file(tmp_path, SMALL)
    want = {k: v.numpy() for k, v in pt.state_dict().items()}
    # strict loads in both twins; release -> MindSpore ckpt -> PyTorch safetensors: bit-exact both ways
    assert_release_roundtrip(path, SMALL, want, tmp_path)
    # a folder holding the release file name, and HunyuanVideo's own "vae." prefix + legacy attention names
    folder = tmp_path / "release"
    folder.mkdir()
    os.replace(str(path), str(folder / "hunyuan_vae.safetensors"))
    m = converters.from_pretrained(None, str(folder), "ms", model=SMALL)
    np.testing.assert_array_equal(converters.model_tensors(m, "ms")["decoder.conv_out.conv.weight"],
                                  want["decoder.conv_out.conv.weight"])
    legacy = lambda k: "vae." + k.replace(".to_q.", ".query.").replace(".to_out.0.", ".proj_attn.")  # noqa: E731
    _, lpath = _release_file(tmp_path, SMALL, "pytorch_model.safetensors", rename=legacy)
    m = converters.from_pretrained(None, str(lpath), "pt", model=SMALL)
    np.testing.assert_array_equal(m.state_dict()["encoder.mid_block.attentions.0.to_q.weight"].numpy(),
                                  want["encoder.mid_block.attentions.0.to_q.weight"])


def test_release_config_folder_roundtrip(tmp_path):
    """``save_release_folder`` writes config.json + model.safetensors; from_pretrained rebuilds without a preset."""
    pt = build(SMALL, "pt")
    converters.save_release_folder(pt, "pt", str(tmp_path / "rel"), resolve(SMALL)[1], preset=SMALL)
    with open(tmp_path / "rel" / "config.json") as f:
        assert json.load(f)["model_type"] == "AutoencoderKLCausal3D"
    port = converters.from_pretrained(None, str(tmp_path / "rel"), "ms")
    got = converters.model_tensors(port, "ms")
    for k, v in converters.model_tensors(pt, "pt").items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


# ------------------------------------------------------------------------- full size
# HunyuanVAE: 248 tensors, 246,478,803 parameters (computed here; the facts give no count for this VAE;
# 246.5M is HunyuanVideo's published VAE size, ~986 MB in fp32, ~493 MB as the bf16 release file).
FULL_KEYS, FULL_PARAMS = 248, 246_478_803


@pytest.mark.full_size
def test_full_size_same_keys_and_counts():
    with torch.device("meta"):
        pt = build(FULL, "pt")
    sd = pt.state_dict()
    assert len(sd) == FULL_KEYS
    assert sum(p.numel() for p in pt.parameters()) == FULL_PARAMS
    assert sd["encoder.down_blocks.1.downsamplers.0.conv.conv.weight"].shape == (256, 256, 3, 3, 3)
    assert sd["decoder.up_blocks.0.upsamplers.0.conv.conv.weight"].shape == (512, 512, 3, 3, 3)
    assert sd["encoder.conv_out.conv.weight"].shape == (32, 512, 3, 3, 3)
    assert sd["encoder.mid_block.attentions.0.to_q.weight"].shape == (512, 512)
    assert sd["quant_conv.weight"].shape == (32, 32, 1, 1, 1)
    assert sum(".conv.conv." in k for k in sd) == 2 * 6   # 3 downsamplers + 3 upsamplers, weight + bias
    port = build(FULL, "ms")
    got = {n: tuple(p.shape) for n, p in port.parameters_and_names()}
    assert got == {k: tuple(v.shape) for k, v in sd.items()}


FULL_BLOCK_CASES = [
    # full width (512 ch) blocks of the release config on tiny inputs
    Case("full_down_block_2", lambda: PB.DownEncoderBlockCausal3D(256, 512, num_layers=2, downsample_stride=(2, 2, 2)),
         lambda: MB.DownEncoderBlockCausal3D(256, 512, num_layers=2, downsample_stride=(2, 2, 2)),
         lambda rng: {"hidden_states": randn(rng, 1, 256, 5, 4, 4)}, level="block"),
    Case("full_up_block_0", lambda: PB.UpDecoderBlockCausal3D(512, 512, num_layers=3, upsample_scale_factor=(2, 2, 2)),
         lambda: MB.UpDecoderBlockCausal3D(512, 512, num_layers=3, upsample_scale_factor=(2, 2, 2)),
         lambda rng: {"hidden_states": randn(rng, 1, 512, 2, 2, 2)}, level="block"),
    Case("full_mid_block", lambda: PB.UNetMidBlockCausal3D(512, attention_head_dim=512),
         lambda: MB.UNetMidBlockCausal3D(512, attention_head_dim=512),
         lambda rng: {"hidden_states": randn(rng, 1, 512, 3, 2, 2), "attention_mask": upstream_mask(3, 4)},
         level="block"),
    # the whole released architecture on a 5x16x16 video (latent 2x2x2)
    Case("full_vae_roundtrip_5x16x16", lambda: build(FULL, "pt"), lambda: build(FULL, "ms"),
         lambda rng: {"x": video(rng, 1, 3, 5, 16, 16), "noise": randn(rng, 1, 16, 2, 2, 2)}, level="model_full",
         call=encode_decode, capture=False),
    # fp16: encode and decode gated separately (each fed identical inputs). Chained (the port decoding its own
    # fp16 latent) the video measured rel_fro 7.58e-3 vs the 5e-3 ceiling, with PyTorch-fp16's own error against
    # fp64 at 7.40e-3 (noise-floor ratio 1.02): the decoder amplifies the latent's fp16 rounding.
    Case("full_vae_encode_5x16x16", lambda: build(FULL, "pt"), lambda: build(FULL, "ms"),
         lambda rng: {"x": video(rng, 1, 3, 5, 16, 16), "noise": randn(rng, 1, 16, 2, 2, 2)}, level="model_full",
         dtype="fp16", call=encode_sampled, capture=False),
    Case("full_vae_decode_2x2x2", lambda: build(FULL, "pt"), lambda: build(FULL, "ms"),
         lambda rng: {"z": randn(rng, 1, 16, 2, 2, 2)}, level="model_full", dtype="fp16", call="decode",
         capture=False),
    Case("full_vae_decode_9x32x32", lambda: build(FULL, "pt"), lambda: build(FULL, "ms"),
         lambda rng: {"z": randn(rng, 1, 16, 3, 4, 4)}, level="model_full", call="decode", capture=False),
]


@pytest.mark.full_size
@pytest.mark.parametrize("case", FULL_BLOCK_CASES, ids=lambda c: c.id)
def test_hunyuan_vae_parity_full_size(case):
    assert_case(case)
