"""A noise source drawing with torch's generator (``torch.randn``), as upstream's ``scripts/inference.py`` does
after ``set_random_seed(seed)``: with the same seed and call order it gives upstream's starting latents."""
import numpy as np
import torch


class TorchNoise:
    def __init__(self, seed: int = 1024, reseed: bool = True):
        self.seed = seed
        if reseed:
            torch.manual_seed(seed)

    def randn(self, shape):
        return torch.randn(*shape, dtype=torch.float32).numpy().astype(np.float32)
