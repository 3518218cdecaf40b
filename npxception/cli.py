"""The ``npxception`` command: predict, summary, convert, compare, show, bench, verify.

Its manners (npxception/console.py): errors are one line on stderr,
``npxception: error: ...``, exit code 1 (argparse's usage errors and "no images
to label": 2); ``--debug`` shows the traceback instead; a closed pipe ends it
quietly; Ctrl-C keeps what was printed and exits 130 (SIGTERM, in predict: 143).
``npxception convert`` is
``python -m npxception.weights_tools convert`` under this program's name.

Function-level imports: each command imports its module when it runs, so that
``npxception --help``, ``--version`` and usage errors load neither NumPy nor
Numba (~0.3 s), and ``weights_tools`` (which depends on npxception, not the
other way round) is loaded only by ``convert`` (tests/test_import.py).
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import CONFIG
from .console import EXIT_INTERRUPTED, EXIT_USAGE, CLIError, Progress, interrupt_requested, quiet_pipe, run
from .prediction_output import CSV_COLUMNS, WRITERS

PROG = "npxception"
# Shown in every subcommand's --help, as convert's (weights_tools) shows its own: both places work.
_DEBUG_HELP = "show tracebacks (the same as --debug before the command)"
FORMATS = ("table", "json", "jsonl", "csv")
# images.INTERPOLATIONS' names (Keras'), spelled out: images imports Pillow, which --help must not load
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Xception in pure NumPy: ImageNet predictions without a framework, "
                    "and layer-by-layer cross-checking of other implementations.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    # Its own dest: each subcommand's --debug default (False) would overwrite this
    # one's value, so `npxception --debug predict ...` lost the flag.
    p.add_argument("--debug", action="store_true", dest="debug_global", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pr = sub.add_parser("predict", help="label images with an Xception classifier",
                        description="Label images. Results stream as each batch finishes; a file that "
                                    "cannot be read gets one line on stderr and its place in the output, "
                                    "and the exit code is then 1.")
    pr.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                    help="image files, and folders (their image files, sorted by name)")
    pr.add_argument("--weights", default="imagenet",
                    help="'imagenet' (default: the official Keras weights, downloaded once) or a converted .npz")
    pr.add_argument("--top", type=_positive_int, default=5, help="how many classes per image (default 5)")
    pr.add_argument("--format", choices=FORMATS, default="table",
                    help="table (default); json: one array; jsonl: one object per line; "
                         "csv: one row per (file, rank) with columns " + ",".join(CSV_COLUMNS)
                         + ". A file that failed has an 'error' field/column instead of predictions; a name "
                         "that is not UTF-8 is shown escaped (b\\xff.png), and json/jsonl add its bytes as "
                         "'file_hex'.")
    pr.add_argument("--json", action="store_const", const="json", dest="format",
                    help="the same as --format json")
    pr.add_argument("-r", "--recursive", action="store_true",
                    help="also label the images in sub-folders of the folders given")
    pr.add_argument("--no-progress", action="store_true",
                    help="no progress bar (it is drawn on stderr only when stderr is a terminal)")
    _photo_size_options(pr, "every photo")
    pr.add_argument("--batch-size", type=_positive_int, default=8,
                    help="images per forward pass (default 8); results are printed after each batch")
    pr.add_argument("--debug", action="store_true", help=_DEBUG_HELP)

    su = sub.add_parser("summary", help="print the architecture as a table or Graphviz DOT",
                        description="Print the architecture, layer by layer, with output shapes and parameter "
                                    "counts, as Keras' model.summary() does, or as a Graphviz DOT graph. The layer "
                                    "names are the ones show --layer and capture take.")
    su.add_argument("--weights", default=None, metavar="FILE.npz",
                    help="a converted weight file: its own layers (head, input stage such as rescaling) and "
                         "input size, the names show --layer and capture take for it")
    su.add_argument("--variant", default=None, choices=["keras", "article"],
                    help="keras (default; what keras.applications.Xception builds) or article "
                         "(the seed article's model); not with --weights, whose file says it")
    su.add_argument("--input-size", type=int, default=None, metavar="N",
                    help="square input size for the output shapes (default 299, or the --weights file's; at least "
                         "71, as keras.applications.Xception requires)")
    su.add_argument("--format", default="table", choices=["table", "dot"],
                    help="table (default, like Keras' model.summary()) or dot (Graphviz)")
    su.add_argument("--no-top", action="store_true", help="without the classifier; not with --weights")
    su.add_argument("--debug", action="store_true", help=_DEBUG_HELP)

    co = sub.add_parser("convert", help="convert a Keras file to npxception .npz "
                                        "(the same as python -m npxception.weights_tools convert)",
                        add_help=False)
    co.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    cm = sub.add_parser("compare", help="compare another implementation layer by layer",
                        description="Run another implementation (a Keras file, an ONNX model, or an .npz dump of "
                                    "its activations) and ours on the same input, layer by layer, and report "
                                    "where they first differ beyond tolerance and why.")
    cm.add_argument("--against", required=True, metavar="PATH",
                    help=".keras/.h5/.weights.h5 file, .onnx file, or .npz activation dump")
    cm.add_argument("--config", default=None, metavar="PATH",
                    help="the .keras archive or config.json of a weights-only --against file")
    cm.add_argument("--weights", default=None,
                    help="npxception weights (default: converted from --against when it is a Keras file)")
    src = cm.add_mutually_exclusive_group()
    src.add_argument("--image", metavar="IMG", nargs="+",
                     help="image files or folders; the layer report uses the first, and with several "
                          "a summary gives top-1 agreement, top-5 overlap and max |dp| over all")
    src.add_argument("--random", action="store_true", help="a seeded random input (default)")
    cm.add_argument("--size", type=_size, default=None, metavar="HxW",
                    help="resize the --image photos to H x W (default: the model's input size; each photo's "
                         "own size for a model that takes any size, as predict feeds it); without --image, the "
                         "random input's size (default: the model's input size, 299x299 for a model that takes "
                         "any size); the report's input line says which")
    cm.add_argument("--layout", default=None, choices=["NHWC", "NCHW"],
                    help="layout of a dump or of an ONNX model's input (NCHW: a plain torch.onnx.export)")
    cm.add_argument("--rtol", type=_non_negative_float, default=None,
                    help="relative tolerance, of max|theirs| per layer (default 1e-4 float32, 1e-10 float64)")
    cm.add_argument("--atol", type=_non_negative_float, default=None, help="absolute tolerance (default 0)")
    names = cm.add_mutually_exclusive_group()
    names.add_argument("--names", metavar="MAP.json",
                       help="JSON object mapping their layer names to ours")
    names.add_argument("--port", metavar="NAME", type=_known_port,
                       help="a known port whose module names are mapped to ours (timm.legacy_xception)")
    cm.add_argument("--photo-memory", metavar="SIZE", default=None,
                    help="refuse, before decoding it, a photo whose estimated memory exceeds SIZE: compare keeps "
                         "every layer of both sides, ~8 KB per pixel counted (e.g. 8GB; default: "
                         "$NPXCEPTION_PHOTO_MEMORY, else 4GB)")
    cm.add_argument("--their-activation", default=None, metavar="NAME",
                    help="the activation their final output ends with, for a dump, which cannot say (a Keras "
                         "name: softmax, sigmoid, linear for logits...); the predictions line then reads it, "
                         "|dp| for probabilities. Without it none is guessed")
    cm.add_argument("--oracle", action="store_true", help="also measure both sides against float64")
    cm.add_argument("--json", action="store_true",
                    help="print the report as one JSON document (the verdict goes to stderr)")
    cm.add_argument("--plot", metavar="OUT.png",
                    help="also draw the error against depth (needs matplotlib: pip install 'npxception[plot]')")
    cm.add_argument("--debug", action="store_true", help=_DEBUG_HELP)

    sh = sub.add_parser("show", help="draw a layer's feature maps for an image",
                        description="Run a photo up to one layer and draw the photo beside that layer's most "
                                    "active feature maps, into one picture.")
    sh.add_argument("image", metavar="IMG", help="the photo to run")
    sh.add_argument("--layer", required=True,
                    help="a Keras layer name, e.g. block3_sepconv2_act, or an input-stage step such as rescaling "
                         "(`npxception summary --weights FILE` lists a file's)")
    sh.add_argument("-o", "--output", required=True, metavar="OUT.png",
                    help="the picture to write; its suffix names the format (.png, .jpg, .webp, ...)")
    sh.add_argument("--weights", default="imagenet", help="'imagenet' (default) or a converted .npz")
    sh.add_argument("--maps", type=_positive_int, default=None,
                    help="how many channels to draw, the most active first (default 16, or every channel "
                         "of a layer with fewer)")
    _photo_size_options(sh, "the photo")
    sh.add_argument("--debug", action="store_true", help=_DEBUG_HELP)

    ve = sub.add_parser("verify", help="run weight files' golden test cases on the fast and reference paths",
                        description="Check npxception weight files: run each file's golden test case (the "
                                    "output recorded when it was converted) on the fast and the reference paths "
                                    "of this machine, and report every layer's deviation. Exit code 1 if one "
                                    "fails.")
    ve.add_argument("files", nargs="+", metavar="FILE.npz", help="npxception weight files")
    ve.add_argument("--report", metavar="OUT.json",
                    help="write versions, CPU flags, threading layer and every deviation as JSON")
    ve.add_argument("--add", action="store_true",
                    help="give files without a golden test case one (our float64 oracle's), then check")
    ve.add_argument("--debug", action="store_true", help=_DEBUG_HELP)

    be = sub.add_parser("bench", help="time npxception against TensorFlow and ONNX Runtime",
                        description="Time npxception against TensorFlow and ONNX Runtime with the same weights, "
                                    "runs interleaved, and report medians and ratios from one run.")
    be.add_argument("--batch", type=_positive_int, nargs="+", default=[1, 8],
                    help="batch sizes to time (default: 1 8)")
    be.add_argument("--size", type=_bench_size, default=299,
                    help=f"square input size, {CONFIG.constructor_min_size} to {CONFIG.max_input_size} (default 299)")
    be.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"],
                    help="npxception's precisions to time (default: both)")
    be.add_argument("--against", nargs="*", default=["tf", "ort"], choices=["tf", "ort"],
                    help="the frameworks to time against (default: tf ort; none: just npxception)")
    be.add_argument("--repeats", type=_positive_int, default=15,
                    help="timed runs per configuration; medians are reported (default 15)")
    be.add_argument("--no-reference", action="store_true", help="skip the (slow) reference path")
    be.add_argument("--gap", type=_gap_ms, default=None, metavar="MS",
                    help="idle milliseconds before each timed call, so that the previous system's thread "
                         "pool has stopped spinning (default: bench.GAP_S; 0 to 1000)")
    be.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    be.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    for command in sub.choices.values():  # `npxception summary --version` too, as --debug is in both places
        command.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _photo_size_options(parser, what: str) -> None:
    """--size, --interpolation, --exif-transpose and --photo-memory, one rule for predict and show
    (npxception.prediction.photo_size, npxception.photo_memory)."""
    parser.add_argument("--size", type=_size, default=None, metavar="HxW",
                        help=f"resize {what} to H x W, as load_img(target_size=(H, W)) does (default: the "
                             "model's input size; each photo's own size for a model that takes any size)")
    parser.add_argument("--interpolation", default=None, choices=INTERPOLATIONS, type=str.lower,
                        help="resize filter: nearest (Keras' default), bilinear, bicubic, hamming, box, lanczos; "
                             "for a model that takes photos at their own size, only with --size")
    parser.add_argument("--exif-transpose", action="store_true",
                        help="rotate photos upright by their EXIF orientation first (Keras' load_img does not)")
    parser.add_argument("--photo-memory", metavar="SIZE", default=None,
                        help="refuse, before decoding it, a photo whose estimated memory exceeds SIZE "
                             "(e.g. 8GB; default: $NPXCEPTION_PHOTO_MEMORY, else 4GB)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def _gap_ms(text: str) -> float:
    """bench's idle gap, in milliseconds as typed, returned in seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds from 0 to 1000, found {text!r}") from None
    if not 0 <= value <= 1000:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"expected milliseconds from 0 to 1000, found {text!r}")
    return value / 1e3


