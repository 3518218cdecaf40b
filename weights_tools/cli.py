"""``python -m weights_tools``: convert Keras files to npxception ``.npz`` and inspect them.

    python -m weights_tools convert SRC -o DST.npz [--variant keras|article] [--config CONFIG]
    python -m weights_tools inspect SRC

Bad files get one line on stderr and exit code 1, never a traceback (``--debug``
shows it). ``npxception convert`` calls :func:`main` too.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m weights_tools",
                                description="Convert Keras weight files to npxception .npz, without TensorFlow.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("convert", help="convert a .h5/.keras/.weights.h5 file to .npz")
    c.add_argument("src", help="the Keras file (format detected from its contents)")
    c.add_argument("-o", "--output", required=True, help="the .npz to write")
    c.add_argument("--variant", choices=["keras", "article"], default=None,
                   help="the architecture (default: detect it)")
    c.add_argument("--config", default=None,
                   help="a .keras archive or config.json giving the wiring of a Keras 3 .weights.h5 file")
    c.add_argument("--check-with-keras", action="store_true",
                   help="run SRC in Keras (TensorFlow needed), record Keras' output as the golden test "
                        "case, and fail if npxception disagrees with it")
    c.add_argument("--debug", action="store_true", help="show tracebacks")
    i = sub.add_parser("inspect", help="list the layers, shapes and the detected architecture")
    i.add_argument("src")
    i.add_argument("--config", default=None, help="as for convert")
    i.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    try:
        import weights_tools

        if args.command == "convert":
            path = weights_tools.convert(args.src, args.output, variant=args.variant, config=args.config,
                                         check_with_keras=args.check_with_keras)
            from npxception.weights import load

            model = load(path)
            total, _ = model.count_params()
            print(path)
            print(f"converted {args.src}: Xception variant={model.variant_name}, input {model.input_shape}, "
                  f"classes {model.classes}, {total:,} parameters, {model.dtype}")
            print(f"golden test case: {model.golden.source}; checked on load")
        else:
            print(weights_tools.inspect(args.src, config=args.config))
        return 0
    except KeyboardInterrupt:
        print("weights_tools: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, no traceback
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
