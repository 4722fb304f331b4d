"""Sampler and training-loss parity of the Open-Sora 1.0 / 1.1 schedulers (``IDDPM``, ``DPM_SOLVER``), driven
directly (``parity_tests.sampling.run_sampler_case``) with the small ``STDiT3-S/2`` as the denoiser (pred_sigma:
8 output channels = 4 eps + 4 variance; random weights with ``fill_zero_parameters``, to the port through
``converters.pt_to_ms``). Levels (``parity_tests.standard``): ``sampling_teacher_forced`` per step (the latent
and the update), ``sampling_free_running`` (latent cosine; PSNR/SSIM of both latents decoded by the small
v1.0/1.1 VAE ``AutoencoderKL-S``, each twin with its own decoder); the loss and its weight gradients at
``model_small`` (whole-model quantities, as ``test_train_step.py``)."""
import numpy as np
import pytest

import mindspore as ms
import torch

import ms_impl.schedulers.dpm_solver as MD
import ms_impl.schedulers.iddpm as MI
import pt_reference.schedulers.dpm_solver as PD
import pt_reference.schedulers.iddpm as PI
from opensora_dual.registry import build, resolve
from parity_tests.engine import fill_zero_parameters, transfer_weights
from parity_tests.sampling import SamplingCase, format_sampling_result, run_sampler_case
from parity_tests.standard import compare, judge

SMALL = "STDiT3-S/2"
_, KW = resolve(SMALL)
L, CAP = KW["model_max_length"], KW["caption_channels"]
B, T, H, W = 2, 3, 8, 8
STEPS = 5
MASK = np.array([[0.0, 1.0, 1.0], [0.6, 1.0, 0.0]], np.float32)   # keep / generate / edit (mask_t = 3 of 5)


def _inputs(seed=0, mask=None, guidance=7.0):
    rng = np.random.default_rng(seed)
    return dict(z=rng.standard_normal((B, 4, T, H, W)).astype(np.float32),
                y=rng.standard_normal((B, 1, L, CAP)).astype(np.float32),
                y_mask=(np.arange(L)[None] < np.array([[5], [11]])).astype(np.int64),
                additional_args=dict(fps=np.full(B, 24.0, np.float32), height=np.full(B, 64.0, np.float32),
                                     width=np.full(B, 64.0, np.float32)),
                mask=mask, guidance_scale=guidance)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    pt = build(SMALL, "pt")
    fill_zero_parameters(pt)
    pt.eval()
    port = build(SMALL, "ms")
    transfer_weights(pt, port)
    port.set_train(False)
    return pt, port


@pytest.fixture(scope="module")
def decoders():
    from ms_impl.models.vae.vae import VideoAutoencoderKL as MsVAE
    from opensora_dual.families.vae2d import SMALL_VAE
    from pt_reference.models.vae.vae import VideoAutoencoderKL as PtVAE

    torch.manual_seed(1)
    vae_pt = PtVAE(vae_config=dict(SMALL_VAE)).eval()
    vae_ms = MsVAE(vae_config=dict(SMALL_VAE))
    transfer_weights(vae_pt.module, vae_ms.module)   # the 2D AutoencoderKL inside: the converter maps it
    vae_ms.set_train(False)

    def pt_decode(z):
        with torch.no_grad():
            return vae_pt.decode(torch.as_tensor(z)).float().numpy()

    def ms_decode(z):
        return vae_ms.decode(ms.Tensor(z)).astype(ms.float32).asnumpy()

    return pt_decode, ms_decode


