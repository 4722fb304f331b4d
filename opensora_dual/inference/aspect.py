"""Resolution names, aspect-ratio tables and frame-count names of Open-Sora v1.2 (``opensora/datasets/aspect.py``).

Conventions (upstream's, kept):

* Aspect-ratio names are **H:W**: ``"9:16"`` means height/width = 0.56, i.e. the landscape 240x426 frame.
  ``ASPECT_RATIO_MAP`` turns a name into the ratio key (``"9:16" -> "0.56"``) of a resolution table.
* A resolution table maps a ratio key to ``(height, width)`` in pixels; ``ASPECT_RATIOS`` maps a resolution
  name to ``(num_pixels, table)``.
* The v1.2 tables (144p ... 1080p, 2k, 4k) have the 17 ratio keys of ``ASPECT_RATIO_MAP``. The PixArt square
  tables (256, 512, 1024, 2048, 2880) have 40 other keys, spelled with as few decimals as needed
  (``"1.0"``, ``"0.4"``), exactly as upstream v1.2 spells them.

The tables below are upstream's numbers, reproduced exactly (including the odd entries upstream hand-edited,
e.g. 480p ``"0.48": (444, 925)``, and the misplaced order of ``"0.62"`` in the 4K table).
"""
from numbers import Integral

import numpy as np

from opensora_dual.inference.errors import InferenceInputError

# Frame rate upstream passes to the model for images (num_frames == 1).
IMG_FPS = 120

# H:W name -> ratio key of the 17-ratio tables.
ASPECT_RATIO_MAP = {
    "3:8": "0.38",
    "9:21": "0.43",
    "12:25": "0.48",
    "1:2": "0.50",
    "9:17": "0.53",
    "27:50": "0.54",
    "9:16": "0.56",
    "5:8": "0.62",
    "2:3": "0.67",
    "3:4": "0.75",
    "1:1": "1.00",
    "4:3": "1.33",
    "3:2": "1.50",
    "16:9": "1.78",
    "17:9": "1.89",
    "2:1": "2.00",
    "50:27": "2.08",
}

# ---- the 17-ratio video tables ---------------------------------------------------------------------------

# S = 8294400
ASPECT_RATIO_4K = {
    "0.38": (1764, 4704),
    "0.43": (1886, 4400),
    "0.48": (1996, 4158),
    "0.50": (2036, 4072),
    "0.53": (2096, 3960),
    "0.54": (2118, 3918),
    "0.62": (2276, 3642),
    "0.56": (2160, 3840),
    "0.67": (2352, 3528),
    "0.75": (2494, 3326),
    "1.00": (2880, 2880),
    "1.33": (3326, 2494),
    "1.50": (3528, 2352),
    "1.78": (3840, 2160),
    "1.89": (3958, 2096),
    "2.00": (4072, 2036),
    "2.08": (4156, 1994),
}

# S = 3686400
ASPECT_RATIO_2K = {
    "0.38": (1176, 3136),
    "0.43": (1256, 2930),
    "0.48": (1330, 2770),
    "0.50": (1358, 2716),
    "0.53": (1398, 2640),
    "0.54": (1412, 2612),
    "0.56": (1440, 2560),
    "0.62": (1518, 2428),
    "0.67": (1568, 2352),
    "0.75": (1662, 2216),
    "1.00": (1920, 1920),
    "1.33": (2218, 1664),
    "1.50": (2352, 1568),
    "1.78": (2560, 1440),
    "1.89": (2638, 1396),
    "2.00": (2716, 1358),
    "2.08": (2772, 1330),
}

# S = 2073600
ASPECT_RATIO_1080P = {
    "0.38": (882, 2352),
    "0.43": (942, 2198),
    "0.48": (998, 2080),
    "0.50": (1018, 2036),
    "0.53": (1048, 1980),
    "0.54": (1058, 1958),
    "0.56": (1080, 1920),
    "0.62": (1138, 1820),
    "0.67": (1176, 1764),
    "0.75": (1248, 1664),
    "1.00": (1440, 1440),
    "1.33": (1662, 1246),
    "1.50": (1764, 1176),
    "1.78": (1920, 1080),
    "1.89": (1980, 1048),
    "2.00": (2036, 1018),
    "2.08": (2078, 998),
}

