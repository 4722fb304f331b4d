"""Sampler parity of the Open-Sora 2.0 flow-matching twins (``{pt_reference,ms_impl}.schedulers.flow_matching``),
driven directly (``parity_tests.sampling.run_sampler_case``): teacher-forced per step (the latent and the update,
level ``sampling_teacher_forced``) and free-running from the same starting noise (level ``sampling_free_running``,
latent cosine; no decoder: the HunyuanVideo VAE twins are not part of this file).

The denoiser is a small stand-in twin pair with the MMDiT forward signature (packed img, img_ids, txt, txt_ids,
timesteps in [0, 1], y_vec, cond, guidance) whose output mixes every input, so each guidance branch and each
conditioning input changes the result; weights copied torch -> MindSpore by name. 12 steps, so the oscillation
(scale 1.0 on odd steps >= 10) happens on step 11.
"""
import numpy as np
import pytest

import mindspore as ms
import torch
from mindspore import mint, ops

import ms_impl.schedulers.flow_matching as MF
import pt_reference.schedulers.flow_matching as PF
from opensora_dual.sampling.flow_matching import get_noise
from opensora_dual.sampling.noise import NumpyNoise
from parity_tests.sampling import SamplingCase, format_latent_sampling_result, run_sampler_case

STEPS = 12
C, HP, WP = 8, 32, 32             # latent channels (HunyuanVAE-S's); size -> latent 4 x 4 -> 2 x 2 tokens per frame
L, TXT, VEC, HID = 6, 32, 24, 48  # stand-in text length / widths
B = 2


# ------------------------------------------------------------------------------------------- stand-in twins
class PtStandIn(torch.nn.Module):
    def __init__(self, guidance_embed=False):
        super().__init__()
        self.img_in = torch.nn.Linear(4 * C, HID)
        self.cond_in = torch.nn.Linear(4 * (C + 1), HID)
        self.ids_in = torch.nn.Linear(3, HID)
        self.txt_in = torch.nn.Linear(TXT, HID)
        self.time_in = torch.nn.Linear(16, HID)
        self.vector_in = torch.nn.Linear(VEC, HID)
        self.guidance_in = torch.nn.Linear(16, HID) if guidance_embed else None
        self.final = torch.nn.Linear(HID, 4 * C)
        self.register_buffer("freqs", torch.exp(-torch.arange(8, dtype=torch.float32) * 0.9), persistent=False)

    def embed(self, t):
        e = (t * 1000)[:, None] * self.freqs[None]
        return torch.cat([torch.sin(e), torch.cos(e)], -1)

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None, **kwargs):
        h = self.img_in(img) + self.ids_in(img_ids * 0.1)
        if cond is not None:
            h = h + self.cond_in(cond)
        vec = self.time_in(self.embed(timesteps)) + self.vector_in(y_vec) + self.txt_in(txt.mean(1))
        if self.guidance_in is not None:
            vec = vec + self.guidance_in(self.embed(guidance))
        return self.final(torch.tanh(h + vec[:, None]))


class MsStandIn(ms.nn.Cell):
    def __init__(self, guidance_embed=False, compute_dtype=ms.float32):
        super().__init__()
        self.img_in = mint.nn.Linear(4 * C, HID)
        self.cond_in = mint.nn.Linear(4 * (C + 1), HID)
        self.ids_in = mint.nn.Linear(3, HID)
        self.txt_in = mint.nn.Linear(TXT, HID)
        self.time_in = mint.nn.Linear(16, HID)
        self.vector_in = mint.nn.Linear(VEC, HID)
        self.guidance_embed = guidance_embed
        self.guidance_in = mint.nn.Linear(16, HID) if guidance_embed else None
        self.final = mint.nn.Linear(HID, 4 * C)
        self.freqs = ms.Tensor(np.exp(-np.arange(8, dtype=np.float32) * np.float32(0.9)).astype(np.float32))
        self.compute_dtype = compute_dtype

    def lin(self, layer, x):
        dt = self.compute_dtype
        return mint.nn.functional.linear(x.astype(dt), layer.weight.astype(dt), layer.bias.astype(dt))

    def embed(self, t):
        e = (t * 1000).reshape(-1, 1) * self.freqs.reshape(1, -1)
        return mint.cat([ops.sin(e), ops.cos(e)], -1)

    def construct(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None):
        h = self.lin(self.img_in, img) + self.lin(self.ids_in, img_ids * 0.1)
        if cond is not None:
            h = h + self.lin(self.cond_in, cond)
        vec = self.lin(self.time_in, self.embed(timesteps)) + self.lin(self.vector_in, y_vec) + \
            self.lin(self.txt_in, mint.mean(txt, 1))
        if self.guidance_embed:
            vec = vec + self.lin(self.guidance_in, self.embed(guidance))
        return self.lin(self.final, ops.tanh(h + vec.unsqueeze(1))).astype(ms.float32)


