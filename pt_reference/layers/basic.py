"""The layer kit, PyTorch side: torch's own layers under the names the MindSpore twin uses.

``ms_impl/layers/basic.py`` defines the same names with the same constructor arguments and parameter
names (``weight``/``bias``), so a model written against this kit has the same state-dict keys in both twins.
"""
import torch
from torch import nn

Linear = nn.Linear
LayerNorm = nn.LayerNorm
GroupNorm = nn.GroupNorm
Conv2d = nn.Conv2d
Conv3d = nn.Conv3d
Embedding = nn.Embedding
SiLU = nn.SiLU
GELU = nn.GELU  # GELU(approximate="tanh") for the DiT MLPs
Identity = nn.Identity


class RMSNorm(nn.Module):
    """LlamaRMSNorm (the q/k norm of STDiT2/3): fp32 statistics, weight applied after casting back."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)
