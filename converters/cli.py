"""``python -m converters inspect|convert|verify`` (also installed as ``opensora-convert``).

Bad input prints one ``error:`` message (no traceback) and exits 2; Ctrl-C exits 130 leaving no output."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _parser():
    p = argparse.ArgumentParser(prog="python -m converters", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    i = sub.add_parser("inspect", help="list a checkpoint's format, dtypes, keys, and how it maps onto a model")
    i.add_argument("path")
    i.add_argument("--model", help="registered preset (default: the source's config.json)")
    i.add_argument("--limit", type=int, default=20, help="keys to list")
    i.add_argument("--json", action="store_true", help="print JSON")

    c = sub.add_parser("convert", help="convert a checkpoint (streaming, atomic)")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--to", choices=["ms", "ms-ckpt", "ms-safetensors", "pt", "pt-safetensors", "mindone",
                                    "mindone-ckpt", "release", "pth"],
                   help="target (default from dst: .ckpt -> ms, .safetensors -> pt, .pth/.pt -> pth (a flat "
                        "torch.save state dict, upstream v1.0's layout), folder -> release)")
    c.add_argument("--model", help="registered preset (default: the source's config.json)")
    c.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="cast floating tensors")
    c.add_argument("--init-from", choices=["pixart"], help="initialise STDiT3 or STDiT from a PixArt-alpha/Sigma checkpoint")
    c.add_argument("--src-dialect", choices=["auto", "ours", "mindone"], default="auto")
    c.add_argument("--patch-layout", choices=["conv3d", "linear", "conv2d"], default="conv3d",
                   help="mindone target: store the Conv3d patch weight as Linear or Conv2d")
    c.add_argument("--report", help="also write the report as JSON here")
    c.add_argument("--no-progress", action="store_true")

    v = sub.add_parser("verify", help="check a checkpoint against the model (strict); optionally compare/load")
    v.add_argument("path")
    v.add_argument("--model", help="registered preset (default: the source's config.json)")
    v.add_argument("--against", help="another checkpoint that must hold bit-identical tensors")
    v.add_argument("--load", choices=["pt", "ms"], help="also build the model in this backend and strict-load")
    v.add_argument("--json", action="store_true")
    return p


def _print_inspect(info):
    print(f"{info['path']}: {info['format']}, {info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB")
    print("  dtypes: " + ", ".join(f"{k} x{v}" for k, v in info["dtypes"].items()))
    if info.get("config"):
        cfg = info["config"]
        print(f"  config: model_type={cfg.get('model_type', cfg.get('_class_name'))}")
    for k, shape, dt in info["keys"]:
        print(f"    {k:60s} {dt:5s} {shape}")
    if info["tensors"] > len(info["keys"]):
        print(f"    ... {info['tensors'] - len(info['keys'])} more")
    if "model" in info:
        print(f"  model: {info['model']}; names: {info['dialect']}")
        if info["problems"]:
            for label, items in info["problems"].items():
                print(f"  {len(items)} {label}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        else:
            print("  matches the model: every key present with the right shape")
    elif "model_error" in info:
        print(f"  (no model to check against: {info['model_error'].splitlines()[0]})")
    for n in info["notes"]:
        print(f"  note: {n}")


def main(argv=None):
    args = _parser().parse_args(argv)
    from converters.errors import ConversionError

    try:
        import converters as C

        if args.cmd == "inspect":
            info = C.inspect(args.path, model=args.model, limit=args.limit)
            print(json.dumps(info, indent=2, default=str) if args.json else "", end="")
            if not args.json:
                _print_inspect(info)
        elif args.cmd == "convert":
            rep = C.convert(args.src, args.dst, to=args.to, model=args.model, dtype=args.dtype,
                            init_from=args.init_from, progress=not args.no_progress,
                            src_dialect=args.src_dialect, patch_form=args.patch_layout, report=args.report)
            print(rep)
        elif args.cmd == "verify":
            res = C.verify(args.path, model=args.model, against=args.against, load=args.load)
            if args.json:
                print(json.dumps(res, indent=2))
            else:
                print(f"{res['path']}: OK ({res['tensors']} tensors match {res['model']}; {res['dialect']} names)")
                if "identical" in res:
                    if res["identical"]:
                        print(f"  bit-identical to {args.against}")
                    else:
                        print(f"  {len(res['differing'])} tensors differ from {args.against}: "
                              + ", ".join(res["differing"][:8]))
                if res.get("loaded_into"):
                    print(f"  strict-loaded into the {res['loaded_into']} model")
            if res.get("identical") is False:
                return 1
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # disk full, permissions, ...: the output was not written
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
