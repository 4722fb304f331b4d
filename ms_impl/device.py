"""Which kernels this process may use.

Many ``mint`` kernels (LayerNorm, Conv, GELU, Embedding, flash attention) exist only on Ascend, and bf16
matmul/conv/softmax fail on CPU (shared/mindspore_cpu_notes.md). Cells call ``on_ascend()`` at
construction time and bind the kernel they will use, so graph mode sees a constant choice.
"""
import mindspore as ms


def device_target() -> str:
    return ms.get_context("device_target")


def on_ascend() -> bool:
    return device_target() == "Ascend"


def require_ascend(feature: str) -> None:
    if not on_ascend():
        raise RuntimeError(f"{feature} runs only on Ascend (device_target is {device_target()!r}); "
                           f"use the CPU fallback (e.g. attention backend 'math').")
