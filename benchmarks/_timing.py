"""Timing helper shared by the profile scripts: the best of ``repeat`` calls after one warm-up call, in ms."""
import time


def best_ms(fn, repeat):
    """Call ``fn`` once (warm-up / compile), then ``repeat`` times; the fastest call in milliseconds."""
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) * 1e3