# S = 921600
ASPECT_RATIO_720P = {
    "0.38": (588, 1568),
    "0.43": (628, 1466),
    "0.48": (666, 1388),
    "0.50": (678, 1356),
    "0.53": (698, 1318),
    "0.54": (706, 1306),
    "0.56": (720, 1280),
    "0.62": (758, 1212),
    "0.67": (784, 1176),
    "0.75": (832, 1110),
    "1.00": (960, 960),
    "1.33": (1108, 832),
    "1.50": (1176, 784),
    "1.78": (1280, 720),
    "1.89": (1320, 698),
    "2.00": (1358, 680),
    "2.08": (1386, 666),
}

# S = 409920
ASPECT_RATIO_480P = {
    "0.38": (392, 1046),
    "0.43": (420, 980),
    "0.48": (444, 925),
    "0.50": (452, 904),
    "0.53": (466, 880),
    "0.54": (470, 870),
    "0.56": (480, 854),
    "0.62": (506, 810),
    "0.67": (522, 784),
    "0.75": (554, 738),
    "1.00": (640, 640),
    "1.33": (740, 555),
    "1.50": (784, 522),
    "1.78": (854, 480),
    "1.89": (880, 466),
    "2.00": (906, 454),
    "2.08": (924, 444),
}

# S = 230400
ASPECT_RATIO_360P = {
    "0.38": (294, 784),
    "0.43": (314, 732),
    "0.48": (332, 692),
    "0.50": (340, 680),
    "0.53": (350, 662),
    "0.54": (352, 652),
    "0.56": (360, 640),
    "0.62": (380, 608),
    "0.67": (392, 588),
    "0.75": (416, 554),
    "1.00": (480, 480),
    "1.33": (554, 416),
    "1.50": (588, 392),
    "1.78": (640, 360),
    "1.89": (660, 350),
    "2.00": (678, 340),
    "2.08": (692, 332),
}

# S = 102240
ASPECT_RATIO_240P = {
    "0.38": (196, 522),
    "0.43": (210, 490),
    "0.48": (222, 462),
    "0.50": (226, 452),
    "0.53": (232, 438),
    "0.54": (236, 436),
    "0.56": (240, 426),
    "0.62": (252, 404),
    "0.67": (262, 393),
    "0.75": (276, 368),
    "1.00": (320, 320),
    "1.33": (370, 278),
    "1.50": (392, 262),
    "1.78": (426, 240),
    "1.89": (440, 232),
    "2.00": (452, 226),
    "2.08": (462, 222),
}

# S = 36864
ASPECT_RATIO_144P = {
    "0.38": (117, 312),
    "0.43": (125, 291),
    "0.48": (133, 277),
    "0.50": (135, 270),
    "0.53": (139, 262),
    "0.54": (141, 260),
    "0.56": (144, 256),
    "0.62": (151, 241),
    "0.67": (156, 234),
    "0.75": (166, 221),
    "1.00": (192, 192),
    "1.33": (221, 165),
    "1.50": (235, 156),
    "1.78": (256, 144),
    "1.89": (263, 139),
    "2.00": (271, 135),
    "2.08": (277, 132),
}

# ---- the PixArt square tables (40 ratios each) ---------------------------------------------------------------

# S = 8294400
ASPECT_RATIO_2880 = {
    "0.25": (1408, 5760),
    "0.26": (1408, 5568),
    "0.27": (1408, 5376),
    "0.28": (1408, 5184),
    "0.32": (1600, 4992),
    "0.33": (1600, 4800),
    "0.34": (1600, 4672),
    "0.4": (1792, 4480),
    "0.42": (1792, 4288),
    "0.47": (1920, 4096),
    "0.49": (1920, 3904),
    "0.51": (1920, 3776),
    "0.55": (2112, 3840),
    "0.59": (2112, 3584),
    "0.68": (2304, 3392),
    "0.72": (2304, 3200),
    "0.78": (2496, 3200),
    "0.83": (2496, 3008),
    "0.89": (2688, 3008),
    "0.93": (2688, 2880),
    "1.0": (2880, 2880),
    "1.07": (2880, 2688),
    "1.12": (3008, 2688),
    "1.21": (3008, 2496),
    "1.28": (3200, 2496),
    "1.39": (3200, 2304),
    "1.47": (3392, 2304),
    "1.7": (3584, 2112),
    "1.82": (3840, 2112),
    "2.03": (3904, 1920),
    "2.13": (4096, 1920),
    "2.39": (4288, 1792),
    "2.5": (4480, 1792),
    "2.92": (4672, 1600),
    "3.0": (4800, 1600),
    "3.12": (4992, 1600),
    "3.68": (5184, 1408),
    "3.82": (5376, 1408),
    "3.95": (5568, 1408),
    "4.0": (5760, 1408),
}

