"""Opt-in performance switches of the MindSpore port that are process-wide (not per model).

``enable_compile_cache(path)``: MindSpore's graph compile cache (``MS_COMPILER_CACHE_ENABLE`` /
``MS_COMPILER_CACHE_PATH``, the env form of ``set_context(enable_compile_cache=True, compile_cache_path=...)``,
experimental in 2.10). The first ``ms.jit`` compile of a function in a process writes its compiled graph under
``path``; a later process that compiles the same function (same source files, same input shapes and dtypes) loads
it instead of compiling. Measured numbers in docs/performance.md. Call it before the first compile; the cache is
keyed on the source files the graph depends on, so an edit to the model code recompiles.
"""
import os


def enable_compile_cache(path=None):
    """Turn MindSpore's compile cache on for this process; -> the cache directory."""
    import mindspore as ms

    path = os.path.abspath(path or os.path.join("outputs", "ms_compile_cache"))
    os.makedirs(path, exist_ok=True)
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = path
    ms.set_context(compile_cache_path=path)
    return path


def compile_cache_enabled():
    return os.environ.get("MS_COMPILER_CACHE_ENABLE") == "1"
