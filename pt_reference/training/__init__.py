"""Training, the reference: one step = loss (rectified flow or IDDPM), backward, AdamW, clip, EMA."""
from pt_reference.training.train_step import (TrainStep, iddpm_training_loss, model_input_names, rflow_training_loss,
                                              set_grad_checkpointing, update_ema)

__all__ = ["TrainStep", "iddpm_training_loss", "model_input_names", "rflow_training_loss", "set_grad_checkpointing",
           "update_ema"]