# S = 4194304
ASPECT_RATIO_2048 = {
    "0.25": (1024, 4096),
    "0.26": (1024, 3968),
    "0.27": (1024, 3840),
    "0.28": (1024, 3712),
    "0.32": (1152, 3584),
    "0.33": (1152, 3456),
    "0.35": (1152, 3328),
    "0.4": (1280, 3200),
    "0.42": (1280, 3072),
    "0.48": (1408, 2944),
    "0.5": (1408, 2816),
    "0.52": (1408, 2688),
    "0.57": (1536, 2688),
    "0.6": (1536, 2560),
    "0.68": (1664, 2432),
    "0.72": (1664, 2304),
    "0.78": (1792, 2304),
    "0.82": (1792, 2176),
    "0.88": (1920, 2176),
    "0.94": (1920, 2048),
    "1.0": (2048, 2048),
    "1.07": (2048, 1920),
    "1.13": (2176, 1920),
    "1.21": (2176, 1792),
    "1.29": (2304, 1792),
    "1.38": (2304, 1664),
    "1.46": (2432, 1664),
    "1.67": (2560, 1536),
    "1.75": (2688, 1536),
    "2.0": (2816, 1408),
    "2.09": (2944, 1408),
    "2.4": (3072, 1280),
    "2.5": (3200, 1280),
    "2.89": (3328, 1152),
    "3.0": (3456, 1152),
    "3.11": (3584, 1152),
    "3.62": (3712, 1024),
    "3.75": (3840, 1024),
    "3.88": (3968, 1024),
    "4.0": (4096, 1024),
}

# S = 1048576
ASPECT_RATIO_1024 = {
    "0.25": (512, 2048),
    "0.26": (512, 1984),
    "0.27": (512, 1920),
    "0.28": (512, 1856),
    "0.32": (576, 1792),
    "0.33": (576, 1728),
    "0.35": (576, 1664),
    "0.4": (640, 1600),
    "0.42": (640, 1536),
    "0.48": (704, 1472),
    "0.5": (704, 1408),
    "0.52": (704, 1344),
    "0.57": (768, 1344),
    "0.6": (768, 1280),
    "0.68": (832, 1216),
    "0.72": (832, 1152),
    "0.78": (896, 1152),
    "0.82": (896, 1088),
    "0.88": (960, 1088),
    "0.94": (960, 1024),
    "1.0": (1024, 1024),
    "1.07": (1024, 960),
    "1.13": (1088, 960),
    "1.21": (1088, 896),
    "1.29": (1152, 896),
    "1.38": (1152, 832),
    "1.46": (1216, 832),
    "1.67": (1280, 768),
    "1.75": (1344, 768),
    "2.0": (1408, 704),
    "2.09": (1472, 704),
    "2.4": (1536, 640),
    "2.5": (1600, 640),
    "2.89": (1664, 576),
    "3.0": (1728, 576),
    "3.11": (1792, 576),
    "3.62": (1856, 512),
    "3.75": (1920, 512),
    "3.88": (1984, 512),
    "4.0": (2048, 512),
}

# S = 262144
ASPECT_RATIO_512 = {
    "0.25": (256, 1024),
    "0.26": (256, 992),
    "0.27": (256, 960),
    "0.28": (256, 928),
    "0.32": (288, 896),
    "0.33": (288, 864),
    "0.35": (288, 832),
    "0.4": (320, 800),
    "0.42": (320, 768),
    "0.48": (352, 736),
    "0.5": (352, 704),
    "0.52": (352, 672),
    "0.57": (384, 672),
    "0.6": (384, 640),
    "0.68": (416, 608),
    "0.72": (416, 576),
    "0.78": (448, 576),
    "0.82": (448, 544),
    "0.88": (480, 544),
    "0.94": (480, 512),
    "1.0": (512, 512),
    "1.07": (512, 480),
    "1.13": (544, 480),
    "1.21": (544, 448),
    "1.29": (576, 448),
    "1.38": (576, 416),
    "1.46": (608, 416),
    "1.67": (640, 384),
    "1.75": (672, 384),
    "2.0": (704, 352),
    "2.09": (736, 352),
    "2.4": (768, 320),
    "2.5": (800, 320),
    "2.89": (832, 288),
    "3.0": (864, 288),
    "3.11": (896, 288),
    "3.62": (928, 256),
    "3.75": (960, 256),
    "3.88": (992, 256),
    "4.0": (1024, 256),
}

