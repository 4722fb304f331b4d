"""Optimized MindSpore/Ascend port. Same file paths, class names, constructor arguments and parameter
names as ``pt_reference``; every optimization is a switch with a CPU fallback (see ``ms_impl.device``).

Importing it pins MindSpore's CPU oneDNN kernels to the AVX2 code paths (``ONEDNN_MAX_CPU_ISA=AVX2`` unless the
environment already sets it). On AVX-512 CPUs oneDNN 3.10 (inside MindSpore 2.10) picks its ``jit_uni_ncsp`` +
reference convolution, measured on this project's CPU machine (AMD EPYC, AVX-512) at 50-150x slower than the AVX2
``gemm:jit`` path it takes otherwise: conv3d 3x3x3 128->128 on 1x18x16x16 5888 ms -> 51 ms, conv2d 3x3 128->128
on 4x64x64 8524 ms -> 55 ms, and a 2048x576 @ 576x2304 matmul 89 -> 57 ms (docs/performance.md). oneDNN reads
the variable once, at the first kernel, so it must be set before MindSpore runs one on CPU; PyTorch's own oneDNN
copy has read its ISA by then when torch is imported first (its conv / matmul speed measured unchanged).
"""
import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