def copy_weights(pt, port):
    """Every parameter torch -> MindSpore by its (shared) dotted name; both sides must have the same set."""
    sd = {k: v.detach().numpy() for k, v in pt.state_dict().items()}
    names = []
    for name, p in port.parameters_and_names():
        p.set_data(ms.Tensor(sd[name].astype(np.float32)))
        names.append(name)
    assert sorted(names) == sorted(sd), (sorted(names), sorted(sd))


def _pair(guidance_embed=False, dtype=ms.float32, seed=0):
    torch.manual_seed(seed)
    pt = PtStandIn(guidance_embed).eval()
    port = MsStandIn(guidance_embed, dtype)
    copy_weights(pt, port)
    port.set_train(False)
    return pt, port


@pytest.fixture(scope="module")
def models():
    return _pair()


@pytest.fixture(scope="module")
def decoders():
    """The small HunyuanVideo VAE twins (``HunyuanVAE-S``, 8 latent channels; weights through the converter):
    the free-running level's PSNR / SSIM on decoded frames."""
    from opensora_dual.registry import build
    from parity_tests.engine import transfer_weights

    torch.manual_seed(1)
    vae_pt = build("HunyuanVAE-S", "pt").eval()
    vae_ms = build("HunyuanVAE-S", "ms")
    transfer_weights(vae_pt, vae_ms)
    vae_ms.set_train(False)

    def pt_decode(z):
        with torch.no_grad():
            return vae_pt.decode(torch.as_tensor(z)).float().numpy()

    def ms_decode(z):
        return vae_ms.decode(ms.Tensor(z)).astype(ms.float32).asnumpy()

    return pt_decode, ms_decode


# -------------------------------------------------------------------------------------------------- inputs
def _inputs(num_frames_latent, cond_type="t2v", ref_frames=1, n_refs=1, seed=0, method="i2v", dims=(C, TXT, VEC)):
    c, txt, vec = dims
    rng = np.random.default_rng(seed + 100)
    z = get_noise(B, HP, WP, num_frames_latent, NumpyNoise(seed), channel=c)
    add = {"y_vec": rng.standard_normal((B, vec)).astype(np.float32)}
    if method == "i2v":
        add.update(txt_null=rng.standard_normal((1, L, txt)).astype(np.float32),
                   y_vec_null=rng.standard_normal((1, vec)).astype(np.float32), cond_type=cond_type)
        if cond_type != "t2v":
            add["ref"] = rng.standard_normal((B, n_refs, c, ref_frames, *z.shape[-2:])).astype(np.float32)
    return dict(z=z, y=rng.standard_normal((B, L, txt)).astype(np.float32), y_mask=None, additional_args=add,
                mask=None, guidance_scale=None)


SAMPLER = dict(num_sampling_steps=STEPS, guidance=7.5, guidance_img=3.0, text_osci=True, image_osci=True,
               scale_temporal_osci=True)
CASES = {
    #            T_lat, cond type, reference frames, references per sample
    "t2v": (5, "t2v", 1, 1),
    "i2v_head": (5, "i2v_head", 1, 1),
    "i2v_loop": (5, "i2v_loop", 1, 2),
    "v2v_head": (11, "v2v_head", 9, 1),   # 9 latent frames = the first 33 pixel frames (causal)
}


def _run(name, models, dtype="fp32", free_running=True, port_kwargs=None, decoders=None, dims=(C, TXT, VEC)):
    T, ct, rf, nr = CASES[name]
    pt, port = models
    case = SamplingCase(name, [], _inputs(T, ct, rf, nr, dims=dims), dtype=dtype, seed=0, free_running=free_running)
    res = run_sampler_case(case, PF.FlowMatching(**SAMPLER), MF.FlowMatching(**dict(SAMPLER, **(port_kwargs or {}))),
                           pt, port, decoders)
    report = format_latent_sampling_result(res)
    print(report)
    return case, res, report


