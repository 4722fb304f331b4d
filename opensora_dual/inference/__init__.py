"""Framework-free helpers for Open-Sora v1.2 inference (numpy + stdlib; PIL and PyAV only inside the I/O
functions): resolution/aspect tables, prompt handling, mask strategies, reference reading and sample writing.
See docs/inference.md, including where these differ from upstream. Bad user input raises ``InferenceInputError``.
"""
from opensora_dual.inference.aspect import (ASPECT_RATIO_MAP, ASPECT_RATIOS, IMG_FPS, NUM_FRAMES_MAP,
                                            get_closest_ratio, get_image_size, get_num_frames, get_num_pixels,
                                            prepare_multi_resolution_info)
from opensora_dual.inference.errors import InferenceInputError
from opensora_dual.inference.mask_strategy import (MASK_DEFAULT, append_generated, apply_mask_strategy,
                                                   dframe_to_frame, find_nearest_point, parse_mask_strategy)
from opensora_dual.inference.prompts import (append_score_to_prompts, extract_json_from_prompts,
                                             extract_prompts_loop, get_save_path_name, load_prompts,
                                             merge_prompt, split_prompt)
from opensora_dual.inference.references import collect_reference_paths, read_reference
from opensora_dual.inference.video_io import read_video, save_sample, to_uint8_frames, write_side_by_side

__all__ = [
    "InferenceInputError",
    "ASPECT_RATIO_MAP", "ASPECT_RATIOS", "IMG_FPS", "NUM_FRAMES_MAP",
    "get_closest_ratio", "get_image_size", "get_num_frames", "get_num_pixels", "prepare_multi_resolution_info",
    "load_prompts", "append_score_to_prompts", "extract_json_from_prompts", "split_prompt", "merge_prompt",
    "extract_prompts_loop", "get_save_path_name",
    "MASK_DEFAULT", "parse_mask_strategy", "find_nearest_point", "apply_mask_strategy", "append_generated",
    "dframe_to_frame",
    "collect_reference_paths", "read_reference",
    "to_uint8_frames", "save_sample", "read_video", "write_side_by_side",
]
