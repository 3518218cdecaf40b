"""``python -m npxception.weights_tools``: convert Keras files to npxception ``.npz`` and inspect them.

    python -m npxception.weights_tools convert SRC -o DST.npz [--variant keras|article] [--config CONFIG]
                                   [--skip-layer NAME ...] [--pooling avg|max --input-shape H,W
                                    --classifier-activation softmax|sigmoid|linear|...]
                                   [--dtype-policy float32]
    python -m npxception.weights_tools inspect SRC [the same options]

Bad files get one line on stderr and exit code 1, never a traceback (``--debug``
shows it); the rest of the command-line manners (closed pipes, Ctrl-C) are
npxception's own (npxception/console.py). ``npxception convert`` calls
:func:`main` with its own program name, so usage and error lines name the
command the user typed.
"""

from __future__ import annotations

import argparse
import sys

from npxception import __version__
from npxception.console import EXIT_USAGE, quiet_pipe, run
from npxception.model import load

from npxception import weights_tools
from npxception.weights_tools.dtype_policy import TARGETS

PROG = "python -m npxception.weights_tools"


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog,
                                description="Convert Keras weight files to npxception .npz, without TensorFlow.")
    p.add_argument("--version", action="version", version=f"npxception {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("convert", help="convert a .h5/.keras/.weights.h5 file, Keras 3 sharded weights, a tf_keras "
                                       "SavedModel directory or a TensorFlow checkpoint to .npz",
                       description="Convert a Keras save (a .h5, .keras or .weights.h5 file, Keras 3 sharded weights, "
                                   "a tf_keras SavedModel directory or a TensorFlow checkpoint) of an Xception "
                                   "model to an npxception .npz weight file, without TensorFlow; then use it "
                                   "with --weights.")
    c.add_argument("src", help="the Keras file (format detected from its contents), the .weights.json index of "
                               "sharded weights, SavedModel directory, or checkpoint prefix (or its .index)")
    c.add_argument("-o", "--output", required=True, help="the .npz to write")
    c.add_argument("--variant", choices=["keras", "article"], default=None,
                   help="the architecture (default: detect it; a weights-only file whose layers do not carry "
                        "Keras Xception's names does not determine it, and needs this or --config)")
    c.add_argument("--check-with-keras", action="store_true",
                   help="run SRC in Keras (TensorFlow needed), record Keras' output as the golden test "
                        "case, and fail if npxception disagrees with it")
    c.add_argument("--debug", action="store_true", help="show tracebacks (the same as --debug before the command)")
    _model_options(c)
    i = sub.add_parser("inspect", help="list the layers, shapes, what the file determines, and the architecture",
                       description="Describe a Keras save without converting it: its format, every layer with its "
                                   "weight shapes, what the file does and does not determine, and the detected "
                                   "architecture.")
    i.add_argument("src", help="the Keras file to describe")
    i.add_argument("--debug", action="store_true", help="show tracebacks (the same as --debug before the command)")
    _model_options(i)
    for command in sub.choices.values():  # `convert --version` too (also `npxception convert --version`)
        command.add_argument("--version", action="version", version=f"npxception {__version__}")
    return p


def _input_shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 160,160), found {text!r}") from None
    return h, w


def _model_options(p):
    """What a file may not record: its wiring, its head, a custom identity layer."""
    p.add_argument("--config", default=None,
                   help="a .keras archive or config.json giving the wiring of a weights-only file "
                        "(.weights.h5, a TensorFlow checkpoint)")
    p.add_argument("--skip-layer", action="append", default=[], metavar="NAME",
                   help="treat layer NAME as an identity (only for a layer that is one at inference); repeatable")
    p.add_argument("--pooling", choices=["avg", "max"], default=None,
                   help="weights-only file without --config: the head's global pooling")
    p.add_argument("--input-shape", type=_input_shape, default=None, metavar="H,W",
                   help="weights-only file without --config: the input size the model was trained at")
    p.add_argument("--classifier-activation", default=None, metavar="NAME",
                   help="weights-only file without --config: the classifier's activation "
                        "(softmax, sigmoid, linear, ...)")
    p.add_argument("--dtype-policy", choices=TARGETS, default=None,
                   help="a model that computed in 16 bits (Keras' mixed_float16, mixed_bfloat16, float16, "
                        "bfloat16): compute its weights in float32, which differs from its own predict by its "
                        "16-bit rounding (refused without this option)")


def _options(args) -> dict:
    return {"config": args.config, "skip_layers": args.skip_layer, "pooling": args.pooling,
            "input_shape": args.input_shape, "classifier_activation": args.classifier_activation,
            "dtype_policy": args.dtype_policy}


@quiet_pipe
def main(argv=None, prog: str = PROG) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); ``prog`` names the program in messages."""
    parser = _parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run(prog, _COMMANDS[args.command], args, debug=args.debug)


def _convert(args) -> int:
    path = weights_tools.convert(args.src, args.output, variant=args.variant,
                                 check_with_keras=args.check_with_keras,
                                 on_notice=lambda line: print(line, file=sys.stderr), **_options(args))
    model = load(path)
    total = model.count_params()
    print(path)
    print(f"converted {args.src}: Xception variant={model.variant_name}, input {model.input_shape}, "
          f"classes {model.classes}, {total:,} parameters, {model.dtype}")
    print(f"golden test case: {model.golden.source}; checked on load")
    return 0


def _inspect(args) -> int:
    print(weights_tools.inspect(args.src, **_options(args)))
    return 0


_COMMANDS = {"convert": _convert, "inspect": _inspect}
