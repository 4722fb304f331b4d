"""Opt-in performance switches of the MindSpore port that are process-wide (not per model).

``enable_compile_cache(path)``: MindSpore's graph compile cache (``MS_COMPILER_CACHE_ENABLE`` /
``MS_COMPILER_CACHE_PATH``, the env form of ``set_context(enable_compile_cache=True, compile_cache_path=...)``,
experimental in 2.10). The first ``ms.jit`` compile of a function in a process writes its compiled graph under
``path``; a later process that compiles the same function (same source files, same input shapes and dtypes) loads
it instead of compiling. Measured numbers in docs/performance.md. Call it before the first compile; the cache is
keyed on the source files the graph depends on, so an edit to the model code recompiles.

``JitCalls``: a cell mixin for ``set_jit(True)``: the networks a model runs through ``_run(name, fn, x)`` become
compiled graphs (``ms.jit``, one compile per input shape) instead of PyNative op by op.
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


class JitCalls:
    """Mixin: ``set_jit(enabled)`` and ``_run(name, fn, x)``, which calls ``fn`` compiled once per ``name`` when on."""

    def set_jit(self, enabled=True):
        """Run the model's encoder / decoder networks as compiled graphs (``ms.jit``, one compile per input shape)
        instead of PyNative op by op. Same numbers; removes the per-kernel dispatch (docs/performance.md)."""
        object.__setattr__(self, "_jitted", {} if enabled else None)
        return self

    def _run(self, name, fn, x):
        jitted = getattr(self, "_jitted", None)
        if jitted is None:
            return fn(x)
        if name not in jitted:
            import mindspore as ms

            jitted[name] = ms.jit(fn)
        return jitted[name](x)
