"""Video DC-AE (Open-Sora 2.0 ``dc-ae-f32t4c128``) parity: RMSNorm over channels, ConvLayer (non-causal zero pad,
strided), the pixel-unshuffle channel-averaging / channel-duplicating pixel-shuffle shortcuts (2D, 3D, T = 1,
factor 1), nearest upsample + conv, the 5x5x5 aggregation, the ReLU linear attention (ones row, eps 1e-15),
ResBlock / GLUMBConv / EfficientViT blocks, encoder, decoder and the whole small AE (fp32, fp16, graph mode),
every port switch (tiling, micro-batch, graph encode/decode, conv impl) against the reference, the release key
layout through the converter, and full-width blocks of the release config on tiny inputs.
"""
import os

import numpy as np
import pytest

import mindspore as ms
import torch

import converters
from opensora_dual.families import dc_ae as fam_mod
from opensora_dual.registry import build, get_family, resolve
from parity_tests import standard
from parity_tests.engine import Case, assert_case
from parity_tests.inputs import assert_release_roundtrip, model_case_factory, randn, switched, video

import pt_reference.models.dc_ae.ops as PO
import ms_impl.models.dc_ae.ops as MO
import pt_reference.models.dc_ae.dc_ae as PD
import ms_impl.models.dc_ae.dc_ae as MD

SMALL, FULL = "DC-AE-S", "DC-AE-f32t4c128"
_, SKW = resolve(SMALL)
LAT = SKW["latent_channels"]          # 8
# graph mode: 2 stages (8, 32), a temporal downsample and one EfficientViT stage (MindSpore compile time)
GRAPH_CFG = fam_mod.make_config(
    in_channels=3, latent_channels=4, time_compression_ratio=2, spatial_compression_ratio=2,
    encoder=dict(block_type=["ResBlock", "EViTS5_GLU"], width_list=[8, 32], depth_list=[1, 1],
                 downsample_block_type="Conv", norm="rms3d", is_video=True, temporal_downsample=[True, False]),
    decoder=dict(block_type=["ResBlock", "EViTS5_GLU"], width_list=[8, 32], depth_list=[1, 1],
                 upsample_block_type="InterpolateConv", norm="rms3d", act="silu", out_norm="rms3d", is_video=True,
                 temporal_upsample=[True, False]))