def _bench_size(text: str) -> int:
    """bench's square input size: what keras.applications.Xception builds (at least 71) and a weight
    file may declare (at most 2048), checked before TensorFlow is imported (~20 s)."""
    lo, hi = CONFIG.constructor_min_size, CONFIG.max_input_size
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, found {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    """``HxW`` (``299x299``) -> ``(H, W)``, as Keras' ``target_size``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers (e.g. 299x299), found {text!r}")
    return int(parts[0]), int(parts[1])


def _known_port(text: str) -> str:
    """A known port's name (``timm.legacy_xception``): another is a bad command line (exit 2), named as
    ``--port``, not as compare's Python parameter."""
    from .compare.names import KNOWN_PORTS  # compare's module, loaded only when --port is given

    if text not in KNOWN_PORTS:
        raise argparse.ArgumentTypeError(f"not a known port: {text!r}; expected one of {', '.join(sorted(KNOWN_PORTS))} "
                                         "(for another port, map its names with --names MAP.json)")
    return text


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, found {text!r}")
    return value


@quiet_pipe
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        return _convert(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "convert":  # reached when options precede it: `npxception --debug convert ...`
        return _convert(args.rest + (["--debug"] if args.debug_global else []))
    if args.command is None:
        _parser().print_help(sys.stderr)
        return EXIT_USAGE
    return run(PROG, _COMMANDS[args.command], args, debug=args.debug_global or getattr(args, "debug", False))


def _convert(rest) -> int:
    from npxception.weights_tools.cli import main as weights_tools_main

    return weights_tools_main(["convert", *rest], prog=PROG)


# ---- predict ------------------------------------------------------------------

def _shown(paths) -> str:
    from .labels import printable_name

    return ", ".join(map(printable_name, paths[:5])) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def photo_memory_option(args):
    """--photo-memory in bytes, or None (the environment's or the default budget); a bad size is a usage error."""
    from .photo_memory import parse_bytes

    try:
        return None if args.photo_memory is None else parse_bytes(args.photo_memory, "--photo-memory")
    except ValueError as exc:
        raise CLIError(str(exc), code=EXIT_USAGE) from None


def _cmd_predict(args) -> int:
    from .images import image_suffixes
    from .labels import printable, printable_name
    from .prediction import check_size_option, expand, get_model, predict_files

    inputs = expand(args.images, recursive=args.recursive)
    if inputs.skipped:
        print(f"{PROG}: note: sub-folders skipped (use -r to include them): {_shown(inputs.skipped)}", file=sys.stderr)
    if inputs.other:
        print(f"{PROG}: note: {len(inputs.other)} file{'s' * (len(inputs.other) != 1)} in the folders skipped for "
              f"their suffix (not an image suffix; name a file to read it anyway): {_shown(inputs.other)}",
              file=sys.stderr)
    if inputs.repeated:
        print(f"{PROG}: note: linked folders skipped, walked already (a loop, or a second way to a folder): "
              f"{_shown(inputs.repeated)}", file=sys.stderr)
    if len(inputs.files) == len(inputs.empty):  # nothing but folders without images (each would be an error row)
        raise CLIError(f"no images to label in {' '.join(map(printable, args.images))} (image suffixes: "
                       f"{' '.join(sorted(image_suffixes()))})", code=EXIT_USAGE)
    photo_memory = photo_memory_option(args)
    model = get_model(args.weights)
    if model.classes is None:
        raise CLIError(f"{args.weights}: this weight file has no classifier (it was saved without the top)")
    # the options are checked here (--size, --interpolation against the model), before any output
    check_size_option(model, args.size, args.interpolation)
    batches = predict_files(inputs.files, model, top=args.top, interpolation=args.interpolation,
                            batch_size=args.batch_size, target_size=args.size, exif_transpose=args.exif_transpose,
                            photo_memory=photo_memory)
    out = WRITERS[args.format]()
    progress = Progress(len(inputs.files), enabled=not args.no_progress)
    done = failed = 0
    out.start()
    with interrupt_requested() as interrupted:
        try:
            for batch in batches:
                progress.clear()
                for result in batch:
                    if result.error is not None:
                        failed += 1
                        print(f"{PROG}: {printable_name(result.path)}: {printable(result.error)}", file=sys.stderr)
                    out.write(result)
                sys.stdout.flush()  # stream: a reader of the pipe sees each batch as it finishes
                done += len(batch)
                progress.advance(len(batch))
                if interrupted:  # Ctrl-C, SIGTERM: stop here, between results, with the output whole
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            progress.close()
            print(f"{PROG}: {interrupted.verb} after {done} of {len(inputs.files)} files", file=sys.stderr)
            return interrupted.code if interrupted else EXIT_INTERRUPTED
        finally:  # whatever stopped the run (Ctrl-C, an error): close e.g. the JSON array, so it stays valid
            progress.close()
            out.end()
            sys.stdout.flush()
    return 1 if failed else 0


# ---- summary ------------------------------------------------------------------

def _cmd_summary(args) -> int:
    from . import architecture as arch
    from . import head_schema
    from .model import XceptionModel, random_params

    if args.input_size is not None and args.input_size < CONFIG.constructor_min_size:  # as Keras' Xception builds
        raise CLIError(f"--input-size must be at least {CONFIG.constructor_min_size}, found {args.input_size}")
    if args.weights is not None:  # a converted file's own layers: the names show --layer takes (review 30, F4)
        given = [flag for flag, on in (("--variant", args.variant is not None), ("--no-top", args.no_top)) if on]
        if given:
            raise CLIError(f"{' and '.join(given)}: not with --weights, whose file says its variant and head",
                           code=EXIT_USAGE)
        from .prediction import get_model

        model = get_model(args.weights)
        size = args.input_size
        if args.format == "table":
            model.summary(input_shape=None if size is None else (size, size, model.channels))
            return 0
        layers, head, variant = model.layers, model.head, model.variant_name
        h, w = (size, size) if size is not None else model.input_shape[:2]
        default = CONFIG.default_input_shape  # a model of any size: drawn at Keras' default, as summary counts it
        shape = (h or default[0], w or default[1], model.channels)
    else:
        variant = args.variant or "keras"
        layers = arch.backbone(variant)
        head = head_schema.keras_head(not args.no_top)
        size = args.input_size or 299
        shape = (size, size, 3)
    if args.format == "dot":
        from .summary import to_dot

        print(to_dot(layers, head, shape, variant))
        return 0
    # zeros would do as well as random weights: summary only reads shapes
    model = XceptionModel(random_params(layers, head), variant=variant, head=head, input_shape=shape)
    model.summary()
    return 0


# ---- compare / show / bench (defined in their own modules) ---------------------

def _cmd_compare(args) -> int:
    from .compare import cli_compare

    args.photo_memory = photo_memory_option(args)  # in bytes, or None
    return cli_compare(args)


def _cmd_show(args) -> int:
    from .show import cli_show

    args.photo_memory = photo_memory_option(args)  # in bytes, or None
    return cli_show(args)


def _cmd_verify(args) -> int:
    from .verify import cli_verify

    return cli_verify(args)


def _cmd_bench(args) -> int:
    from .bench import cli_bench

    return cli_bench(args)


_COMMANDS = {
    "predict": _cmd_predict,
    "summary": _cmd_summary,
    "compare": _cmd_compare,
    "show": _cmd_show,
    "bench": _cmd_bench,
    "verify": _cmd_verify,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
