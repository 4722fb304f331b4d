"""The parity engine's sampling part: a whole pipeline run in both twins, judged at the standard's two sampling
levels (``parity_tests.standard``: ``sampling_teacher_forced``, ``sampling_free_running``).

- Teacher-forced: the reference pipeline runs and records, for every sampler call (one per loop), its inputs,
  the latent before every step and every noise draw. The port's sampler is then fed the reference latent at
  each step (same timesteps, same mask schedule, the same draws replayed) and its output is compared with the
  reference's next latent. Two rows per step: the latent z_{i+1} and the update z_{i+1} - z_i (the part the
  model computes, a much stricter relative measure); both are gated.
- Free-running: both pipelines run end to end from the same noise source (same seed): the final latents are
  gated by cosine and the decoded uint8 videos by PSNR (SSIM and mean abs diff reported).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from opensora_dual.sampling.noise import NumpyNoise, RecordingNoise, ReplayNoise
from parity_tests.standard import compare, judge, mean_abs_diff, psnr, ssim


@dataclass
class SamplingCase:
    name: str
    prompts: List[str]
    kwargs: Dict[str, Any]              # pipeline keyword arguments (sizes, references, mask strategy, loop...)
    dtype: str = "fp32"                 # the port's compute dtype (the reference runs fp32)
    seed: int = 0
    teacher_forced: bool = True
    free_running: bool = True


@dataclass
class StepRow:
    call: int
    step: int
    t: float
    z: Any        # Metrics of z_{i+1}
    dz: Any       # Metrics of the update
    passed: bool
    reasons: tuple = ()


@dataclass
class SamplingResult:
    case: SamplingCase
    steps: List[StepRow] = field(default_factory=list)
    latent: Any = None          # Metrics of the free-running final latents (last loop)
    video: Dict[str, float] = field(default_factory=dict)   # psnr, ssim, mean_abs_diff of the uint8 videos
    verdicts: List[Any] = field(default_factory=list)
    reference_output: Any = None
    port_output: Any = None

    @property
    def passed(self) -> bool:
        return all(self.verdicts) and all(r.passed for r in self.steps)


class _Recorder:
    """Wraps the reference pipeline's ``sample``: records each call's inputs, its trajectory and its draws."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []
        self._orig = pipe.sample

    def __enter__(self):
        def sample(z, y, y_mask, additional_args, mask, noise, guidance_scale=None, progress=True):
            rec = RecordingNoise(noise)
            traj = [np.array(z, np.float32)]
            call = dict(z=np.array(z, np.float32), y=np.array(y), y_mask=np.array(y_mask),
                        additional_args={k: np.array(v) for k, v in additional_args.items()},
                        mask=None if mask is None else np.array(mask), guidance_scale=guidance_scale,
                        trajectory=traj, recorder=rec)
            self.calls.append(call)
            out = self.pipe.scheduler.sample(self.pipe.model, z, y, y_mask, additional_args, mask=mask, noise=rec,
                                             guidance_scale=guidance_scale, progress=False,
                                             callback=lambda i, zz: traj.append(zz.float().numpy().copy()))
            return out.float().numpy()

        self.pipe.sample = sample
        return self

    def __exit__(self, *exc):
        self.pipe.sample = self._orig


def teacher_forced_rows(ms_pipe, calls, dtype="fp32") -> List[StepRow]:
    import mindspore as ms

    rows = []
    sampler = ms_pipe.scheduler
    for ci, call in enumerate(calls):
        state = sampler.prepare(call["z"], call["y"], call["y_mask"], call["additional_args"], call["mask"],
                                call["guidance_scale"], model=ms_pipe.model)
        draws = call["recorder"].draws
        per_step = len(draws) // len(call["trajectory"][1:]) if draws else 0
        traj = call["trajectory"]
        for i in range(len(traj) - 1):
            noise = ReplayNoise(draws[i * per_step:(i + 1) * per_step]) if per_step else None
            out = sampler.step(ms_pipe.model, ms.Tensor(traj[i]), i, state, noise).asnumpy()
            mz = compare(out, traj[i + 1])
            mdz = compare(out - traj[i], traj[i + 1] - traj[i])
            vz, vdz = judge(mz, "sampling_teacher_forced", dtype), judge(mdz, "sampling_teacher_forced", dtype)
            rows.append(StepRow(ci, i, float(state["timesteps"][i][0]), mz, mdz, bool(vz and vdz),
                                tuple(vz.reasons) + tuple("update: " + r for r in vdz.reasons)))
    return rows


def run_sampling_case(case: SamplingCase, pt_pipe, ms_pipe) -> SamplingResult:
    """Teacher-forced rows and the free-running comparison of ``case`` (pipelines built by the caller)."""
    res = SamplingResult(case)
    kw = dict(case.kwargs, progress=False)
    if not case.free_running and int(kw.get("loop", 1)) == 1:
        kw["output_type"] = "latent"   # teacher-forced only: the final decode is not compared
    with _Recorder(pt_pipe) as rec:
        ref = pt_pipe(case.prompts, noise=NumpyNoise(case.seed), **kw)
    res.reference_output = ref
    if case.teacher_forced:
        res.steps = teacher_forced_rows(ms_pipe, rec.calls, case.dtype)
    if case.free_running:
        port = ms_pipe(case.prompts, noise=NumpyNoise(case.seed), **kw)
        res.port_output = port
        res.latent = compare(port.latents, ref.latents)
        pv, rv = np.stack(port.videos), np.stack(ref.videos)
        res.video = {"psnr": psnr(pv, rv), "ssim": ssim(pv, rv), "mean_abs_diff": mean_abs_diff(pv, rv)}
        res.latent.extra.update(res.video)
        res.verdicts.append(judge(res.latent, "sampling_free_running", case.dtype))
    return res


