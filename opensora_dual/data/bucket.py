"""Multi-resolution buckets and the bucket batch sampler of Open-Sora v1.2 (upstream
``opensora/datasets/bucket.py`` and ``opensora/datasets/sampler.py``), numpy only.

Bucket config (upstream's form): ``{resolution_name: {num_frames: (keep_prob, batch_size)}}``, e.g.
``{"240p": {1: (0.3, 297), 51: (0.4, 20), 102: ((0.4, 0.33), 10)}}``. ``keep_prob`` is a number, or a pair
``(p_res, p_time)``; ``batch_size`` is per rank; ``(0.0, None)`` disables a bucket (but it still catches the
videos it is the largest fit for, see below). Resolution names and their aspect-ratio tables come from
``opensora_dual.inference.aspect``.

``Bucket.get_bucket_id(T, H, W, frame_interval, seed)`` reproduces upstream's draws exactly (same numpy calls):

1. resolutions are tried from the most pixels to the fewest; one is a candidate when H*W >= 0.8 * its pixels;
2. an image (T == 1) needs a frame bucket ``1`` there and is kept with one draw
   ``default_rng(seed + id(res, 1)).random() < keep_prob``; otherwise the next resolution is tried;
3. a video takes the largest frame bucket t (t != 1) with ``T > t * frame_interval`` -- strict, so a 51-frame
   video never fits the 51 bucket. For each frame bucket looked at (largest first) a fresh
   ``rng = default_rng(seed + id(res, t))`` is made; with a pair keep_prob the first draw is a gate,
   ``rng.random() > p_time`` skips that frame bucket;
4. the chosen (res, t) is kept when ``p_res >= 1 or rng.random() < p_res`` (the same rng: the 1st draw of a
   number keep_prob, the 2nd of a pair); if not, the next smaller resolution is tried (never a shorter t);
5. the aspect ratio is the closest key of the resolution's table (``get_closest_ratio``).

``id(res, t)`` numbers the (resolution, frame bucket) pairs 0, 1, ... in that order (resolutions by pixels
descending, frame buckets descending), disabled ones included. The sampler passes
``seed = sampler_seed + epoch + row * num_bucket`` for row ``row`` of the table.

``VariableVideoBatchSampler`` follows upstream's ``__iter__``: group rows by bucket (first-seen order), pad /
drop each bucket to a multiple of its batch size, shuffle each bucket and then the order of bucket accesses with
one generator seeded ``seed + epoch``, pad / drop the accesses to a multiple of ``num_replicas``, and give access
``i * num_replicas + rank`` to rank ``rank``. Shuffles use ``np.random.default_rng(seed + epoch).permutation``
where upstream uses ``torch.randperm``: bucket assignment agrees with upstream exactly, the shuffled order does not
(and cannot without torch). See docs/data.md for the resume state and the differences from upstream.
"""
import math
from collections import OrderedDict
from numbers import Integral, Real

import numpy as np

from opensora_dual.data.errors import DataError
from opensora_dual.inference.aspect import ASPECT_RATIOS, get_closest_ratio

# A sample fits a resolution when H * W >= PIXEL_APPROX * pixels(resolution) (upstream's ``approx = 0.8``).
PIXEL_APPROX = 0.8


