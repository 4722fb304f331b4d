"""Training (rectified flow for Open-Sora 1.2, IDDPM for 1.0 / 1.1), MindSpore port of ``pt_reference.training``."""
from ms_impl.training.train_step import (AdamWUpdate, DynamicLossScale, IDDPMTrainLoss, RFlowLoss, TrainStep,
                                         load_weights_inplace, model_tail_names)

__all__ = ["TrainStep", "RFlowLoss", "IDDPMTrainLoss", "AdamWUpdate", "DynamicLossScale", "load_weights_inplace",
           "model_tail_names"]