# S = 65536
ASPECT_RATIO_256 = {
    "0.25": (128, 512),
    "0.26": (128, 496),
    "0.27": (128, 480),
    "0.28": (128, 464),
    "0.32": (144, 448),
    "0.33": (144, 432),
    "0.35": (144, 416),
    "0.4": (160, 400),
    "0.42": (160, 384),
    "0.48": (176, 368),
    "0.5": (176, 352),
    "0.52": (176, 336),
    "0.57": (192, 336),
    "0.6": (192, 320),
    "0.68": (208, 304),
    "0.72": (208, 288),
    "0.78": (224, 288),
    "0.82": (224, 272),
    "0.88": (240, 272),
    "0.94": (240, 256),
    "1.0": (256, 256),
    "1.07": (256, 240),
    "1.13": (272, 240),
    "1.21": (272, 224),
    "1.29": (288, 224),
    "1.38": (288, 208),
    "1.46": (304, 208),
    "1.67": (320, 192),
    "1.75": (336, 192),
    "2.0": (352, 176),
    "2.09": (368, 176),
    "2.4": (384, 160),
    "2.5": (400, 160),
    "2.89": (416, 144),
    "3.0": (432, 144),
    "3.11": (448, 144),
    "3.62": (464, 128),
    "3.75": (480, 128),
    "3.88": (496, 128),
    "4.0": (512, 128),
}

# resolution name -> (number of pixels, table); upstream's order.
ASPECT_RATIOS = {
    "144p": (36864, ASPECT_RATIO_144P),
    "256": (65536, ASPECT_RATIO_256),
    "240p": (102240, ASPECT_RATIO_240P),
    "360p": (230400, ASPECT_RATIO_360P),
    "512": (262144, ASPECT_RATIO_512),
    "480p": (409920, ASPECT_RATIO_480P),
    "720p": (921600, ASPECT_RATIO_720P),
    "1024": (1048576, ASPECT_RATIO_1024),
    "1080p": (2073600, ASPECT_RATIO_1080P),
    "2k": (3686400, ASPECT_RATIO_2K),
    "2048": (4194304, ASPECT_RATIO_2048),
    "2880": (8294400, ASPECT_RATIO_2880),
    "4k": (8294400, ASPECT_RATIO_4K),
}

# The PixArt square names, whose tables do not use the ASPECT_RATIO_MAP keys.
SQUARE_RESOLUTIONS = ("256", "512", "1024", "2048", "2880")

# ``--num-frames`` names.
NUM_FRAMES_MAP = {
    "1x": 51,
    "2x": 102,
    "4x": 204,
    "8x": 408,
    "16x": 816,
    "2s": 51,
    "4s": 102,
    "8s": 204,
    "16s": 408,
    "32s": 816,
}


def _table(resolution):
    if not isinstance(resolution, str) or resolution not in ASPECT_RATIOS:
        raise InferenceInputError(
            f"unknown resolution {resolution!r}; valid names: {', '.join(ASPECT_RATIOS)}")
    return ASPECT_RATIOS[resolution][1]


def get_closest_ratio(height, width, ratios):
    """The key of ``ratios`` whose value (as a float) is nearest to ``height / width``; ties go to the key that
    comes first in the table (upstream's ``min`` over the keys)."""
    if height <= 0 or width <= 0:
        raise InferenceInputError(f"height and width must be positive, got {height}x{width}")
    ratio = height / width
    return min(ratios.keys(), key=lambda key: abs(float(key) - ratio))