def perturb_norms(model, seed=1):
    """RMSNorm weights are ones and biases zeros at construction (upstream initialises them with trunc_normal):
    draw them so the affine part, bias included, is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, PO.RMSNorm3d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return model


def _pt(factory):
    def make():
        return perturb_norms(factory())
    return make


def _pt_ae(**attrs):
    return switched(SMALL, "pt", post=perturb_norms, **attrs)


def _ms_ae(**switches):
    return switched(SMALL, "ms", **switches)


ae_case = model_case_factory(_pt_ae, _ms_ae)


def roundtrip(model, x):
    z = model.encode(x)
    return z, model.decode(z)


def forward3(model, x):
    dec, _, z = model(x)
    return dec, z


def pair(name, pt_cls, ms_cls, args, inputs, level, wrap=True, **kw):
    pf = (lambda: pt_cls(*args)) if not isinstance(args, dict) else (lambda: pt_cls(**args))
    mf = (lambda: ms_cls(*args)) if not isinstance(args, dict) else (lambda: ms_cls(**args))
    return Case(name, _pt(pf) if wrap else pf, mf, inputs, level, **kw)


def _x(*shape, scale=1.0):
    return lambda rng: {"x": scale * randn(rng, *shape)}


def _z(*shape):
    return lambda rng: {"z": randn(rng, *shape)}


AVG, DUP = "PixelUnshuffleChannelAveragingDownSampleLayer", "ChannelDuplicatingPixelShuffleUpSampleLayer"
VID = dict(is_video=True)
CASES = [
    # norm over channels with bias (eps 1e-5: the 1e-3 inputs see it)
    *[pair(f"rms_norm_3d_x{s:g}", PO.RMSNorm3d, MO.RMSNorm3d, (16,), _x(2, 16, 3, 4, 5, scale=s), "layer")
      for s in (1.0, 1e-3, 1e3)],
    # ConvLayer: non-causal zero pad, stride (1,2,2) / (2,2,2), norm + act
    pair("conv_layer_k3_rms_silu", PO.ConvLayer, MO.ConvLayer,
         dict(in_channels=8, out_channels=16, kernel_size=3, use_bias=True, norm="rms3d", act_func="silu", **VID),
         _x(2, 8, 3, 6, 5), "layer"),
    pair("conv_layer_stride_t2s2", PO.ConvLayer, MO.ConvLayer,
         dict(in_channels=8, out_channels=16, kernel_size=3, stride=(2, 2, 2), use_bias=True, norm=None,
              act_func=None, **VID), _x(1, 8, 4, 8, 8), "layer"),
    pair("conv_layer_stride_t2s2_T1", PO.ConvLayer, MO.ConvLayer,
         dict(in_channels=8, out_channels=16, kernel_size=3, stride=(2, 2, 2), use_bias=True, norm=None,
              act_func=None, **VID), _x(1, 8, 1, 8, 8), "layer"),
    # shortcuts (parameter-free): pixel-unshuffle + channel averaging, channel duplicating + pixel-shuffle
    *[Case(f"avg_shortcut_{tag}", lambda a=a: getattr(PO, AVG)(*a), lambda a=a: getattr(MO, AVG)(*a), inp, "op",
           transfer_weights=False)
      for tag, a, inp in (("2d", (8, 16, 2, False), _x(2, 8, 3, 4, 6)), ("3d", (8, 16, 2, True), _x(1, 8, 4, 4, 6)),
                          ("3d_T1", (8, 16, 2, True), _x(1, 8, 1, 4, 4)), ("factor1", (64, 8, 1), _x(1, 64, 2, 3, 3)))],
    *[Case(f"dup_shortcut_{tag}", lambda a=a: getattr(PO, DUP)(*a), lambda a=a: getattr(MO, DUP)(*a), inp, "op",
           transfer_weights=False)
      for tag, a, inp in (("2d", (16, 8, 2, False), _x(2, 16, 3, 2, 3)), ("3d", (16, 8, 2, True), _x(1, 16, 2, 2, 3)),
                          ("3d_T1", (16, 8, 2, True), _x(1, 16, 1, 2, 2)), ("factor1", (8, 64, 1), _x(1, 8, 2, 3, 3)))],
    pair("interpolate_conv_t2", PO.InterpolateConvUpSampleLayer, MO.InterpolateConvUpSampleLayer,
         dict(in_channels=16, out_channels=8, kernel_size=3, factor=2, is_video=True, temporal_upsample=True),
         _x(1, 16, 2, 3, 4), "layer"),
    pair("interpolate_conv_t2_T1", PO.InterpolateConvUpSampleLayer, MO.InterpolateConvUpSampleLayer,
         dict(in_channels=16, out_channels=8, kernel_size=3, factor=2, is_video=True, temporal_upsample=True),
         _x(1, 16, 1, 3, 4), "layer"),
    # 5x5x5 depthwise + grouped 1x1x1 aggregation (2 heads: 192 channels, 6 groups)
    Case("aggreg_5x5x5", lambda: PO.LiteMLA(64, 64, dim=32, norm=(None, "rms3d"), is_video=True).aggreg[0],
         lambda: MO.LiteMLA(64, 64, dim=32, norm=(None, "rms3d"), is_video=True).aggreg[0],
         lambda rng: {"input": randn(rng, 1, 192, 3, 5, 6)}, "layer", call=(None, lambda m, input: m(input))),
    # the linear attention core alone (qkv in; fp32), unit scale and tiny scale where eps 1e-15 matters
    *[Case(f"relu_linear_att_x{s:g}", lambda: PO.LiteMLA(64, 64, dim=32, norm=(None, "rms3d"), is_video=True),
           lambda: MO.LiteMLA(64, 64, dim=32, norm=(None, "rms3d"), is_video=True),
           lambda rng, s=s: {"qkv": s * randn(rng, 1, 384, 2, 4, 4)}, "layer", call="relu_linear_att", capture=False)
      for s in (1.0, 3e-9)],
    pair("lite_mla", PO.LiteMLA, MO.LiteMLA, dict(in_channels=64, out_channels=64, dim=32, norm=(None, "rms3d"),
                                                  is_video=True), _x(2, 64, 2, 4, 4), "layer"),
    # blocks (input scales exercise the norms' eps)
    *[Case(f"res_block_x{s:g}", _pt(lambda: PD.build_block("ResBlock", 32, 32, "rms3d", "silu", True)),
           lambda: MD.build_block("ResBlock", 32, 32, "rms3d", "silu", True), _x(1, 32, 3, 6, 6, scale=s), "block")
      for s in (1.0, 1e-3, 1e3)],
    pair("glumbconv", PO.GLUMBConv, MO.GLUMBConv, dict(in_channels=32, out_channels=32, expand_ratio=4,
                                                       use_bias=(True, True, False), norm=(None, None, "rms3d"),
                                                       act_func=("silu", "silu", None), is_video=True),
         _x(1, 32, 2, 4, 4), "block"),
    *[Case(f"evit_s5_glu_x{s:g}", _pt(lambda: PD.build_block("EViTS5_GLU", 64, 64, "rms3d", "silu", True)),
           lambda: MD.build_block("EViTS5_GLU", 64, 64, "rms3d", "silu", True), _x(2, 64, 2, 4, 4, scale=s),
           "block") for s in (1.0, 1e-3, 1e3)],
    Case("evit_glu_no_aggreg", _pt(lambda: PD.build_block("EViT_GLU", 32, 32, "rms3d", "silu", True)),
         lambda: MD.build_block("EViT_GLU", 32, 32, "rms3d", "silu", True), _x(1, 32, 2, 4, 4), "block"),
    Case("downsample_block_t", lambda: PD.build_downsample_block("Conv", 32, 64, "averaging", True, True),
         lambda: MD.build_downsample_block("Conv", 32, 64, "averaging", True, True), _x(1, 32, 4, 8, 8), "block"),
    Case("upsample_block_t", lambda: PD.build_upsample_block("InterpolateConv", 64, 32, "duplicating", True, True),
         lambda: MD.build_upsample_block("InterpolateConv", 64, 32, "duplicating", True, True),
         _x(1, 64, 2, 4, 4), "block"),
    # encoder, decoder, whole small AE (8 frames 32x32 -> 2x4x4 latent; T = 1 image path)
    Case("encoder", _pt(lambda: PD.Encoder(fam_mod.make_config(**SKW).encoder)),
         lambda: MD.Encoder(fam_mod.make_config(**SKW).encoder), lambda rng: {"x": video(rng, 1, 3, 8, 32, 32)},
         "model_small"),
    Case("decoder", _pt(lambda: PD.Decoder(fam_mod.make_config(**SKW).decoder)),
         lambda: MD.Decoder(fam_mod.make_config(**SKW).decoder), _x(1, LAT, 2, 4, 4), "model_small"),
    ae_case("ae_encode", "encode", lambda rng: {"x": video(rng, 2, 3, 8, 32, 24)}, cache_key="dc_ae_small"),
    ae_case("ae_encode_T1", "encode", lambda rng: {"x": video(rng, 1, 3, 1, 16, 16)}, cache_key="dc_ae_small"),
    ae_case("ae_decode", "decode", _z(2, LAT, 2, 4, 4), cache_key="dc_ae_small"),
    ae_case("ae_forward", forward3, lambda rng: {"x": video(rng, 1, 3, 4, 16, 16)}, cache_key="dc_ae_small",
            capture=False),
    # fp16 (port conv operands fp16; norms, SiLU, means, attention fp32); PyTorch fp32 / fp16 / fp64 floor
    pair("rms_norm_3d", PO.RMSNorm3d, MO.RMSNorm3d, (16,), _x(2, 16, 3, 4, 5), "layer", dtype="fp16",
         noise_floor="norm"),
    Case("evit_s5_glu", _pt(lambda: PD.build_block("EViTS5_GLU", 64, 64, "rms3d", "silu", True)),
         lambda: MD.build_block("EViTS5_GLU", 64, 64, "rms3d", "silu", True), _x(1, 64, 2, 4, 4), "block",
         dtype="fp16"),
    ae_case("ae_encode", "encode", lambda rng: {"x": video(rng, 1, 3, 8, 32, 32)}, dtype="fp16",
            cache_key="dc_ae_small"),
    ae_case("ae_decode", "decode", _z(1, LAT, 2, 4, 4), dtype="fp16", cache_key="dc_ae_small"),
    # graph mode (ms.jit) on a 2-stage encoder / decoder and on one EfficientViT block
    Case("evit_s5_glu", _pt(lambda: PD.build_block("EViTS5_GLU", 32, 32, "rms3d", "silu", True)),
         lambda: MD.build_block("EViTS5_GLU", 32, 32, "rms3d", "silu", True), _x(1, 32, 2, 4, 4), "block",
         mode="graph"),
    Case("encoder", _pt(lambda: PD.Encoder(GRAPH_CFG.encoder)), lambda: MD.Encoder(GRAPH_CFG.encoder),
         lambda rng: {"x": video(rng, 1, 3, 4, 8, 8)}, "model_small", mode="graph"),
    Case("decoder", _pt(lambda: PD.Decoder(GRAPH_CFG.decoder)), lambda: MD.Decoder(GRAPH_CFG.decoder),
         _x(1, 4, 2, 4, 4), "model_small", mode="graph"),
    # tiling (upstream's, on in both twins). Spatial: 48 px = tiles of 32 px at 0/24 (latent 4, blend 1 latent);
    # decode 6x6 latent = tiles of 4 at 0/3 (blend 8 px). Temporal: 28 frames = tiles of 16 at 0/12/24 (latent 4,
    # blend 1); decode 7 latents = tiles of 4 at 0/3/6 (blend 4 frames)
    ae_case("spatial_tiled_encode", "encode", lambda rng: {"x": video(rng, 1, 3, 4, 48, 48)},
            pt=_pt_ae(use_spatial_tiling=True), port=_ms_ae(use_spatial_tiling=True), capture=False),
    ae_case("spatial_tiled_decode", "decode", _z(1, LAT, 1, 6, 6),
            pt=_pt_ae(use_spatial_tiling=True), port=_ms_ae(use_spatial_tiling=True), capture=False),
    ae_case("temporal_tiled_encode", "encode", lambda rng: {"x": video(rng, 1, 3, 28, 16, 16)},
            pt=_pt_ae(use_temporal_tiling=True), port=_ms_ae(use_temporal_tiling=True), capture=False),
    ae_case("temporal_tiled_decode", "decode", _z(1, LAT, 7, 2, 2),
            pt=_pt_ae(use_temporal_tiling=True), port=_ms_ae(use_temporal_tiling=True), capture=False),
    ae_case("spatiotemporal_tiled_roundtrip", roundtrip, lambda rng: {"x": video(rng, 1, 3, 28, 48, 40)},
            pt=_pt_ae(use_temporal_tiling=True, use_spatial_tiling=True),
            port=_ms_ae(use_temporal_tiling=True, use_spatial_tiling=True), capture=False),
    # port switches against the untouched reference (which loops per batch item, as upstream)
    ae_case("micro_batch_off_encode", "encode", lambda rng: {"x": video(rng, 3, 3, 4, 16, 16)},
            port=_ms_ae(micro_batch_size=None), capture=False),
    ae_case("micro_batch_2_decode", "decode", _z(3, LAT, 1, 2, 2), port=_ms_ae(micro_batch_size=2), capture=False),
    ae_case("graph_mode_encode", "encode", lambda rng: {"x": video(rng, 2, 3, 4, 16, 16)},
            port=_ms_ae(graph_mode=True), capture=False),
    ae_case("graph_mode_decode", "decode", _z(1, LAT, 1, 2, 2), port=_ms_ae(graph_mode=True), capture=False),
    ae_case("conv_impl_im2col_roundtrip", roundtrip, lambda rng: {"x": video(rng, 1, 3, 4, 16, 16)},
            port=_ms_ae(conv_impl="im2col"), capture=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dc_ae_parity(case):
    assert_case(case)


# ------------------------------------------------------------------------- semantics
def test_linear_attention_formula_eps_and_ones_row():
    """Both twins against a float64 numpy transcription of upstream's relu_linear_att: out = (v k^T q) /
    (1^T k^T q + 1e-15) per head, ReLU on q and k. At the 3e-9 input scale the denominators are ~1e-14, so an eps
    of 1e-12 or 0 would miss by >5%; with k all negative (ReLU -> 0) the output is 0/eps = 0, not NaN."""
    rng = np.random.default_rng(3)
    pt = PO.LiteMLA(64, 64, dim=32, norm=(None, "rms3d"), is_video=True)
    port = MO.LiteMLA(64, 64, dim=32, norm=(None, "rms3d"), is_video=True)

    def want(qkv, eps):
        b, _, t, h, w = qkv.shape
        a = qkv.astype(np.float64).reshape(b, -1, 96, t * h * w)
        q, k, v = np.maximum(a[:, :, :32], 0), np.maximum(a[:, :, 32:64], 0), a[:, :, 64:]
        kq = np.einsum("bhdn,bhdm->bhnm", k, q)                      # [n (keys), m (queries)]
        num, den = np.einsum("bhen,bhnm->bhem", v, kq), kq.sum(axis=2, keepdims=True)
        return (num / (den + eps)).reshape(b, -1, t, h, w)

    for scale in (1.0, 3e-9):
        qkv = scale * randn(rng, 1, 384, 2, 4, 4)
        with torch.no_grad():
            got_pt = pt.relu_linear_att(torch.from_numpy(qkv)).numpy()
        got_ms = port.relu_linear_att(ms.Tensor(qkv)).asnumpy()
        ref = want(qkv, 1e-15)
        for got in (got_pt, got_ms):
            assert standard.rel_fro(got, ref) < 1e-5
        if scale < 1e-3:
            assert standard.rel_fro(want(qkv, 1e-12), ref) > 0.05     # the case really depends on eps
    qkv = randn(rng, 1, 384, 1, 2, 2)
    qkv[:, 32:64] = -np.abs(qkv[:, 32:64])
    qkv[:, 96 + 32:96 + 64] = -np.abs(qkv[:, 96 + 32:96 + 64])
    qkv[:, 192:] = qkv[:, :192]
    qkv[:, 192 + 32:192 + 64] = -np.abs(qkv[:, 192 + 32:192 + 64])
    qkv[:, 288 + 32:288 + 64] = -np.abs(qkv[:, 288 + 32:288 + 64])
    with torch.no_grad():
        zp = pt.relu_linear_att(torch.from_numpy(qkv)).numpy()
    assert np.all(zp == 0) and np.all(port.relu_linear_att(ms.Tensor(qkv)).asnumpy() == 0)


def test_shortcuts_match_torch_pixel_ops_and_group_means():
    """Averaging shortcut = mean over groups of ``in*r^2/out`` adjacent channels of torch's pixel_unshuffle per
    frame; 3D variant: (t, h, w) sub-position order; duplicating = repeat_interleave then pixel_shuffle."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(randn(rng, 1, 4, 2, 4, 6))
    y = PO.PixelUnshuffleChannelAveragingDownSampleLayer(4, 8, 2)(x)
    pu = torch.nn.functional.pixel_unshuffle(x[:, :, 1], 2)          # frame 1, [1, 16, 2, 3]
    np.testing.assert_allclose(y[:, :, 1].numpy(), pu.view(1, 8, 2, 2, 3).mean(2).numpy(), rtol=1e-6)
    y3 = PO.pixel_unshuffle_3d(x, 2)
    # channel c*8 + dt*4 + dh*2 + dw holds x[c, 2t+dt, 2h+dh, 2w+dw]
    np.testing.assert_array_equal(y3[0, 1 * 8 + 1 * 4 + 0 * 2 + 1, 0, 1, 2].item(), x[0, 1, 1, 2, 5].item())
    assert torch.equal(PO.pixel_shuffle_3d(y3, 2), x)
    ym = MO.pixel_unshuffle_3d(ms.Tensor(x.numpy()), 2).asnumpy()
    np.testing.assert_array_equal(ym, y3.numpy())
    d = PO.ChannelDuplicatingPixelShuffleUpSampleLayer(8, 4, 2)(y)
    assert d.shape == (1, 4, 2, 4, 6)
    # out[c, 2h+i, 2w+j] = repeated[c*4 + i*2 + j] = y[(c*4 + i*2 + j) // 2]
    np.testing.assert_array_equal(d[0, 0, :, 0, 0].numpy(), y[0, 0, :, 0, 0].numpy())
    np.testing.assert_array_equal(d[0, 0, :, 0, 1].numpy(), y[0, 0, :, 0, 0].numpy())
    np.testing.assert_array_equal(d[0, 0, :, 1, 0].numpy(), y[0, 1, :, 0, 0].numpy())
    np.testing.assert_array_equal(d[0, 1, :, 2, 3].numpy(), y[0, 2, :, 1, 1].numpy())


