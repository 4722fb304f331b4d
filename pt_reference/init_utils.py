"""Initialisation helpers for random-weight reference models (parity cases, demos, benchmarks)."""
from typing import List

import torch


def fill_zero_parameters(module, seed: int = 0, std: float = 0.02) -> List[str]:
    """Give every all-zero parameter of a PyTorch module small random values (in place); returns their names.

    DiT-style initialisation zeroes the final layer and the adaLN/cross-attention projections, which makes
    a whole-model comparison vacuous (both sides output zeros). Parity cases on random weights call this on
    the PyTorch twin before the weights are copied to the port.
    """
    g = torch.Generator().manual_seed(seed)
    filled = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.numel() and not p.is_floating_point():
                continue
            if p.numel() and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)
                filled.append(name)
    return filled