def get_num_pixels(name):
    """Number of pixels of a resolution name (``"240p"`` -> 102240)."""
    if not isinstance(name, str) or name not in ASPECT_RATIOS:
        raise InferenceInputError(f"unknown resolution {name!r}; valid names: {', '.join(ASPECT_RATIOS)}")
    return ASPECT_RATIOS[name][0]


def get_image_size(resolution, ar_ratio):
    """``(height, width)`` in pixels for a resolution name and an H:W aspect-ratio name.

    ``ar_ratio`` is a name of ``ASPECT_RATIO_MAP`` (``"9:16"``) or, as later upstream versions also accept, a
    ratio key of the resolution's table (``"0.56"``).

    Difference from upstream v1.2: upstream looks the mapped key (``"1.00"``) up literally, which fails for the
    PixArt square names (256, 512, 1024, 2048, 2880) because their tables spell keys differently (``"1.0"``) and
    use other ratios (0.57 rather than 0.56). Here, for those names, the key is matched by value, else the table's
    closest ratio is used (``get_closest_ratio`` on the key's value): ``("1024", "1:1") -> (1024, 1024)``,
    ``("1024", "9:16") -> (768, 1344)`` (ratio 0.57). Unknown names raise ``InferenceInputError``.
    """
    table = _table(resolution)
    if isinstance(ar_ratio, str) and ar_ratio in ASPECT_RATIO_MAP:
        key = ASPECT_RATIO_MAP[ar_ratio]
    elif isinstance(ar_ratio, str) and ar_ratio in table:
        key = ar_ratio
    else:
        raise InferenceInputError(
            f"unknown aspect ratio {ar_ratio!r} for resolution {resolution!r}; valid H:W names: "
            f"{', '.join(ASPECT_RATIO_MAP)}")
    if key not in table:
        if resolution not in SQUARE_RESOLUTIONS:  # cannot happen with upstream's tables; kept as a guard
            raise InferenceInputError(f"aspect ratio {ar_ratio!r} not found for resolution {resolution!r}")
        value = float(key)
        same = [k for k in table if float(k) == value]
        key = same[0] if same else min(table.keys(), key=lambda k: abs(float(k) - value))
    h, w = table[key]
    return int(h), int(w)


def get_num_frames(num_frames):
    """Number of frames from an int, an int string (``"51"``) or a name: 2s/1x = 51, 4s/2x = 102, 8s/4x = 204,
    16s/8x = 408, 32s/16x = 816. Anything else (including values < 1) raises ``InferenceInputError``."""
    if isinstance(num_frames, str):
        text = num_frames.strip()
        if text in NUM_FRAMES_MAP:
            return NUM_FRAMES_MAP[text]
        try:
            value = int(text)
        except ValueError:
            raise InferenceInputError(
                f"invalid number of frames {num_frames!r}; use a positive integer or one of "
                f"{', '.join(NUM_FRAMES_MAP)}") from None
    elif isinstance(num_frames, Integral) and not isinstance(num_frames, bool):
        value = int(num_frames)
    else:
        raise InferenceInputError(
            f"invalid number of frames {num_frames!r}; use a positive integer or one of {', '.join(NUM_FRAMES_MAP)}")
    if value < 1:
        raise InferenceInputError(f"number of frames must be >= 1, got {num_frames!r}")
    return value