def test_latent_shapes_scaling_and_frame_rule():
    """T must be 1 or a multiple of 4 (8x32x32 -> 2x4x4 in the small config; release 128x768x768 -> 32x24x24);
    encode divides by scaling_factor, decode multiplies (small preset 0.493; the release preset sets none, as the
    inference config)."""
    fk = resolve(FULL)[1]
    assert fam_mod.latent_size(fk, 128, 768, 768) == (32, 24, 24)
    assert fam_mod.latent_size(fk, 1, 256, 256) == (1, 8, 8)
    pt = perturb_norms(build(SMALL, "pt"))
    x = torch.from_numpy(video(np.random.default_rng(5), 1, 3, 8, 32, 32))
    with torch.no_grad():
        z = pt.encode(x)
        assert list(z.shape[2:]) == pt.get_latent_size([8, 32, 32]) == [2, 4, 4]
        np.testing.assert_allclose(z.numpy() * 0.493, pt.encoder(x).numpy(), rtol=1e-5, atol=1e-6)
        with pytest.raises((AssertionError, RuntimeError)):
            pt.encode(x[:, :, :6])                      # 6 frames: the 3D pixel-unshuffle needs T % 2 == 0 twice
    with torch.device("meta"):
        full = build(FULL, "pt")
    assert full.scaling_factor is None and full.use_spatial_tiling and full.use_temporal_tiling
    assert full.spatial_tile_latent_size == 8 and full.temporal_tile_latent_size == 8
    strides = [tuple(s.op_list[-1].main.conv.stride) for s in full.encoder.stages[:-1]]
    assert strides == [(1, 2, 2)] * 3 + [(2, 2, 2)] * 2
    assert [s.op_list[0].main.temporal_upsample for s in full.decoder.stages[:-1]] == [False] * 3 + [True] * 2
    assert [len(s.op_list) for s in full.encoder.stages] == [3, 3, 3, 4, 4, 3]
    assert [len(s.op_list) for s in full.decoder.stages] == [4, 4, 4, 4, 4, 3]
    mla = full.encoder.stages[3].op_list[0].context_module.main
    assert mla.dim == 32 and mla.eps == 1e-15 and mla.aggreg[0][0].kernel_size == (5, 5, 5)
    assert mla.aggreg[0][1].groups == 3 * 512 // 32
    assert full.encoder.stages[0].op_list[0].main.conv2.norm.eps == 1e-5


