"""Framework-free training-data pipeline of Open-Sora v1.2 (numpy + stdlib; PyAV, PIL, tqdm and, for parquet,
pandas only inside the functions that need them): the dataset table and sample reading, buckets and the bucket
batch sampler, training masks, a synthetic dataset and the ``--info`` tool. See docs/data.md, including where
these differ from upstream. Bad user input raises ``DataError``; an unusable sample raises ``CorruptSampleError``.
"""
from opensora_dual.data.bucket import PIXEL_APPROX, Bucket, VariableVideoBatchSampler
from opensora_dual.data.dataset import (REQUIRED_COLUMNS, VARIABLE_COLUMNS, SkippingLoader, VariableVideoTextDataset,
                                        collate, parse_sample_key, read_table, resize_crop_frames,
                                        temporal_crop_indices, write_table)
from opensora_dual.data.errors import CorruptSampleError, DataError
from opensora_dual.data.info import INFO_COLUMNS, probe_media, run_info
from opensora_dual.data.masks import (MASK_NAMES, MASK_RATIOS_V1_1, MASK_RATIOS_V1_2_STAGE1, MASK_RATIOS_V1_2_STAGE2,
                                      MASK_RATIOS_V1_2_STAGE3, MaskGenerator)
from opensora_dual.data.synthetic import make_synthetic_dataset

__all__ = [
    "DataError", "CorruptSampleError",
    "REQUIRED_COLUMNS", "VARIABLE_COLUMNS", "read_table", "write_table", "VariableVideoTextDataset",
    "temporal_crop_indices", "resize_crop_frames", "parse_sample_key", "collate", "SkippingLoader",
    "PIXEL_APPROX", "Bucket", "VariableVideoBatchSampler",
    "MASK_NAMES", "MASK_RATIOS_V1_1", "MASK_RATIOS_V1_2_STAGE1", "MASK_RATIOS_V1_2_STAGE2",
    "MASK_RATIOS_V1_2_STAGE3", "MaskGenerator",
    "make_synthetic_dataset",
    "INFO_COLUMNS", "probe_media", "run_info",
]