def format_sampling_result(res: SamplingResult) -> str:
    c = res.case
    lines = [f"sampling case {c.name} ({c.dtype}): {'PASS' if res.passed else 'FAIL'}"]
    if res.steps:
        lines.append("call step      t   z rel_fro   update rel_fro  update cosine  verdict")
        for r in res.steps:
            lines.append(f"{r.call:>4} {r.step:>4} {r.t:>7.2f}  {r.z.rel_fro:>10.2e}  {r.dz.rel_fro:>14.2e}  "
                         f"{r.dz.cosine:>13.8f}  {'ok' if r.passed else 'FAIL ' + '; '.join(r.reasons)}")
    if res.latent is not None:
        v = res.video
        lines.append(f"free-running: latent cosine {res.latent.cosine:.8f} rel_fro {res.latent.rel_fro:.2e}; "
                     f"video PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.5f}, mean abs diff {v['mean_abs_diff']:.4f}")
        for vd in res.verdicts:
            if not vd:
                lines.append("  FAIL: " + "; ".join(vd.reasons))
    return "\n".join(lines)


def worst_step(res: SamplingResult) -> Optional[StepRow]:
    return max(res.steps, key=lambda r: (r.dz.rel_fro if not math.isnan(r.dz.rel_fro) else math.inf), default=None)


# ------------------------------------------------------------------------------ sampler-level runs (no pipeline)
def run_sampler_case(case: SamplingCase, pt_sampler, ms_sampler, pt_model, ms_model, decoders=None) -> SamplingResult:
    """Teacher-forced rows and the free-running comparison of one sampler pair driven directly, without a
    pipeline. ``case.kwargs``: z [B, C, T, H, W] (the starting latent), y, y_mask, additional_args, mask,
    guidance_scale. The reference runs once recording its trajectory and draws (the same ``_Recorder`` record
    the pipeline engine uses); ``teacher_forced_rows`` then drives the port's ``prepare``/``step``.
    ``decoders``: (pt_decode, ms_decode), latents -> [B, 3, T, H, W] videos in [-1, 1], for the free-running
    level's PSNR/SSIM on decoded frames."""
    from opensora_dual.inference import to_uint8_frames

    kw = case.kwargs
    res = SamplingResult(case)
    rec = RecordingNoise(NumpyNoise(case.seed))
    traj = [np.array(kw["z"], np.float32)]
    ref = pt_sampler.sample(pt_model, kw["z"], kw["y"], kw.get("y_mask"), kw.get("additional_args", {}),
                            mask=kw.get("mask"), noise=rec, guidance_scale=kw.get("guidance_scale"), progress=False,
                            callback=lambda i, zz: traj.append(zz.float().numpy().copy()))
    ref = ref.float().numpy()
    res.reference_output = ref
    call = dict(z=traj[0], y=np.array(kw["y"]), y_mask=np.array(kw.get("y_mask")),
                additional_args={k: np.array(v) for k, v in kw.get("additional_args", {}).items()},
                mask=None if kw.get("mask") is None else np.array(kw["mask"]),
                guidance_scale=kw.get("guidance_scale"), trajectory=traj, recorder=rec)

    class _Port:
        scheduler, model = ms_sampler, ms_model

    if case.teacher_forced:
        res.steps = teacher_forced_rows(_Port, [call], case.dtype)
    if case.free_running:
        port = ms_sampler.sample(ms_model, kw["z"], kw["y"], kw.get("y_mask"), kw.get("additional_args", {}),
                                 mask=kw.get("mask"), noise=NumpyNoise(case.seed),
                                 guidance_scale=kw.get("guidance_scale"), progress=False).asnumpy()
        res.port_output = port
        res.latent = compare(port, ref)
        if decoders is not None:
            pv = np.stack([to_uint8_frames(v) for v in decoders[1](port)])
            rv = np.stack([to_uint8_frames(v) for v in decoders[0](ref)])
            res.video = {"psnr": psnr(pv, rv), "ssim": ssim(pv, rv), "mean_abs_diff": mean_abs_diff(pv, rv)}
            res.latent.extra.update(res.video)
        res.verdicts.append(judge(res.latent, "sampling_free_running", case.dtype))
    return res


def format_latent_sampling_result(res: SamplingResult) -> str:
    """``format_sampling_result`` for sampler runs compared without decoders (no video metrics): the step rows,
    then the free-running latent line."""
    from dataclasses import replace

    if res.latent is None or res.video:
        return format_sampling_result(res)
    lines = [format_sampling_result(replace(res, latent=None))]
    lines.append(f"free-running: latent cosine {res.latent.cosine:.8f} rel_fro {res.latent.rel_fro:.2e} "
                 f"(no decoder: latent only)")
    for vd in res.verdicts:
        if not vd:
            lines.append("  FAIL: " + "; ".join(vd.reasons))
    return "\n".join(lines)