def test_tiling_on_vs_off_in_each_twin():
    """Tiled and untiled results differ in both twins (tiles are encoded without their neighbours, seams only
    linearly blended): not a parity gate. Checks the switch takes effect identically in both twins."""
    x = video(np.random.default_rng(6), 1, 3, 4, 48, 48)
    pt, port = perturb_norms(build(SMALL, "pt")), build(SMALL, "ms")
    converters.pt_to_ms(pt, port)
    gaps = {}
    for backend, m in (("pt", pt), ("ms", port)):
        outs = []
        for tiled in (False, True):
            m.use_spatial_tiling = tiled
            if backend == "pt":
                with torch.no_grad():
                    outs.append([t.numpy() for t in roundtrip(m, torch.from_numpy(x))])
            else:
                outs.append([t.asnumpy() for t in roundtrip(m, ms.Tensor(x))])
        gaps[backend] = [standard.rel_fro(t, u) for t, u in zip(outs[1], outs[0])]
        assert all(g > 1e-3 for g in gaps[backend]), (backend, gaps[backend])
    for g_ms, g_pt in zip(gaps["ms"], gaps["pt"]):
        assert abs(g_ms - g_pt) <= standard.ceiling("model_small", "fp32").rel_fro * max(1.0, g_pt)


# ------------------------------------------------------------------------- configs and the converter
def test_config_json_roundtrip_and_presets_from_yaml():
    import yaml

    fam = get_family("dc_ae")
    for preset in (SMALL, FULL):
        kw = resolve(preset)[1]
        want = fam_mod.config_kwargs(fam_mod.make_config(**kw))
        assert fam.config_from_json(fam.config_to_json(kw)) == want
    up = dict(type="dc_ae", from_scratch=True, model_name="dc-ae-f32t4c128",
              from_pretrained="./ckpts/F32T4C128_AE.safetensors", use_spatial_tiling=True, use_temporal_tiling=True,
              spatial_tile_size=256, temporal_tile_size=32, tile_overlap_factor=0.25)
    assert fam.config_from_json(up) == fam_mod.config_kwargs(fam_mod.make_config(**resolve(FULL)[1]))
    assert fam.config_from_json(dict(up, scaling_factor=0.493))["scaling_factor"] == 0.493
    hub = fam.config_from_json({"model_name": "dc-ae-f32t4c128"})      # DCAE_HF's PyTorchModelHubMixin config
    assert not hub["use_spatial_tiling"] and hub["encoder"]["width_list"] == (128, 256, 512, 512, 1024, 1024)
    with pytest.raises(ValueError):
        fam.config_from_json({"model_name": "dc-ae-f64t4c128"})
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "vae", "dc_ae.yaml")) as f:
        data = yaml.safe_load(f)
    for name in (SMALL, FULL):
        assert fam_mod.make_config(**data[name]) == fam_mod.make_config(**resolve(name)[1])


