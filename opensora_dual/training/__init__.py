"""Training-time math shared by both twins' train steps (rectified flow and IDDPM), framework-free (numpy only)."""
from opensora_dual.training.rflow import (MASK_NAMES, SAMPLE_METHODS, V1_2_MASK_RATIOS, FrameMaskGenerator,
                                          TrainBatchNoise, TrainingDivergedError, caption_drop_mask,
                                          default_noise, ema_tracked, ema_update, linear_warmup_lr, noised_latents,
                                          rflow_loss_reference, sample_timesteps, split_batch, training_timesteps)
from opensora_dual.training.iddpm import (IDDPM_TRAIN_KEYS, OBJECTIVES, iddpm_noise, integer_timesteps,
                                          objective_settings)
from opensora_dual.training.flow_matching import (CONDITION_CONFIG_I2V, DROPOUT_RATIO, FLOW_MATCHING_DEFAULTS,
                                                  FlowMatchingBatchNoise, flow_matching_inputs,
                                                  flow_matching_noise, flow_matching_settings)

__all__ = ["CONDITION_CONFIG_I2V", "DROPOUT_RATIO", "FLOW_MATCHING_DEFAULTS", "FlowMatchingBatchNoise",
           "flow_matching_inputs", "flow_matching_noise", "flow_matching_settings", "IDDPM_TRAIN_KEYS", "OBJECTIVES", "iddpm_noise", "integer_timesteps", "objective_settings", "MASK_NAMES", "SAMPLE_METHODS", "V1_2_MASK_RATIOS", "FrameMaskGenerator", "TrainBatchNoise",
           "TrainingDivergedError", "caption_drop_mask", "default_noise", "ema_tracked", "ema_update",
           "linear_warmup_lr", "noised_latents", "rflow_loss_reference", "sample_timesteps", "split_batch",
           "training_timesteps"]