CASES = {
    # v1.0: float64 schedule, CFG on 3 channels, no conditioning mask
    "iddpm_v1_0": (PI.IDDPM, MI.IDDPM, dict(num_sampling_steps=STEPS, cfg_scale=7.0, version="v1.0"), None),
    # v1.1: float32 schedule, the release config's cfg_channel=3, a conditioning mask (re-noise, x_mask, reset)
    "iddpm_v1_1_mask": (PI.IDDPM, MI.IDDPM, dict(num_sampling_steps=STEPS, cfg_scale=7.0, cfg_channel=3), MASK),
    "dpm_solver": (PD.DPM_SOLVER, MD.DPM_SOLVER, dict(num_sampling_steps=STEPS, cfg_scale=7.0), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sampler_fp32(name, models, decoders):
    P, M, kw, mask = CASES[name]
    pt, port = models
    case = SamplingCase(name, [], _inputs(mask=mask), seed=3)
    res = run_sampler_case(case, P(**kw), M(**kw), pt, port, decoders)
    report = format_sampling_result(res)
    print(report)
    assert len(res.steps) == STEPS and res.latent is not None
    assert res.passed, report
    assert all(r.dz.ref_norm > 0 for r in res.steps)           # every step moved the latent
    if name == "iddpm_v1_1_mask":
        # sample 0 frame 0 (m = 0) is held until the last step (t = 0 = mask_t: re-noised and updated there)
        assert res.steps[-2].dz.ref_norm > 0 and not np.array_equal(res.reference_output[0, :, 0],
                                                                      case.kwargs["z"][0, :, 0])


def test_iddpm_mask_frames_follow_the_schedule(models):
    """The reference trajectory of the masked case: frames with mask_t < t keep the given latent after each
    step (sample 0 frame 0 for steps t = 4..1, sample 1 frame 0 (mask_t = 3) for t = 4 only), and the port does
    the same in teacher-forced mode (rows of the case above); here the bookkeeping itself is checked."""
    pt, _ = models
    traj = []
    inp = _inputs(mask=MASK)
    from opensora_dual.sampling.noise import NumpyNoise

    PI.IDDPM(num_sampling_steps=STEPS, cfg_scale=7.0, cfg_channel=3).sample(
        pt, inp["z"], inp["y"], inp["y_mask"], inp["additional_args"], mask=MASK, noise=NumpyNoise(3),
        progress=False, callback=lambda i, z: traj.append(z.numpy().copy()))
    z0 = inp["z"]
    for i, t in enumerate(range(STEPS - 1, -1, -1)):
        assert np.array_equal(traj[i][0, :, 0], z0[0, :, 0]) == (t > 0)
        assert np.array_equal(traj[i][1, :, 0], z0[1, :, 0]) == (t > 3)
        assert not np.array_equal(traj[i][0, :, 1], z0[0, :, 1])


def test_iddpm_fp16_teacher_forced(models):
    """The port's model in fp16 (MindSpore fp16 compute) against the fp32 reference, v1.1 masked case."""
    from ms_impl.layers import set_compute_dtype

    pt, _ = models
    port16 = build(SMALL, "ms")
    transfer_weights(pt, port16)
    port16.set_train(False)
    set_compute_dtype(port16, ms.float16)
    P, M, kw, mask = CASES["iddpm_v1_1_mask"]
    case = SamplingCase("iddpm_v1_1_mask_fp16", [], _inputs(mask=mask), dtype="fp16", seed=3, free_running=False)
    res = run_sampler_case(case, P(**kw), M(**kw), pt, port16)
    report = format_sampling_result(res)
    print(report)
    assert res.steps and res.passed, report
    assert max(r.dz.rel_fro for r in res.steps) > 1e-5, report    # fp16 really ran


def test_teacher_forced_catches_wrong_cfg_channels(models):
    """The engine can fail: a port guiding all 4 eps channels (cfg_channel None) against the reference's 3."""
    P, M, kw, mask = CASES["iddpm_v1_1_mask"]
    pt, port = models
    case = SamplingCase("wrong_cfg", [], _inputs(mask=mask), seed=3, free_running=False)
    res = run_sampler_case(case, P(**kw), M(**dict(kw, cfg_channel=None)), pt, port)
    report = format_sampling_result(res)
    print(report)
    assert not res.passed and not res.steps[0].passed, report


# --------------------------------------------------------------------------------------------- training loss
def _loss_inputs(pt, seed=5):
    """x0, noise, t = [0, 613], a frame mask. The t = 0 sample's noise is the model's own eps prediction there
    (a fixed point of noise -> eps(x_t(noise)), then perturbed by 0.3 N(0, 1)): the regime of a trained model.
    With an unrelated noise (|eps - noise| ~ 3 for random weights) the decoder NLL's arguments reach |a| ~ 6-8,
    where cdf_plus - cdf_min and 1 - cdf_min are a few float32 ulps: there torch float32 and float64 already
    differ by 0.5% and torch vs MindSpore by 13% (their tanh differ by an ulp) -- ill-conditioned, nothing a
    port can match (docs/schedulers_v1.md)."""
    from opensora_dual.sampling.iddpm import noised_latent

    rng = np.random.default_rng(seed)
    inp = _inputs(seed)
    x0 = rng.standard_normal((B, 4, T, H, W)).astype(np.float32)
    noise = rng.standard_normal((B, 4, T, H, W)).astype(np.float32)
    t = np.array([0, 613])                       # the t = 0 branch (decoder NLL) and a KL sample
    frame_mask = np.array([[True, True, False], [False, True, True]])
    kw = {k: torch.as_tensor(v) for k, v in dict(y=inp["y"], mask=inp["y_mask"], x_mask=frame_mask,
                                                  **inp["additional_args"]).items()}
    sched = PI.IDDPM(diffusion_steps=1000).schedule
    for _ in range(3):
        x_t = noised_latent(sched, x0, noise, t, frame_mask).astype(np.float32)
        with torch.no_grad():
            noise[0] = pt(torch.as_tensor(x_t), torch.as_tensor(t), **kw)[0, :4].numpy()
    noise[0] += np.float32(0.3) * rng.standard_normal(noise[0].shape).astype(np.float32)
    return inp, x0, noise, t, frame_mask


def test_training_loss_and_gradients(models):
    """Same model, x0, noise, t (incl. t = 0) and frame mask (also the model's x_mask) -> the same loss terms
    and the same weight gradients of loss.mean() in both twins (the port in PyNative and through ms.jit)."""
    pt, port = models
    inp, x0, noise, t, fm = _loss_inputs(pt)
    kw = dict(diffusion_steps=1000)           # training: unrespaced, v1.1 (float32 schedule)
    model_kwargs = dict(y=inp["y"], mask=inp["y_mask"], x_mask=fm, **inp["additional_args"])

    pt.zero_grad()   # eval mode: no random caption drop (training's drop is fed pre-drawn ids elsewhere)
    pt_kwargs = {k: torch.as_tensor(v) for k, v in model_kwargs.items()}
    ref = PI.IDDPM(**kw).training_losses(pt, torch.as_tensor(x0), pt_kwargs, torch.as_tensor(noise), t, mask=fm)
    ref["loss"].mean().backward()
    g_ref = {n: p.grad.numpy().copy() for n, p in pt.named_parameters() if p.requires_grad and p.grad is not None}
    pt.zero_grad()
    ref = {k: v.detach().numpy() for k, v in ref.items()}
    assert ref["vb"][0] != 0 and np.isfinite(ref["loss"]).all()

    sched = MI.IDDPM(**kw)
    cell = sched.loss_cell(port)
    args = (ms.Tensor(x0), ms.Tensor(noise), ms.Tensor(t.astype(np.int32)), ms.Tensor(fm),
            *MI.model_arguments(port, model_kwargs))
    params = port.trainable_params()

    def objective(*a):
        loss, _, _ = cell(*a)
        return loss.mean()

    for label, fn in (("pynative", ms.value_and_grad(objective, None, params)),
                      ("jit", ms.jit(ms.value_and_grad(objective, None, params)))):
        out = sched.training_losses(port, x0, model_kwargs, noise, t, mask=fm)
        for k in ("loss", "mse", "vb"):
            m = compare(out[k].asnumpy(), ref[k])
            print(f"{label} {k}: {out[k].asnumpy()} / {ref[k]} rel {m.rel_fro:.2e}")
            assert judge(m, "model_small", "fp32"), (k, m)
        val, grads = fn(*args)
        assert judge(compare(np.float64(val.asnumpy()), np.float64(ref["loss"].mean())), "model_small", "fp32")
        worst = (0.0, "")
        names = [p.name for p in params]
        assert set(names) == set(g_ref), sorted(set(names) ^ set(g_ref))
        for n, g in zip(names, grads):
            m = compare(g.asnumpy(), g_ref[n])
            v = judge(m, "model_small", "fp32")
            assert v, (label, n, v.reasons)
            worst = max(worst, (m.rel_fro, n))
        print(f"{label} gradients: worst rel_fro {worst[0]:.2e} ({worst[1]})")


def test_vb_gradient_reaches_only_the_variance_channels():
    """Upstream detaches eps inside vb: d vb / d(model output) is zero on the eps channels and not on the
    variance channels (the reference's autograd; the port's gradients match it, test above)."""
    rng = np.random.default_rng(5)
    x0, noise = (rng.standard_normal((B, 4, T, H, W)).astype(np.float32) for _ in range(2))
    t = np.array([0, 613])
    fm = np.array([[True, True, False], [False, True, True]])
    out_param = torch.zeros((B, 8, T, H, W), requires_grad=True)

    def fake_model(x, timestep, **kwargs):
        return out_param + 0.0

    ref = PI.IDDPM(diffusion_steps=1000).training_losses(fake_model, torch.as_tensor(x0), {}, torch.as_tensor(noise),
                                                         t, mask=fm)
    ref["vb"].sum().backward()
    g = out_param.grad.numpy()
    assert np.abs(g[:, :4]).max() == 0 and np.abs(g[:, 4:]).max() > 0