def test_same_keys_small_both_backends():
    pt, port = build(SMALL, "pt"), build(SMALL, "ms")
    a, b = converters.model_tensors(pt, "pt"), converters.model_tensors(port, "ms")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_release_layout_loads_strict_and_roundtrips_bit_exact(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pt = perturb_norms(build(SMALL, "pt"))
    want = {k: v.numpy() for k, v in pt.state_dict().items()}
    folder = tmp_path / "release"
    folder.mkdir()
    path = folder / "F32T4C128_AE.safetensors"
    save_file({k: v.contiguous() for k, v in pt.state_dict().items()}, str(path))
    # the bare file, and a folder holding the release file name; the converter round trip bit-exact
    assert_release_roundtrip(path, SMALL, want, tmp_path, sources=(path, folder))
    # our own release folder (config.json + model.safetensors) rebuilds without a preset
    converters.save_release_folder(pt, "pt", str(tmp_path / "rel"), resolve(SMALL)[1], preset=SMALL)
    port = converters.from_pretrained(None, str(tmp_path / "rel"), "ms")
    got = converters.model_tensors(port, "ms")
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ------------------------------------------------------------------------- full size
# DC-AE-f32t4c128: 339 tensors, 459,462,147 parameters (computed here from upstream's config; not verified
# against the release file, which is not downloaded in this environment).
FULL_KEYS, FULL_PARAMS = 339, 459_462_147


@pytest.mark.full_size
def test_full_size_same_keys_and_counts():
    with torch.device("meta"):
        pt = build(FULL, "pt")
    sd = pt.state_dict()
    assert len(sd) == FULL_KEYS
    assert sum(p.numel() for p in pt.parameters()) == FULL_PARAMS
    assert sd["encoder.project_in.conv.weight"].shape == (128, 3, 3, 3, 3)
    assert sd["encoder.project_out.main.op_list.0.conv.weight"].shape == (128, 1024, 3, 3, 3)
    assert sd["decoder.project_in.main.conv.weight"].shape == (1024, 128, 3, 3, 3)
    assert sd["decoder.project_out.op_list.0.weight"].shape == (128,)
    assert sd["decoder.project_out.op_list.2.conv.weight"].shape == (3, 128, 3, 3, 3)
    m = "encoder.stages.5.op_list.2.context_module.main."
    assert sd[m + "qkv.conv.weight"].shape == (3072, 1024, 1, 1, 1)
    assert sd[m + "aggreg.0.0.weight"].shape == (3072, 1, 5, 5, 5)
    assert sd[m + "aggreg.0.1.weight"].shape == (3072, 32, 1, 1, 1)   # 96 groups (3 x 32 heads)
    assert sd[m + "proj.conv.weight"].shape == (1024, 2048, 1, 1, 1)
    assert sd["decoder.stages.3.op_list.0.main.conv.conv.weight"].shape == (512, 1024, 3, 3, 3)
    assert sd["encoder.stages.3.op_list.3.main.conv.weight"].shape == (1024, 512, 3, 3, 3)
    port = build(FULL, "ms")
    got = {n: tuple(p.shape) for n, p in port.parameters_and_names()}
    assert got == {k: tuple(v.shape) for k, v in sd.items()}


FULL_BLOCK_CASES = [
    Case("full_res_block_128", _pt(lambda: PD.build_block("ResBlock", 128, 128, "rms3d", "silu", True)),
         lambda: MD.build_block("ResBlock", 128, 128, "rms3d", "silu", True), _x(1, 128, 4, 8, 8), "block"),
    Case("full_evit_s5_glu_1024", _pt(lambda: PD.build_block("EViTS5_GLU", 1024, 1024, "rms3d", "silu", True)),
         lambda: MD.build_block("EViTS5_GLU", 1024, 1024, "rms3d", "silu", True), _x(1, 1024, 2, 2, 2), "block"),
    Case("full_downsample_512_1024_t", lambda: PD.build_downsample_block("Conv", 512, 1024, "averaging", True, True),
         lambda: MD.build_downsample_block("Conv", 512, 1024, "averaging", True, True), _x(1, 512, 2, 4, 4),
         "block"),
    Case("full_upsample_1024_512_t", lambda: PD.build_upsample_block("InterpolateConv", 1024, 512, "duplicating",
                                                                     True, True),
         lambda: MD.build_upsample_block("InterpolateConv", 1024, 512, "duplicating", True, True),
         _x(1, 1024, 1, 2, 2), "block"),
    Case("full_ae_roundtrip_4x64x64", _pt(lambda: build(FULL, "pt")), lambda: build(FULL, "ms"),
         lambda rng: {"x": video(rng, 1, 3, 4, 64, 64)}, "model_full", call=roundtrip, capture=False),
]


@pytest.mark.full_size
@pytest.mark.parametrize("case", FULL_BLOCK_CASES, ids=lambda c: c.id)
def test_dc_ae_parity_full_size(case):
    assert_case(case)
