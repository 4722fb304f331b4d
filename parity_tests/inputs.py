"""Inputs and randomised references the parity case tables share."""
import functools

import numpy as np

from parity_tests.engine import Case, fill_zero_parameters


def randn(rng, *shape, scale=1.0):
    """float32 standard normals of ``shape`` (times ``scale``) from a numpy Generator."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def randomized(factory):
    """Build the reference with ``factory``, then fill the parameters upstream zero-initialises with small random
    values (final layers, some projections, biases): a zero weight tests nothing."""
    @functools.wraps(factory)
    def build_random():
        module = factory()
        fill_zero_parameters(module)
        return module
    return build_random


def pack_text(y, mask):
    """Upstream's ``encode_text`` packing (STDiT cross-attention): the valid tokens of all samples in one
    sequence [1, N, C], plus ``y_lens``."""
    m = mask.bool()
    return y[m][None], m.sum(1).tolist()


def with_switches(model, **switches):
    """Set switches on a built model: a ``set_<name>(value)`` method where the model has one, else the attribute."""
    for k, v in switches.items():
        if hasattr(model, f"set_{k}"):
            getattr(model, f"set_{k}")(v)
        else:
            setattr(model, k, v)
    return model


def switched(preset, backend, post=None, **switches):
    """A factory: the registered ``preset`` built in ``backend`` (then ``post(model)``, e.g. a perturbation),
    with ``switches`` set (``with_switches``)."""
    def factory():
        from opensora_dual.registry import build

        model = build(preset, backend)
        return with_switches(post(model) if post else model, **switches)
    return factory


def assert_same_tensors(got, want):
    """Two {name: array} maps with the same names and bit-identical arrays."""
    assert set(got) == set(want), (sorted(set(got) ^ set(want))[:8])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def assert_release_roundtrip(path, preset, want, work_dir, sources=None):
    """A release weights file (``path``) loads strictly into both twins with ``want``'s tensors (from each of
    ``sources``, default the file itself), and release -> MindSpore ckpt -> PyTorch safetensors is bit-exact."""
    import converters
    from safetensors.numpy import load_file

    for backend in ("pt", "ms"):
        for src in sources or (path,):
            assert_same_tensors(converters.model_tensors(
                converters.from_pretrained(None, str(src), backend, model=preset), backend), want)
    ckpt, back = f"{work_dir}/roundtrip.ckpt", f"{work_dir}/roundtrip_back.safetensors"
    converters.convert(str(path), ckpt, model=preset, progress=False)
    converters.convert(ckpt, back, model=preset, progress=False)
    assert_same_tensors(load_file(back), want)


def video(rng, *shape):
    """A video-like input: uniform in [-1, 1), float32."""
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def whole_model_rows(name, module):
    """``row_level`` for low-precision whole-model cases: the rounding accumulates over the network, so every
    row is judged at the whole-model ceiling (as test_vae.py does for the 1.2 VAE)."""
    return "model_small"


def model_case_factory(pt_factory, ms_factory):
    """-> ``case(name, call, inputs, dtype="fp32", mode="pynative", pt=None, port=None, **kw)``: a ``model_small``
    Case of the twins ``pt_factory()`` / ``ms_factory()`` (or the given factories); low-precision cases judge
    their rows with ``whole_model_rows``."""
    def case(name, call, inputs, dtype="fp32", mode="pynative", pt=None, port=None, **kw):
        if dtype != "fp32":
            kw.setdefault("row_level", whole_model_rows)
        return Case(name, pt or pt_factory(), port or ms_factory(), inputs, "model_small", dtype=dtype, mode=mode,
                    call=call, **kw)
    return case


def encode_inputs(latent_size, kwargs, channels, b, t, h, w):
    """Inputs of a VAE encode with pre-drawn posterior noise: ``x`` [b, 3, t, h, w] and ``noise`` shaped like the
    latent (``latent_size(kwargs, t, h, w)`` -> (t, h, w), ``channels`` latent channels)."""
    def make(rng):
        lt, lh, lw = latent_size(kwargs, t, h, w)
        return {"x": video(rng, b, 3, t, h, w), "noise": randn(rng, b, channels, lt, lh, lw)}
    return make
