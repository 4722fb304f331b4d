"""Training (Open-Sora 1.2 rectified flow), the reference: one step = loss, backward, AdamW, clip, EMA."""
from pt_reference.training.train_step import (TrainStep, rflow_training_loss, set_grad_checkpointing,
                                              update_ema)

__all__ = ["TrainStep", "rflow_training_loss", "set_grad_checkpointing", "update_ema"]