def prepare_multi_resolution_info(batch_size, image_size, num_frames, fps):
    """The size conditioning STDiT2/STDiT3 receive (upstream's "STDiT2"/"OpenSora" branch): a dict of float32
    arrays of length ``batch_size``: ``height``, ``width``, ``num_frames``, ``ar`` = height / width, and ``fps``
    (``IMG_FPS`` = 120 when ``num_frames == 1``).

    Upstream builds these tensors directly in the model dtype (bf16 in the release config, where e.g. the 480p
    width 854 becomes 856 and ar = 240/426 becomes 0.5625); here they are float32 and the caller casts them
    together with the model inputs.
    """
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise InferenceInputError(f"batch size must be a positive integer, got {batch_size!r}")
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise InferenceInputError(f"image size must be (height, width), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise InferenceInputError(f"image size must be positive, got {image_size!r}")
    num_frames = get_num_frames(num_frames)
    fps = fps if num_frames > 1 else IMG_FPS

    def full(value):
        return np.full((batch_size,), value, dtype=np.float32)

    return dict(height=full(height), width=full(width), num_frames=full(num_frames),
                ar=full(height / width), fps=full(fps))


# ------------------------------------------------------------------------------------------ Open-Sora 2.0
# main:opensora/datasets/aspect.py: the tables are computed from the number of pixels ("256px" = 256^2,
# "768px" = 768^2; "360p" = 360^2 * 16 / 9), keys are W:H names ("16:9" is landscape), sizes are multiples of
# D = AE_SPATIAL_COMPRESSION (16). Inference (``training=False``) keeps every key, duplicates included.
V2_ASPECT_RATIO_LIST = ("2.39:1", "2:1", "16:9", "1.85:1", "9:16", "5:8", "3:2", "4:3", "1:1")   # width:height
V2_RESOLUTIONS = ("256px", "768px")   # the released configs' names (any "<N>px" / "<N>p" is computed alike)
V2_MAX_FRAMES = 129


def _v2_compression():
    import os

    return int(os.environ.get("AE_SPATIAL_COMPRESSION", 16))


def get_num_pixels_v2(resolution):
    """``get_num_pexels_from_name``: "256px" -> 65536, "360p" -> 360^2 * 16 / 9 (the part before "_")."""
    name = str(resolution).split("_")[0]
    try:
        if name.endswith("px"):
            size = int(name[:-2])
            return size * size
        if name.endswith("p"):
            size = int(name[:-1])
            return int(size * size / 9 * 16)
    except ValueError:
        pass
    raise InferenceInputError(f"unknown Open-Sora 2.0 resolution {resolution!r}; use {' or '.join(V2_RESOLUTIONS)}")


def get_aspect_ratios_dict_v2(total_pixels, training=False):
    """``get_aspect_ratios_dict``: {W:H name: (height, width)} for ``total_pixels`` (upstream's arithmetic)."""
    import math

    D = _v2_compression()
    out, vertical = {}, {}
    for ratio in V2_ASPECT_RATIO_LIST:
        wr, hr = map(float, ratio.split(":"))
        width = int(math.sqrt(total_pixels * (wr / hr)) // D) * D
        height = int((total_pixels / width) // D) * D
        if training:
            diff = abs(height * width - total_pixels)
            for h, w in ((height - D, width), (height + D, width), (height, width - D), (height, width + D)):
                if abs(h * w - total_pixels) < diff:
                    height, width, diff = h, w, abs(h * w - total_pixels)
        if (height, width) not in out.values() or not training:
            out[ratio] = (height, width)
            vertical[":".join(ratio.split(":")[::-1])] = (width, height)
    out.update(vertical)
    return out


def round_up_16(x):
    """``sanitize_sampling_option``: H and W rounded up to multiples of 16."""
    x = int(x)
    return (x // 16 + (1 if x % 16 else 0)) * 16


def get_image_size_v2(resolution, ar_ratio):
    """(height, width) of an Open-Sora 2.0 resolution ("256px", "768px") and a W:H aspect-ratio name, rounded up
    to multiples of 16 as ``sanitize_sampling_option`` does: ("256px", "16:9") -> (192, 336),
    ("768px", "2.39:1") -> (496, 1184). Unknown names raise ``InferenceInputError`` (upstream: an assert)."""
    table = get_aspect_ratios_dict_v2(get_num_pixels_v2(resolution), training=False)
    if ar_ratio not in table:
        raise InferenceInputError(f"unknown aspect ratio {ar_ratio!r} for Open-Sora 2.0 (W:H names): "
                                  f"{', '.join(table)}")
    h, w = table[ar_ratio]
    return round_up_16(h), round_up_16(w)


def check_num_frames_v2(num_frames):
    """Open-Sora 2.0 samples 4k + 1 frames, at most 129 (the causal VAE: (T - 1) / 4 + 1 latent frames; 1 = an
    image). Anything else raises ``InferenceInputError`` (upstream silently decodes (T - 1)//4*4 + 1 frames)."""
    value = get_num_frames(num_frames) if isinstance(num_frames, str) else num_frames
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1 or (value - 1) % 4 \
            or value > V2_MAX_FRAMES:
        raise InferenceInputError(f"Open-Sora 2.0 num_frames must be 4k+1 and <= {V2_MAX_FRAMES} (1, 5, 9, ..., 33, "
                                  f"..., 129), got {num_frames!r}")
    return int(value)