@pytest.mark.parametrize("name", list(CASES))
def test_flow_matching_fp32(name, models, decoders):
    case, res, report = _run(name, models, decoders=decoders)
    assert len(res.steps) == STEPS and res.latent is not None and res.video["psnr"] >= 40
    assert res.passed, report
    assert all(r.dz.ref_norm > 0 for r in res.steps)
    out, port = res.reference_output, res.port_output
    ref = case.kwargs["additional_args"].get("ref")
    if name in ("i2v_head", "i2v_loop"):   # paste-back into batch index 0 only, in both twins
        for o in (out, port):
            assert np.array_equal(o[0, :, 0], ref[0, 0][:, 0])
            assert not np.array_equal(o[1, :, 0], ref[1, 0][:, 0])
        if name == "i2v_loop":
            assert np.array_equal(out[0, :, -1], ref[0, 1][:, 0]) and np.array_equal(port[0, :, -1], ref[0, 1][:, 0])
    if name == "v2v_head":   # no paste-back for v2v
        assert not np.array_equal(out[0, :, 0], ref[0, 0][:, 0])


def test_flow_matching_graph_off(models):
    """The port's denoiser in PyNative (graph=False) gives the same rows."""
    _, res, report = _run("i2v_head", models, free_running=False, port_kwargs=dict(graph=False))
    assert res.steps and res.passed, report


def test_distilled_single_pass(decoders):
    """Flux-dev's guidance-distilled sampler: one forward per step on the prompt batch, guidance embedded."""
    models = _pair(guidance_embed=True, seed=1)
    kw = dict(num_sampling_steps=STEPS, guidance=4.0, method="distill")
    case = SamplingCase("distill", [], _inputs(1, method="distill", seed=2), seed=2)   # an image (T_lat = 1)
    res = run_sampler_case(case, PF.FlowMatching(**kw), MF.FlowMatching(**kw), *models, decoders)
    report = format_latent_sampling_result(res)
    print(report)
    assert len(res.steps) == STEPS and res.passed, report
    # the guidance value reaches the model: another value moves the reference's output
    other = PF.FlowMatching(**dict(kw, guidance=2.0)).sample(models[0], **_kw(case), progress=False).numpy()
    assert np.abs(other - res.reference_output).max() > 1e-4


def _kw(case):
    k = case.kwargs
    return dict(z=k["z"], y=k["y"], additional_args=k["additional_args"])


def test_flow_matching_fp16_teacher_forced():
    """The port's stand-in computing in fp16 (MindSpore) against the fp32 reference, i2v_head with every
    guidance feature on."""
    pt, _ = _pair()
    port16 = MsStandIn(compute_dtype=ms.float16)
    copy_weights(pt, port16)
    port16.set_train(False)
    _, res, report = _run("i2v_head", (pt, port16), dtype="fp16", free_running=False)
    assert res.steps and res.passed, report
    assert max(r.dz.rel_fro for r in res.steps) > 1e-5, report    # fp16 really ran


def test_teacher_forced_catches_a_wrong_sampler(models):
    """The engine can fail: a port without text oscillation differs from the reference on step 11 only (the one
    odd step >= 10 of 12)."""
    _, res, report = _run("t2v", models, free_running=False, port_kwargs=dict(text_osci=False))
    failed = [r.step for r in res.steps if not r.passed]
    assert failed == [11], report


def test_teacher_forced_catches_a_missing_temporal_ramp(models):
    """A port without the temporal image-scale ramp fails on the steps where the ramp applies (i2v: every step
    except the oscillated odd ones >= 10)."""
    _, res, report = _run("i2v_head", models, free_running=False, port_kwargs=dict(scale_temporal_osci=False))
    failed = [r.step for r in res.steps if not r.passed]
    assert failed == [i for i in range(STEPS) if not (i >= 10 and i % 2)], report


def test_mmdit_s_teacher_forced():
    """The real denoiser: the small ``MMDiT-S`` twins (random weights with zero-init parameters filled, to the
    port through the converter), i2v_head with every guidance feature, teacher-forced (its 4-channel latent has
    no decoder here; the free-running level is covered by the stand-in cases above)."""
    from opensora_dual.registry import build, resolve
    from parity_tests.engine import fill_zero_parameters, transfer_weights

    _, kw = resolve("MMDiT-S")
    torch.manual_seed(3)
    pt = build("MMDiT-S", "pt")
    fill_zero_parameters(pt)
    pt.eval()
    port = build("MMDiT-S", "ms")
    transfer_weights(pt, port)
    port.set_train(False)
    dims = (kw["in_channels"] // 4, kw["context_in_dim"], kw["vec_in_dim"])
    _, res, report = _run("i2v_head", (pt, port), free_running=False, dims=dims)
    assert len(res.steps) == STEPS and res.passed, report
    assert all(r.dz.ref_norm > 0 for r in res.steps)
