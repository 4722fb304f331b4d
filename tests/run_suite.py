"""The whole suite as a few pytest processes, one after the other (``make test`` / ``make test-fast``).

    python tests/run_suite.py [pytest arguments ...]      # e.g. -m "not full_size", -x, -k t5

Why several processes: MindSpore and PyTorch keep memory they have once used (compiled graphs, kernel caches,
allocator pools), so one process running every file grew to 9-11 GB before the full-size STDiT cases and peaked
at 21.0 GB (measured at stop 15; README "On a fresh machine"). Each group below starts from ~1 GB instead; the groups are
chosen so that no two of the heaviest full-size families share a process. Every test file belongs to exactly
one group: files no group names run in the last one, so a new file is never left out.

Prints each group's pytest output as it runs, then one summary line per group and the total; exits non-zero
when any group fails. A group that runs no test fails too, unless the arguments select tests (``-m``, ``-k``,
``--deselect``), which may leave a whole group empty.
"""
import glob
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (name, test files relative to the repository root); the order is the order they run in
GROUPS = [
    ("tests", ["tests/test_*.py"]),
    ("parity: VAEs, text encoders, layers", ["parity_tests/test_clip.py", "parity_tests/test_dc_ae.py",
                                             "parity_tests/test_engine.py", "parity_tests/test_flux_ae.py",
                                             "parity_tests/test_hunyuan_vae.py", "parity_tests/test_layers.py",
                                             "parity_tests/test_standard.py", "parity_tests/test_vae.py"]),
    ("parity: samplers, sequence parallel, MMDiT", ["parity_tests/test_flow_matching.py", "parity_tests/test_mmdit.py",
                                                    "parity_tests/test_sampling*.py",
                                                    "parity_tests/test_schedulers_v1.py",
                                                    "parity_tests/test_sequence_parallel.py"]),
    ("parity: STDiT, STDiT2", ["parity_tests/test_stdit.py", "parity_tests/test_stdit2.py"]),
    ("parity: STDiT3, T5, train step", ["parity_tests/test_stdit3.py", "parity_tests/test_t5.py",
                                        "parity_tests/test_train_step.py"]),
]
NO_TESTS = 5   # pytest's exit code when nothing was collected / everything was deselected
SELECTING = ("-m", "-k", "--deselect")   # arguments that may legitimately leave a group with no test
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error|errors|skipped|deselected|xfailed|xpassed).*) in [\d.]+s")


def groups():
    """[(name, files)] with every tests/ and parity_tests/ test file in exactly one group."""
    seen, out = set(), []
    for name, patterns in GROUPS:
        files = [f for p in patterns for f in sorted(glob.glob(os.path.join(ROOT, p))) if f not in seen]
        seen.update(files)
        out.append((name, files))
    rest = [f for d in ("tests", "parity_tests") for f in sorted(glob.glob(os.path.join(ROOT, d, "test_*.py")))
            if f not in seen]
    if rest:
        out[-1] = (out[-1][0] + " (and files no group names)", out[-1][1] + rest)
    return [(n, [os.path.relpath(f, ROOT) for f in files]) for n, files in out if files]


def main(argv):
    results, start = [], time.perf_counter()
    selecting = any(a in SELECTING or a.startswith(tuple(o + "=" for o in SELECTING)) for a in argv)
    for name, files in groups():
        print(f"\n=== {name}: {len(files)} files ===", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *argv, *files], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        summary = ""
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            m = SUMMARY.match(line.strip())
            if m:
                summary = m.group(1)
        rc = proc.wait()
        results.append((name, rc, summary or f"exit code {rc}", time.perf_counter() - t0))
    print("\n=== suite summary ===")
    failed = False
    for name, rc, summary, secs in results:
        ok = rc == 0 or (rc == NO_TESTS and selecting)
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:48s} {summary} ({secs / 60:.1f} min)")
    print(f"{'FAILED' if failed else 'passed'}: {len(results)} pytest processes in {(time.perf_counter() - start) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
