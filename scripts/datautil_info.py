"""Fill num_frames, height, width, aspect_ratio, fps and resolution of a dataset table from its files (upstream
``python -m tools.datasets.datautil INPUT --info [--fmin N]``).

    python scripts/datautil_info.py data/meta.csv [--output data/meta_info.csv] [--fmin 1] [--no-progress]

The input (csv, or parquet with pandas + pyarrow installed) needs a ``path`` column; relative paths are taken from
the working directory, else from the table's folder. Unreadable files are dropped, printed on stderr and listed
with the reason in ``<output>_failed.csv``; ``--fmin N`` drops rows with fewer than N frames (images count as 1).
Default output: ``<input dir>/<name>_info[_fmin<N>].csv``. Both files are written atomically.
Exit status: 0 on success (even when some files were unreadable), 2 on a bad input table or argument.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from opensora_dual.data import DataError, run_info  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="dataset table (.csv or .parquet) with a path column")
    parser.add_argument("--output", default=None, help="output csv (default: <name>_info[_fmin<N>].csv)")
    parser.add_argument("--fmin", type=int, default=None, help="drop rows with fewer frames than this")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = run_info(args.input, args.output, fmin=args.fmin, progress=not args.no_progress, log=sys.stderr)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    short = f", {summary['too_short']} with fewer than {args.fmin} frames dropped" if args.fmin is not None else ""
    print(f"{summary['rows']} rows: {summary['kept']} written to {summary['output']}, {summary['failed']} "
          f"unreadable (listed in {summary['failed_csv']}){short}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
