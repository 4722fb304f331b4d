"""Sampler math shared by both twins' samplers, framework-free (numpy only)."""
from opensora_dual.sampling.noise import NumpyNoise, ReplayNoise, RecordingNoise
from opensora_dual.sampling.rflow import (MaskSchedule, RFlowSchedule, add_noise_timepoints, cfg_combine,
                                          sampling_timesteps, timestep_transform)

__all__ = ["NumpyNoise", "ReplayNoise", "RecordingNoise", "MaskSchedule", "RFlowSchedule", "add_noise_timepoints",
           "cfg_combine", "sampling_timesteps", "timestep_transform"]
