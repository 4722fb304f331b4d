"""Training (Open-Sora 1.2 rectified flow), MindSpore port of ``pt_reference.training``."""
from ms_impl.training.train_step import (AdamWUpdate, DynamicLossScale, RFlowLoss, TrainStep,
                                         load_weights_inplace)

__all__ = ["TrainStep", "RFlowLoss", "AdamWUpdate", "DynamicLossScale", "load_weights_inplace"]
