"""Dtype names across formats.

Internally a tensor travels as ``(raw ndarray, dtype)`` where ``dtype`` is a safetensors name ("F32", "BF16",
...). numpy has no bfloat16, so BF16 data is carried as ``uint16`` bit patterns; ``to_numpy`` turns it into
MindSpore's numpy ``bfloat16`` type only when a caller asks for a public array.
"""
from __future__ import annotations

import numpy as np

from converters.errors import ConversionError

# safetensors name -> (raw numpy dtype, MindSpore .ckpt tensor_type, torch dtype attribute name)
DTYPES = {
    "F64": (np.float64, "Float64", "float64"),
    "F32": (np.float32, "Float32", "float32"),
    "F16": (np.float16, "Float16", "float16"),
    "BF16": (np.uint16, "BFloat16", "bfloat16"),
    "I64": (np.int64, "Int64", "int64"),
    "I32": (np.int32, "Int32", "int32"),
    "I16": (np.int16, "Int16", "int16"),
    "I8": (np.int8, "Int8", "int8"),
    "U8": (np.uint8, "UInt8", "uint8"),
    "U16": (np.uint16, "UInt16", "uint16"),
    "U32": (np.uint32, "UInt32", "uint32"),
    "U64": (np.uint64, "UInt64", "uint64"),
    "BOOL": (np.bool_, "Bool", "bool"),
}
FLOATS = ("F64", "F32", "F16", "BF16")
CKPT_TO_ST = {v[1]: k for k, v in DTYPES.items()}
TORCH_TO_ST = {v[2]: k for k, v in DTYPES.items()}
# --dtype choices
CAST_CHOICES = {"fp32": "F32", "float32": "F32", "fp16": "F16", "float16": "F16", "bf16": "BF16",
                "bfloat16": "BF16", "F32": "F32", "F16": "F16", "BF16": "BF16"}


def itemsize(dtype: str) -> int:
    return np.dtype(DTYPES[dtype][0]).itemsize


def raw_np(dtype: str):
    return DTYPES[dtype][0]


def kind(dtype: str) -> str:
    """'float', 'int' or 'bool': a key whose kind differs from the model's has the wrong dtype."""
    if dtype in FLOATS:
        return "float"
    return "bool" if dtype == "BOOL" else "int"


def cast_choice(name):
    if name is None:
        return None
    if name not in CAST_CHOICES:
        raise ConversionError(f"unknown --dtype {name!r}; use fp32, fp16 or bf16")
    return CAST_CHOICES[name]


def from_numpy_dtype(dt) -> str:
    dt = np.dtype(dt)
    if dt.name == "bfloat16":
        return "BF16"
    for k, v in DTYPES.items():
        if k != "BF16" and np.dtype(v[0]) == dt:
            return k
    raise ConversionError(f"unsupported numpy dtype {dt}")


def from_torch_dtype(tdt) -> str:
    name = str(tdt).replace("torch.", "")
    if name not in TORCH_TO_ST:
        raise ConversionError(f"unsupported torch dtype {tdt}")
    return TORCH_TO_ST[name]


def bf16_type():
    """numpy's bfloat16 scalar type (MindSpore ships one; ml_dtypes when installed)."""
    try:
        import ml_dtypes  # noqa: F401

        return ml_dtypes.bfloat16
    except ImportError:
        from mindspore.common import np_dtype

        return np_dtype.bfloat16


def to_numpy(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Public view of a raw tensor (bf16 gets a real bfloat16 dtype)."""
    if dtype == "BF16":
        return raw.view(bf16_type())
    return raw


def contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous without np.ascontiguousarray's promotion of 0-d arrays to 1-d."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(a.shape)


def to_raw(arr: np.ndarray):
    """Public ndarray -> (raw ndarray, dtype name)."""
    dt = from_numpy_dtype(arr.dtype)
    if dt == "BF16":
        return contiguous(arr).view(np.uint16), dt
    return contiguous(arr), dt


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even fp32 -> bf16 bit patterns (what torch's .to(bfloat16) does), NaN kept quiet."""
    u = contiguous(np.asarray(x, dtype=np.float32)).view(np.uint32)
    rounding = ((u >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    out = ((u + rounding) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return out


def _bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def cast(raw: np.ndarray, src: str, dst: str):
    """Cast a raw float tensor between F64/F32/F16/BF16; non-float tensors are returned unchanged."""
    if dst is None or src == dst or kind(src) != "float":
        return raw, src
    if src == "BF16":
        x = _bf16_bits_to_f32(raw)
    else:
        x = raw
    if dst == "BF16":
        return _f32_to_bf16_bits(x.astype(np.float32, copy=False)), dst
    return x.astype(DTYPES[dst][0]), dst
