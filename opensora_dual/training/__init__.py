"""Training-time math shared by both twins' train steps (rectified flow and IDDPM), framework-free (numpy only)."""
from opensora_dual.training.rflow import (MASK_NAMES, SAMPLE_METHODS, V1_2_MASK_RATIOS, FrameMaskGenerator,
                                          TrainBatchNoise, TrainingDivergedError, caption_drop_mask,
                                          default_noise, ema_tracked, ema_update, linear_warmup_lr, noised_latents,
                                          rflow_loss_reference, sample_timesteps, split_batch, training_timesteps)
from opensora_dual.training.iddpm import (IDDPM_TRAIN_KEYS, OBJECTIVES, iddpm_noise, integer_timesteps,
                                          objective_settings)

__all__ = ["IDDPM_TRAIN_KEYS", "OBJECTIVES", "iddpm_noise", "integer_timesteps", "objective_settings", "MASK_NAMES", "SAMPLE_METHODS", "V1_2_MASK_RATIOS", "FrameMaskGenerator", "TrainBatchNoise",
           "TrainingDivergedError", "caption_drop_mask", "default_noise", "ema_tracked", "ema_update",
           "linear_warmup_lr", "noised_latents", "rflow_loss_reference", "sample_timesteps", "split_batch",
           "training_timesteps"]