def _is_int(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def _probability(value, where):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise DataError(f"{where}: keep probability must be a number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: keep probability must be in [0, 1], got {value!r}")
    return value


def _keep_prob(value, where):
    """A number, or a pair (p_res, p_time) -- tuple or list (YAML / JSON configs give lists)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise DataError(f"{where}: a keep-probability pair must be (p_res, p_time), got {value!r}")
        return (_probability(value[0], where), _probability(value[1], where))
    return _probability(value, where)


def _frames_key(key, resolution):
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key.strip())
    if not _is_int(key) or key < 1:
        raise DataError(f"bucket {resolution!r}: frame-bucket keys must be integers >= 1, got {key!r}")
    return int(key)


def _p_res(prob):
    return prob[0] if isinstance(prob, tuple) else prob


class Bucket:
    """The (resolution, num_frames, aspect ratio) buckets of a bucket config (see the module docstring)."""

    def __init__(self, bucket_config):
        if not isinstance(bucket_config, dict) or not bucket_config:
            raise DataError(f"bucket config must be a non-empty dict resolution -> {{num_frames: (keep_prob, "
                            f"batch_size)}}, got {bucket_config!r}")
        for name in bucket_config:
            if name not in ASPECT_RATIOS:
                raise DataError(f"unknown resolution {name!r} in the bucket config; valid names: "
                                f"{', '.join(ASPECT_RATIOS)}")
        # resolutions by pixel count, largest first (a stable sort: equal counts keep the config's order)
        names = sorted(bucket_config, key=lambda n: ASPECT_RATIOS[n][0], reverse=True)
        self.bucket_probs = OrderedDict()
        self.bucket_bs = OrderedDict()
        for name in names:
            frames = bucket_config[name]
            if not isinstance(frames, dict) or not frames:
                raise DataError(f"bucket {name!r} must be a non-empty dict num_frames -> (keep_prob, batch_size), "
                                f"got {frames!r}")
            parsed = {}
            for key, value in frames.items():
                t = _frames_key(key, name)
                where = f"bucket ({name!r}, {t})"
                if t in parsed:
                    raise DataError(f"{where} is given twice")
                if not isinstance(value, (tuple, list)) or len(value) != 2:
                    raise DataError(f"{where}: value must be (keep_prob, batch_size), got {value!r}")
                prob = _keep_prob(value[0], where)
                bs = value[1]
                if bs is None or (_is_int(bs) and bs == 0):
                    if _p_res(prob) > 0:
                        raise DataError(f"{where} has keep probability {_p_res(prob)} but no batch size "
                                        f"({bs!r}); use (0.0, None) to disable it")
                    bs = None
                elif not _is_int(bs) or bs < 1:
                    raise DataError(f"{where}: batch size must be a positive integer or None, got {bs!r}")
                else:
                    bs = int(bs)
                parsed[t] = (prob, bs)
            order = sorted(parsed, reverse=True)
            self.bucket_probs[name] = OrderedDict((t, parsed[t][0]) for t in order)
            self.bucket_bs[name] = OrderedDict((t, parsed[t][1]) for t in order)

        self.hw_criteria = OrderedDict((name, ASPECT_RATIOS[name][0]) for name in self.bucket_probs)
        self.ar_criteria = {name: ASPECT_RATIOS[name][1] for name in self.bucket_probs}
        self.bucket_id = OrderedDict()
        count = 0
        for name, frames in self.bucket_probs.items():
            self.bucket_id[name] = OrderedDict()
            for t in frames:
                self.bucket_id[name][t] = count
                count += 1
        # upstream counts every (resolution, num_frames, aspect ratio) triple
        self.num_bucket = sum(len(self.ar_criteria[name]) * len(frames)
                              for name, frames in self.bucket_probs.items())

    def get_bucket_id(self, T, H, W, frame_interval=1, seed=0):
        """``(resolution, num_frames, ratio_key)`` for a sample of T frames of H x W, or None when no bucket
        takes it (upstream's rules and draws, module docstring)."""
        T, H, W = int(T), int(H), int(W)
        if not _is_int(frame_interval) or frame_interval < 1:
            raise DataError(f"frame_interval must be a positive integer, got {frame_interval!r}")
        if not _is_int(seed) or seed < 0:
            raise DataError(f"bucket seed must be a non-negative integer, got {seed!r}")
        resolution = H * W
        for hw_id, t_probs in self.bucket_probs.items():
            if resolution < self.hw_criteria[hw_id] * PIXEL_APPROX:
                continue
            if T == 1:  # an image: only the frame bucket 1, one draw
                if 1 not in t_probs:
                    continue
                rng = np.random.default_rng(seed + self.bucket_id[hw_id][1])
                if rng.random() < _p_res(t_probs[1]):
                    return hw_id, 1, get_closest_ratio(H, W, self.ar_criteria[hw_id])
                continue
            chosen = None
            for t_id, prob in t_probs.items():
                rng = np.random.default_rng(seed + self.bucket_id[hw_id][t_id])
                if isinstance(prob, tuple) and rng.random() > prob[1]:
                    continue  # the p_time gate closed this frame bucket
                if T > t_id * frame_interval and t_id != 1:
                    chosen = t_id, prob, rng
                    break
            if chosen is None:
                continue
            t_id, prob, rng = chosen
            p_res = _p_res(prob)
            if p_res >= 1 or rng.random() < p_res:
                return hw_id, t_id, get_closest_ratio(H, W, self.ar_criteria[hw_id])
        return None

    def get_thw(self, bucket_id):
        """(num_frames, height, width) of a bucket id ``(resolution, num_frames, ratio_key)``."""
        hw_id, t_id, ar_id = bucket_id
        h, w = self.ar_criteria[hw_id][ar_id]
        return t_id, h, w

    def get_prob(self, bucket_id):
        return self.bucket_probs[bucket_id[0]][bucket_id[1]]

    def get_batch_size(self, bucket_id):
        return self.bucket_bs[bucket_id[0]][bucket_id[1]]

    def __len__(self):
        return self.num_bucket


class VariableVideoBatchSampler:
    """Batches of rows that share a bucket, per rank, reproducible per ``(seed, epoch)``; resumable mid-epoch.

    ``dataset`` has ``__len__`` and ``get_data_info(i) -> (num_frames, height, width)`` (and optionally a
    ``frame_interval``), or is a sequence of ``(num_frames, height, width)``. Iterating yields lists of
    ``(row, num_frames, height, width)`` -- upstream's ``"row-T-H-W"`` strings as tuples -- where T, H, W are the
    bucket's target size. The same (seed, epoch) gives the same batches on every run; rank r of R gets the
    batches r, r + R, r + 2R, ... of the single-process order (when their count is a multiple of R).

    Resume: ``state_dict()`` records ``seed``, ``epoch`` and ``last_micro_batch_access_index`` (the number of
    bucket accesses consumed by all ranks = batches yielded on this rank x num_replicas, as upstream);
    ``load_state_dict`` restores them and the next iteration yields the rest of that epoch. After an epoch has been
    exhausted the position is back at 0: call ``set_epoch(epoch + 1)``.
    """

    def __init__(self, dataset, bucket_config, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=False,
                 frame_interval=None):
        if not _is_int(num_replicas) or num_replicas < 1:
            raise DataError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if not _is_int(rank) or not 0 <= rank < num_replicas:
            raise DataError(f"rank must be an integer in [0, {num_replicas}), got {rank!r}")
        if not _is_int(seed) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        self.dataset = dataset
        self.bucket = bucket_config if isinstance(bucket_config, Bucket) else Bucket(bucket_config)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        if frame_interval is None:
            frame_interval = getattr(dataset, "frame_interval", 1)
        if not _is_int(frame_interval) or frame_interval < 1:
            raise DataError(f"frame_interval must be a positive integer, got {frame_interval!r}")
        self.frame_interval = int(frame_interval)
        self.epoch = 0
        self.last_micro_batch_access_index = 0

    # ---- bucket assignment ------------------------------------------------------------------------------
    def _data_info(self, i):
        if hasattr(self.dataset, "get_data_info"):
            return self.dataset.get_data_info(i)
        return self.dataset[i]

    def group_by_bucket(self):
        """OrderedDict bucket_id -> [rows], buckets in the order their first row appears (upstream's)."""
        base = self.seed + self.epoch
        groups = OrderedDict()
        for i in range(len(self.dataset)):
            T, H, W = self._data_info(i)
            bucket_id = self.bucket.get_bucket_id(T, H, W, self.frame_interval, base + i * self.bucket.num_bucket)
            if bucket_id is not None:
                groups.setdefault(bucket_id, []).append(i)
        return groups

    def bucket_info(self):
        """``{(resolution, num_frames): [#rows, #full batches]}`` for the current epoch (upstream's log)."""
        info = OrderedDict()
        for bucket_id, rows in self.group_by_bucket().items():
            entry = info.setdefault(bucket_id[:2], [0, 0])
            entry[0] += len(rows)
            entry[1] += len(rows) // self.bucket.get_batch_size(bucket_id)
        return info

    # ---- the epoch's plan -------------------------------------------------------------------------------
    def _plan(self):
        """(rows per bucket after pad/drop/shuffle, bucket access order after the replica padding)."""
        groups = self.group_by_bucket()
        rng = np.random.default_rng(self.seed + self.epoch)
        batches_per_bucket = OrderedDict()
        for bucket_id, rows in groups.items():
            bs = self.bucket.get_batch_size(bucket_id)
            remainder = len(rows) % bs
            if remainder:
                if self.drop_last:
                    rows = rows[:len(rows) - remainder]
                else:  # cyclic padding; equals upstream's rows + rows[:bs - remainder] whenever that is enough
                    rows = rows + [rows[k % len(rows)] for k in range(bs - remainder)]
            if self.shuffle:
                rows = [rows[k] for k in rng.permutation(len(rows))]
            groups[bucket_id] = rows
            batches_per_bucket[bucket_id] = len(rows) // bs
        order = [bucket_id for bucket_id, n in batches_per_bucket.items() for _ in range(n)]
        if self.shuffle:
            order = [order[k] for k in rng.permutation(len(order))]
        remainder = len(order) % self.num_replicas
        if remainder:
            if self.drop_last:
                order = order[:len(order) - remainder]
            else:
                order = order + [order[k % len(order)] for k in range(self.num_replicas - remainder)]
        return groups, order

    def num_batches(self):
        """Batches this rank yields in a whole epoch (exact: the buckets are computed)."""
        return len(self._plan()[1]) // self.num_replicas

    def __len__(self):
        return self.num_batches()

    def __iter__(self):
        groups, order = self._plan()
        R = self.num_replicas
        num_iters = len(order) // R
        start_iter = self.last_micro_batch_access_index // R
        # a state saved with another number of replicas resumes at the last whole step (upstream's rule)
        self.last_micro_batch_access_index = start_iter * R
        consumed = {}
        for bucket_id in order[:start_iter * R]:
            consumed[bucket_id] = consumed.get(bucket_id, 0) + self.bucket.get_batch_size(bucket_id)
        for it in range(start_iter, num_iters):
            mine = None
            for j, bucket_id in enumerate(order[it * R:(it + 1) * R]):
                start = consumed.get(bucket_id, 0)
                consumed[bucket_id] = start + self.bucket.get_batch_size(bucket_id)
                if j == self.rank:
                    mine = bucket_id, start
            bucket_id, start = mine
            rows = groups[bucket_id]
            bs = self.bucket.get_batch_size(bucket_id)
            # an access added by the replica padding re-reads its bucket from the start (upstream: empty batch)
            batch = [rows[(start + k) % len(rows)] for k in range(bs)]
            t, h, w = self.bucket.get_thw(bucket_id)
            self.last_micro_batch_access_index += R
            yield [(row, t, h, w) for row in batch]
        self.reset()

    # ---- epoch and resume -------------------------------------------------------------------------------
    def set_epoch(self, epoch):
        if not _is_int(epoch) or epoch < 0:
            raise DataError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def reset(self):
        self.last_micro_batch_access_index = 0

    @property
    def batches_done(self):
        """Batches of the current epoch already yielded on this rank."""
        return self.last_micro_batch_access_index // self.num_replicas

    def state_dict(self, num_steps=None):
        """Resume state. ``num_steps`` (batches consumed on this rank in this epoch) overrides the sampler's own
        count, as upstream's ``state_dict(num_steps)``, for loaders that prefetch."""
        if num_steps is None:
            num_steps = self.batches_done
        if not _is_int(num_steps) or num_steps < 0:
            raise DataError(f"num_steps must be a non-negative integer, got {num_steps!r}")
        return {"seed": self.seed, "epoch": self.epoch,
                "last_micro_batch_access_index": int(num_steps) * self.num_replicas}

    def load_state_dict(self, state):
        keys = ("seed", "epoch", "last_micro_batch_access_index")
        if not isinstance(state, dict) or any(k not in state for k in keys):
            raise DataError(f"sampler state must be a dict with keys {', '.join(keys)}, got {state!r}")
        for k in keys:
            if not _is_int(state[k]) or state[k] < 0:
                raise DataError(f"sampler state {k!r} must be a non-negative integer, got {state[k]!r}")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.last_micro_batch_access_index = int(state["last_micro_batch_access_index"])
