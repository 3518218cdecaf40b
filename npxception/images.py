"""Images in, model input out: Keras' own pipeline, with bad files turned into one clear error.

Provenance: ``keras.utils.load_img`` + ``keras.utils.img_to_array``
(keras/src/utils/image_utils.py) and ``keras.applications.xception.preprocess_input``
("tf" mode in keras/src/applications/imagenet_utils.py). The default pipeline is
Keras' bit for bit, because cross-checks must compare like with like:

* Pillow decodes the file; any mode other than RGB goes through ``convert("RGB")``:
  RGBA and LA drop alpha (no compositing), palette images are expanded, and
  16-bit images are clipped to 0..255, not scaled (Pillow#2574). That is
  ``color_mode="rgb"``, the default; a model with 1 or 4 input channels gets
  Keras' ``"grayscale"`` (Pillow's ``L``, except that 8-, 16- and 32-bit grayscale
  modes ``L``, ``I;16``, ``I`` are kept as they are, unscaled) or ``"rgba"``
  (``convert("RGBA")``: an opaque photo's alpha is 255) (:func:`color_mode`);
* no EXIF rotation (``exif_transpose=True`` opts in);
* a resize with Pillow's ``nearest`` filter, only when the size differs;
* float32 pixels in [0, 255], then ``x / 127.5 - 1``.

Better choices are available by name (``interpolation="bilinear"``, ``"bicubic"``…),
but they no longer match Keras' defaults.

Hostile or broken files: decoders are restricted to common photo formats,
Pillow's decompression-bomb limits are kept as Pillow sets them (a warning on
stderr above ``MAX_IMAGE_PIXELS``, a refusal above twice that), pixels are
decoded eagerly so truncation is found here, and every failure is one
``ImageError`` whose message is ``"<file>: <reason>"``. Notices (a photo near the
bomb limit, a 16-bit image that saturates, a float image in [0, 1] that turns black,
an EXIF orientation left unapplied, Pillow's own warnings while it reads the file) are
logged to the ``npxception`` logger at WARNING, naming the file, so they reach stderr,
as Pillow's own warning would. Bytes are a path, as in Keras; bytes holding an image's
content are refused with the ``io.BytesIO(data)`` hint.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import importlib
import inspect
import logging
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import CONFIG
from .untrusted import IrregularFileError, no_such_file, open_regular, short_repr

# Keras' names (keras/src/utils/image_utils.py PIL_INTERPOLATION_METHODS).
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

# The only decoders Pillow may use. Rare formats are left out on purpose: some
# Pillow versions had decompression bombs in exotic plugins (FITS gzip).
# MPO is here because many phone cameras write JPEGs that Pillow opens as MPO;
# PPM covers PBM/PGM/PPM/PNM.
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
_FORMAT_NAMES = "JPEG, PNG, GIF, BMP, TIFF, WebP or PPM/PGM/PBM"

# Modes whose convert("RGB") clips values to 0..255 rather than scaling them (Pillow#2574).
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
# The share of saturated pixels above which a wide image gets a warning. An 8-bit image stored in
# 16 bits (values 0..255) saturates none; a real 16-bit photo spreads over 0..65535, where 0..255
# is its darkest 0.4%, so all but its blackest pixels saturate (tests/test_images.py: 100% for a
# 16-bit gradient, 0% for 8-bit values in 16 bits). Half separates the two with a wide margin and
# stays quiet about a photo with a few clipped highlights.
SATURATION_WARNING = 0.5

log = logging.getLogger("npxception")

# keras.utils.load_img's color modes and the channels of the array img_to_array makes of each.
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
# Grayscale modes load_img(color_mode="grayscale") keeps as they are (8-, 16- and 32-bit integers):
# img_to_array then holds their values unscaled (0..65535 for a 16-bit X-ray).
_KEPT_GRAYSCALE = ("L", "I;16", "I")


class ImageError(ValueError):
    """An image that cannot be used. ``str(e)`` is one line: ``"<file>: <reason>"``."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------- arguments

def _interpolation(name) -> Image.Resampling:
    """Keras' interpolation name -> Pillow's filter; ValueError listing the valid names."""
    key = name.lower() if isinstance(name, str) else name
    if key not in INTERPOLATIONS:
        raise ValueError(f"interpolation: unknown method {name!r}; expected one of {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[key]


def _target_size(target_size) -> tuple[int, int] | None:
    """None, an int (square) or (height, width) like Keras -> (height, width)."""
    if target_size is None:
        return None
    if isinstance(target_size, (int, np.integer)) and not isinstance(target_size, bool):
        size = (int(target_size), int(target_size))
    else:
        try:
            size = tuple(target_size)
        except TypeError:
            size = ()
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
            raise ValueError(f"target_size: expected None, an int or (height, width), found {target_size!r}")
        size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"target_size: sizes must be positive, found {target_size!r}")
    return size


def _color_mode(name) -> str:
    if name not in COLOR_MODES:
        raise ValueError(f"color_mode: expected one of {', '.join(map(repr, COLOR_MODES))} (Keras' load_img), "
                         f"found {name!r}")
    return name


def color_mode(channels: int) -> str:
    """The ``load_img`` color mode whose array has ``channels`` channels: what a photo is for a model with
    that input (``model.channels``). Each count has exactly one: 1 "grayscale", 3 "rgb", 4 "rgba" (Keras'
    rule: ``img_to_array(load_img(path, color_mode=...))`` has 1, 3 or 4 channels); other counts are
    not photos (ValueError naming the count)."""
    modes = {c: m for m, c in COLOR_MODES.items()}
    if channels not in modes:
        raise ValueError(f"this model takes {channels}-channel images, and a photo is 1 (grayscale), 3 (rgb) or 4 "
                         f"(rgba) channels as Keras' load_img(color_mode=...) reads it; give model(x) arrays of "
                         f"{channels} channels instead")
    return modes[channels]


# A name longer than this is shown cut in the middle (an ellipsis): a message stays one readable line.
NAME_LIMIT = 200

# Signatures of the image formats a bytes object may hold when a caller passes a file's content where a
# path goes (``predict(open(f, "rb").read())``, ``requests.get(url).content``): none is a plausible path.
_CONTENT_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
                  (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"))


def _bounded(text: str, limit: int = NAME_LIMIT) -> str:
    """``text`` at most ``limit`` characters: a longer one keeps its start and end around an ellipsis."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[:limit - tail - 1]}\u2026{text[-tail:]}"


def _name(source) -> str:
    """How the error names the input: the path as given (a NUL byte shown as ``\\x00``, at most
    ``NAME_LIMIT`` characters), a file object's name, or a placeholder (``<bytes>`` for image content)."""
    if isinstance(source, bytes) and _bytes_content(source):
        return "<bytes>"
    if isinstance(source, (str, bytes, os.PathLike)):
        return _bounded(os.fsdecode(source).replace("\0", "\\x00"))
    if isinstance(source, Image.Image):
        return _bounded(getattr(source, "filename", "") or "<PIL image>")
    name = getattr(source, "name", None)
    return _bounded(os.fsdecode(name)) if isinstance(name, (str, bytes)) else f"<{type(source).__name__}>"


def _bytes_content(data: bytes) -> str | None:
    """Why ``data``, given where a path goes, is no path but image content: its format's signature, or a NUL
    byte (no path holds one); None for a plausible path."""
    for magic, fmt in _CONTENT_MAGIC:
        if data.startswith(magic):
            return f"start like a {fmt} image"
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "start like a WebP image"
    return "contain a NUL byte, which no file path can" if b"\0" in data else None


def _check_path(path) -> None:
    """Refuse, before any file is opened, a str or bytes path that cannot be one: bytes holding an image's content
    (Keras' load_img reads bytes as a path too), or a NUL byte (the system's open() cannot take it)."""
    if isinstance(path, bytes):
        why = _bytes_content(path)
        if why:
            raise ImageError(_name(path), f"bytes are read as a file path (as Keras' load_img reads them), and these "
                                          f"{len(path):,} bytes {why}; to read image content, pass io.BytesIO(data)")
    elif "\0" in os.fsdecode(path):
        raise ImageError(_name(path), "the path contains a NUL byte (\\x00), which no file path can hold; "
                                      "check how it was built")


# --------------------------------------------------------------------------- decoding

_PLUGINS = ("JpegImagePlugin", "MpoImagePlugin", "PngImagePlugin", "GifImagePlugin", "BmpImagePlugin",
            "TiffImagePlugin", "WebPImagePlugin", "PpmImagePlugin")


def _register_decoders() -> None:
    """Import the plugins of FORMATS only (importing one registers it).

    Pillow's first pass knows five formats, and a name in ``formats=`` that is
    not registered raises KeyError. ``Image.init()`` would register all ~40
    plugins, 6 MB of modules that a prediction never uses.
    """
    Image.preinit()
    for plugin in _PLUGINS:
        try:
            importlib.import_module(f"PIL.{plugin}")
        except ImportError:  # e.g. a Pillow built without WebP
            pass


@functools.lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """The file suffixes (lower case, with the dot) Pillow registers for FORMATS: what a folder
    contributes (``.jpg``, ``.jfif``, ``.jpe``, ``.png``, ``.apng``, ``.pbm``, ``.pnm``...)."""
    _register_decoders()  # each plugin registers its extensions in Image.EXTENSION as it is imported;
    # Image.registered_extensions() would import all ~40 plugins first (see _register_decoders)
    return frozenset(ext for ext, fmt in Image.EXTENSION.items() if fmt in FORMATS)


def _open(source, name: str, check_size=None) -> Image.Image:
    """Decode a path or binary file into a fully loaded PIL image, or raise ImageError.

    ``check_size(height, width)``, when given, runs once the header is read and before any pixel is
    decoded; it raises (an ImageError) to refuse the photo, e.g. over a memory budget.
    """
    limit = Image.MAX_IMAGE_PIXELS
    _register_decoders()
    formats = [f for f in FORMATS if f in Image.OPEN]  # WEBP may be missing from a Pillow build
    with contextlib.ExitStack() as stack:
        return _decode(source, name, formats, limit, stack, check_size)


def _decode(source, name, formats, limit, stack, check_size) -> Image.Image:
    try:
        if isinstance(source, (str, bytes, os.PathLike)):
            # Regular files only: a FIFO would block open() forever, /dev/zero never ends.
            source = stack.enter_context(open_regular(source))
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that, and refuses above (at open);
            # its warning becomes one named line below, not a Python warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as img:
                pixels = img.width * img.height
                # Pillow's own rule, checked again: the warnings filter is process-wide state.
                if limit and pixels > 2 * limit:
                    raise Image.DecompressionBombError(f"Image size ({pixels} pixels) exceeds limit of "
                                                       f"{2 * limit} pixels")
                if check_size is not None:  # first: a photo refused here is not "read" (the warning below)
                    _check_header(check_size, img)
                if limit and pixels > limit:
                    log.warning(f"warning: {name}: {img.width}x{img.height} is {pixels:,} pixels, more than "
                                f"Pillow's MAX_IMAGE_PIXELS ({limit:,}) but not twice that, where Pillow "
                                "refuses it as a possible decompression bomb; reading it")
                img.load()  # decode now so that truncation is found here, not later
                return img
    except ImageError:
        raise
    except FileNotFoundError:
        if name == "-":
            raise ImageError(name, "reading an image from standard input is not supported; "
                                   "save it to a file and give its path") from None
        raise ImageError(name, no_such_file(source)) from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image file") from None
    except IrregularFileError as exc:
        raise ImageError(name, f"is {exc.kind}, not an image file") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except UnidentifiedImageError:
        if _is_empty(source):
            raise ImageError(name, "empty file (0 bytes)") from None
        # Pillow may well read it (ICO, TGA...): the decoders are restricted on purpose (FORMATS).
        refused = _unread_format(source, name)
        if refused:
            raise ImageError(name, f"{refused}; convert it to PNG first (npxception reads {_FORMAT_NAMES})") from None
        raise ImageError(name, f"not a {_FORMAT_NAMES} file (npxception reads only these)") from None
    except Image.DecompressionBombError as exc:
        detail = " ".join(str(exc).split()).split(",")[0]
        raise ImageError(name, f"too many pixels ({detail}): more than twice Pillow's MAX_IMAGE_PIXELS "
                               f"({limit:,}), refused as a possible decompression bomb, as Pillow does; "
                               "from Python, raise PIL.Image.MAX_IMAGE_PIXELS to read it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:  # the system's, not Pillow's
            raise ImageError(name, "is a loop of symbolic links (too many levels), not an image file; "
                                   "expected a path that leads to a file") from None
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:  # open()'s, e.g. ENAMETOOLONG:
            raise ImageError(name, f"cannot open: {exc.strerror}") from None  # not the data's; the path is the name
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated"),
        # SyntaxError ("broken PNG file"), ValueError ("Decompressed data too large") or EOFError.
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(name, f"truncated or corrupt image data ({detail})") from None


# Formats Keras' load_img reads (Pillow opens them) that npxception refuses, and why (review 28, F9).
_REFUSED = {
    "ICO": "an ICO icon: ICO is not read because its directory declares each image's size (at most 256x256) while "
           "the PNG or BMP inside may be larger, found only as it is decoded, after the memory check "
           "(a photo's size must be known before its data is)",
    "TGA": "a TGA (Targa) file, by its suffix: TGA is not read because it has no signature, so a TGA reader takes "
           "any file whose first bytes happen to fit for a picture of noise instead of refusing it",
}


def _unread_format(f, name: str) -> str:
    """Why a format Keras' load_img reads and npxception does not is refused (TGA, which has no signature, by its
    suffix; ICO by its signature); "" for any other file."""
    if os.path.splitext(name)[1].lower() in (".tga", ".icb", ".vda", ".vst"):  # Pillow's TGA suffixes
        return _REFUSED["TGA"]
    try:
        f.seek(0)
        head = f.read(4)
    except (AttributeError, OSError, ValueError):
        head = b""
    return _REFUSED["ICO"] if head == b"\x00\x00\x01\x00" else ""


def _check_header(check_size, img) -> None:
    """``check_size(height, width)``, given ``mode=`` (Pillow's mode, from the header) too when it takes one:
    predict's memory estimate counts the decoded image's bytes by its mode (npxception.photo_memory)."""
    try:
        takes_mode = "mode" in inspect.signature(check_size).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        takes_mode = False
    check_size(img.height, img.width, **({"mode": img.mode} if takes_mode else {}))


def _is_empty(f) -> bool:
    """Whether a seekable binary file holds no bytes (checked only once Pillow gave up on it)."""
    try:
        return f.seek(0, io.SEEK_END) == 0
    except (AttributeError, OSError, ValueError):
        return False


def _convert(img: Image.Image, mode: str, size, resample, exif_transpose: bool, name: str = "",
             keep_aspect_ratio: bool = False) -> Image.Image:
    """Keras' load_img for ``color_mode`` ``mode``: convert("RGB") unless RGB, convert("RGBA") unless RGBA, or
    convert("L") unless a kept grayscale mode (L, I;16, I); then resize only if needed, from the centred
    crop of the target's aspect ratio with ``keep_aspect_ratio`` (:func:`aspect_crop_box`)."""
    if exif_transpose:
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - malformed EXIF tags crash exif_transpose; keep the pixels
            pass
    else:
        _note_orientation(img, name)
    target = {"rgb": "RGB", "rgba": "RGBA", "grayscale": "L"}[mode]
    keep = _KEPT_GRAYSCALE if mode == "grayscale" else (target,)
    if img.mode not in keep:
        if img.mode in _WIDE_MODES:  # converted to 8 bits: clipped
            _warn_saturation(img, name, target)
        img = img.convert(target)
    if size is not None:
        width_height = (size[1], size[0])  # Keras' target_size is (height, width); PIL's is (w, h)
        if img.size != width_height:
            box = aspect_crop_box(img.size, width_height) if keep_aspect_ratio else None
            img = img.resize(width_height, resample, box=box)
    return img


def aspect_crop_box(size, target) -> tuple[int, int, int, int]:
    """Keras' load_img(keep_aspect_ratio=True) crop: the largest centred box of the target's aspect ratio,
    ``(left, top, right, bottom)`` in PIL's order, with Keras' integer arithmetic (floor divisions, an odd
    pixel left over at the right/bottom; keras/src/utils/image_utils.py load_img, tf_keras alike).
    ``size`` and ``target``: (width, height)."""
    width, height = size
    target_width, target_height = target
    crop_height = min(height, (width * target_height) // target_width)
    crop_width = min(width, (height * target_width) // target_height)
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def saturated_share(img: Image.Image) -> float:
    """The share of a 16-bit / 32-bit (I, F) image's pixels outside 0..255, which convert("RGB") clips."""
    try:
        lo, hi = img.getextrema()
    except ValueError:  # Pillow has none for I;16B, I;16L, I;16N ("image has wrong mode"): the pixels tell
        lo, hi = -1, 256
    if 0 <= lo and hi <= 255:  # no copy for the common case of 8-bit values
        return 0.0
    a = np.asarray(img)
    inside = (a >= 0) & (a <= 255)  # NaN is outside too: Pillow makes it 0 or 255
    return 1.0 - np.count_nonzero(inside) / a.size


# EXIF orientation (tag 0x0112) -> how the stored pixels lie against the photo as taken (EXIF 2.32, 4.6.5).
ORIENTATIONS = {2: "mirrored", 3: "upside down", 4: "upside down and mirrored", 5: "on its side and mirrored",
                6: "on its side (a 90-degree clockwise turn makes it upright)", 7: "on its side and mirrored",
                8: "on its side (a 90-degree counter-clockwise turn makes it upright)"}


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag of ``img`` (1 to 8), or None when absent or unreadable (malformed EXIF data is
    ignored, as exif_transpose's crash is). Reads only the EXIF block Pillow already holds (bounded by the file)."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - malformed EXIF: Pillow raises many kinds; the pixels are unaffected
        return None
    return value if isinstance(value, int) else None


def _note_orientation(img, name) -> None:
    """A note, naming the file, when its EXIF orientation says it is stored turned and it is fed as stored."""
    orientation = exif_orientation(img)
    if orientation in ORIENTATIONS:
        log.warning(f"note: {name or '<image>'}: EXIF orientation {orientation}: the photo is stored "
                    f"{ORIENTATIONS[orientation]} and is fed as stored, as Keras' load_img feeds it; "
                    "--exif-transpose (exif_transpose=True in Python) turns it upright first")


def _warn_saturation(img, name, target="RGB") -> None:
    if img.mode == "F":
        lo, hi = img.getextrema()
        if 0 <= lo and 0 < hi <= 1:
            # A float image scaled to [0, 1] (a scientific TIFF, skimage's img_as_float saved as is): Keras feeds it
            # too, black; to_array refuses the same values in an array.
            log.warning(f"warning: {name or '<image>'}: this 32-bit float (F) image's values all lie in [0, 1] "
                        f"(max {hi:g}): converted to 8-bit {target} it is black or nearly so (as Keras' load_img "
                        "feeds it: Pillow clips, it does not scale); multiply it by 255 first for a meaningful "
                        "prediction")
            return
    share = saturated_share(img)
    if share > SATURATION_WARNING:
        log.warning(f"warning: {name or '<image>'}: {share:.0%} of this {img.mode} image's pixels are outside "
                    f"0..255 and saturate when converted to 8-bit {target} (as Keras' load_img does: Pillow clips, "
                    "it does not scale); scale it to 0..255 first for a meaningful prediction")


def load_img(path, target_size=None, interpolation="nearest", *, exif_transpose=False,
             check_size=None, color_mode="rgb", keep_aspect_ratio=False) -> Image.Image:
    """Read an image file into a loaded PIL image, as ``keras.utils.load_img``: RGB, or another ``color_mode``.

    Arguments, errors and the pipeline as :func:`load_image`, which is
    ``np.asarray(load_img(...), dtype=np.float32)``. ``check_size(height, width)`` (for files) runs
    before the pixels are decoded and may raise ImageError to refuse the photo; it is given ``mode=``, the
    decoded image's Pillow mode, when it takes that keyword. The image holds the photo
    at one byte per pixel and channel (Pillow stores RGB in 4 bytes per pixel);
    :func:`read_pixels` converts parts of it.
    """
    size = _target_size(target_size)
    resample = _interpolation(interpolation)
    mode = _color_mode(color_mode)
    if not isinstance(keep_aspect_ratio, (bool, np.bool_)):
        raise TypeError(f"keep_aspect_ratio: expected True or False, found {short_repr(keep_aspect_ratio)}")
    name = _name(path)
    with _pillow_warnings(name):
        return _load_img(path, name, size, resample, mode, exif_transpose, check_size, bool(keep_aspect_ratio))


@contextlib.contextmanager
def _pillow_warnings(name):
    """Pillow's warnings while an image is decoded and converted (e.g. "Palette images with Transparency expressed
    in bytes should be converted to RGBA images"), each re-issued once as a notice naming the file: Python shows
    a raw UserWarning once per process, without saying which file it concerns. Deprecation warnings go on as
    they came (they concern code, not the file)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield  # a file that fails says so in its error alone
        shown, deferred = set(), []
        for w in caught:
            if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
                deferred.append(w)
                continue
            text = " ".join(str(w.message).split())
            if text not in shown:
                shown.add(text)
                log.warning(f"warning: {name or '<image>'}: {text} (Pillow's {w.category.__name__} "
                            "while reading it)")
    for w in deferred:  # outside the recording: they reach the caller's filters
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _load_img(path, name, size, resample, mode, exif_transpose, check_size, keep_aspect_ratio) -> Image.Image:
    if isinstance(path, Image.Image):
        img = path
    elif isinstance(path, (str, bytes, os.PathLike)) or isinstance(path, io.IOBase) or hasattr(path, "read"):
        if isinstance(path, (str, bytes, os.PathLike)):
            _check_path(path)
        img = _open(path, name, check_size)
    else:
        raise TypeError(f"path: expected a file path, a binary file object or a PIL image, "
                        f"found {type(path).__name__}")
    try:
        img.load()  # a lazily opened PIL image passed in fails here, named, rather than where it is read
        return _convert(img, mode, size, resample, exif_transpose, name, keep_aspect_ratio)
    except (OSError, ValueError) as exc:
        raise ImageError(name, f"cannot convert to {mode} ({' '.join(str(exc).split())})") from None


def load_image(path, target_size=None, interpolation="nearest", *, exif_transpose=False,
               check_size=None, color_mode="rgb", keep_aspect_ratio=False) -> np.ndarray:
    """Read an image file into float32 pixels, as ``keras.utils.load_img`` + ``img_to_array``.

    path: a str / os.PathLike, an open binary file object, or a PIL image.
    target_size: None (keep the size), an int (square) or (height, width), as in Keras.
    interpolation: nearest (Keras' default), bilinear, bicubic, hamming, box or lanczos;
      used only when the size differs.
    exif_transpose: rotate by the EXIF orientation first (Keras does not). Bad EXIF
      data is ignored.
    check_size: None, or ``check_size(height, width)`` run on a file's header before its pixels are
      decoded; it raises ImageError to refuse the photo (predict's memory budget).
    color_mode: "rgb" (Keras' default), "grayscale" or "rgba", as Keras' load_img.
    keep_aspect_ratio: as Keras' load_img: resize the largest centred crop of the target's aspect ratio
      (the rest of the image is cut off) instead of stretching the whole image; only with target_size.

    Returns (H, W, C) float32, C = 3, 1 or 4 by ``color_mode``, in [0, 255] (a kept 16- or 32-bit
    grayscale image: its own values), bit for bit Keras' array.
    Raises ImageError (a ValueError) naming the file for a missing, unreadable,
    truncated or oversized image.
    """
    img = load_img(path, target_size, interpolation, exif_transpose=exif_transpose, check_size=check_size,
                   color_mode=color_mode, keep_aspect_ratio=keep_aspect_ratio)
    return img_to_array(img)


def img_to_array(img: Image.Image) -> np.ndarray:
    """Keras' img_to_array (channels last, float32): ``np.asarray(img, dtype=floatx)``, a 2-D grayscale
    image given its channel axis, (H, W) -> (H, W, 1)."""
    x = np.asarray(img, dtype=np.float32)
    return x[:, :, None] if x.ndim == 2 else x


# A band of rows read at once: Pillow's crop and its array are both this size (docs/performance.md,
# "Photos at their own size"); 4 MB is small against a large photo, and ~1,400 rows of a
# 1,000-pixel-wide one, so the per-band cost of crop() is negligible.
BAND_BYTES = 4 * 1024 * 1024


def read_pixels(img: Image.Image, rows, cols) -> np.ndarray:
    """``img_to_array(img)[rows][:, cols]`` in the image's own dtype, without building ``np.asarray(img)``.

    img: a PIL image as load_img gives it (RGB, RGBA, L, I;16 or I).
    rows, cols: sorted distinct int arrays. Returns ``(len(rows), len(cols), C)``, uint8 for 8-bit modes.
    Consecutive rows are cropped as bands of the columns' span, each at most
    ``BAND_BYTES`` (or one row), so the memory is that of a band, not of the
    image, even when every row is read (a photo at most twice as tall as the
    model's input); the values are the image's bytes.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    per_band = max(1, BAND_BYTES // (4 * (c1 - c0)))  # rows per band, at most 4 bytes per pixel
    out = None
    run_start = 0
    for run_stop in [*(np.flatnonzero(np.diff(rows) != 1) + 1), len(rows)]:  # runs of consecutive rows
        for start in range(run_start, run_stop, per_band):
            stop = min(run_stop, start + per_band)
            band = np.asarray(img.crop((c0, int(rows[start]), c1, int(rows[stop - 1]) + 1)))  # (rows, c1 - c0[, C])
            band = band[:, :, None] if band.ndim == 2 else band
            if out is None:
                out = np.empty((len(rows), len(cols), band.shape[2]), band.dtype)
            out[start:stop] = band[:, cols - c0]
        run_start = run_stop
    return out


# --------------------------------------------------------------------------- in-memory images

def to_array(image, color_mode="rgb") -> np.ndarray:
    """An in-memory image -> a new float32 (H, W, C) array of pixels in [0, 255], C by ``color_mode``.

    Accepts a PIL image (any mode, converted as ``load_img(color_mode=...)`` converts it) or a numeric
    array. For "rgb" (the default): (H, W) or (H, W, 1) grayscale (copied to 3 channels, as convert("RGB")
    does), (H, W, 3) RGB or (H, W, 4) RGBA (alpha dropped). For "grayscale": (H, W) or (H, W, 1), whose
    values may exceed 255 (load_img keeps 16- and 32-bit grayscale images unscaled); for "rgba": (H, W, 4).
    An array of other channels for those two modes is refused rather than converted by a rule the
    caller did not choose. Values must be finite and at least 0 (at most 255 but for grayscale); floats are
    not rescaled, and a float image whose pixels all lie in (0, 1] is refused as one scaled to [0, 1].
    The caller's array is never aliased.
    """
    mode = _color_mode(color_mode)
    if isinstance(image, Image.Image):
        return load_image(image, color_mode=mode)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a PIL image or a numpy array, found {type(image).__name__}")
    if image.dtype == bool or image.dtype.kind not in "uif":
        raise TypeError(f"image: expected an integer or float array of pixels, found dtype {image.dtype}")
    c = image.shape[2] if image.ndim == 3 else 1 if image.ndim == 2 else None
    if mode == "rgb" and c in (1, 3, 4):
        pixels = (image[:, :, :3] if c != 1 else
                  np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2))
    elif mode == "grayscale" and c == 1:
        pixels = image.reshape(*image.shape[:2], 1)
    elif mode == "rgba" and c == 4 and image.ndim == 3:
        pixels = image
    else:
        shapes = {"rgb": "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)", "grayscale": "(H, W) or (H, W, 1)",
                  "rgba": "(H, W, 4)"}[mode]
        raise ValueError(f"image: expected shape {shapes} for color_mode={mode!r}, found {image.shape}")
    if 0 in pixels.shape[:2]:
        raise ValueError(f"image: empty image of shape {image.shape}")
    if image.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ValueError("image: contains NaN or Inf")
    lo, hi = pixels.min(), pixels.max()
    if lo < 0 or (hi > 255 and mode != "grayscale"):
        raise ValueError(f"image: pixels must be in [0, 255] (raw, not preprocessed), found {lo}..{hi}")
    if image.dtype.kind == "f" and 0 < hi <= 1:
        # A float image scaled to [0, 1] (matplotlib's, skimage's img_as_float) would be
        # read as a nearly black photo and labelled with confidence: nonsense, not an error.
        raise ValueError(f"image: float pixels all in [0, 1] (max {hi}); npxception expects [0, 255], "
                         "as Keras' load_img gives: multiply by 255 first (image * 255)")
    return np.array(pixels, dtype=np.float32, order="C")  # always a copy


# Pillow's 8-bit mode for an array of each channel count: what Keras resizes for each color mode.
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def resize_array(pixels, target_size, interpolation="nearest", color_mode="rgb") -> np.ndarray:
    """Resize float32 (H, W, C) pixels in [0, 255] to target_size with a Pillow filter.

    Whole-number pixels in 0..255 (the usual case, e.g. from a uint8 array) go through a
    uint8 image of the mode load_img gives (RGB, L or RGBA), which is what Keras resizes; other
    values are resized per channel as 32-bit float images so nothing is rounded.
    """
    size = _target_size(target_size)
    resample = _interpolation(interpolation)
    pixels = to_array(pixels, color_mode)
    width_height = (size[1], size[0])
    if pixels.shape[:2] == size:
        return pixels
    c = pixels.shape[2]
    if np.array_equal(pixels, np.round(pixels)) and pixels.max() <= 255:
        img = Image.fromarray(pixels.astype(np.uint8).squeeze(axis=2) if c == 1 else pixels.astype(np.uint8),
                              mode=_PIL_MODES[c])
        return img_to_array(img.resize(width_height, resample))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[:, :, i]), mode="F")
                           .resize(width_height, resample)) for i in range(c)]
    return np.stack(channels, axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- preprocessing

def preprocess_input(x, data_format=None) -> np.ndarray:
    """Keras' "tf" mode for Xception: ``x / 127.5 - 1`` maps [0, 255] to [-1, 1].

    (..., C) pixels, channels last -> same shape; element-wise, so any channel count (3 RGB, 1 grayscale,
    4 RGBA), as Keras' own. ``data_format``: Keras' argument, None, "channels_last" or "channels_first"
    (anything else is refused, as Keras refuses it); the "tf" mode is element-wise, so it changes nothing
    (an NCHW array is scaled as it lies, as in Keras). Returns a new array and never writes into ``x``
    (Keras' numpy path divides float arrays in place, keras#11591). float64 input
    stays float64; ints, uint8 and float32 give float32, as Keras' floatx does.
    float16 gives float32 too, unlike Keras 3 and tf_keras, which keep float16 and
    round ``x / 127.5 - 1`` to it (up to 4.9e-4 off on [0, 255]; ours 6e-8): the
    model computes in float32, so the pixels are scaled in the dtype it reads. A bool array is
    0 and 1, as Keras 3 casts it to float32 (True gives -0.99215686 there too).
    """
    if data_format is not None and (not isinstance(data_format, str)
                                    or data_format not in ("channels_first", "channels_last")):
        raise ValueError(f"preprocess_input: data_format: expected None, 'channels_first' or 'channels_last' "
                         f"(Keras' values), found {short_repr(data_format)}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "uifb":
        raise TypeError(f"preprocess_input: expected a numeric array of pixels, found dtype {arr.dtype}")
    if arr.ndim < 1:
        raise ValueError("preprocess_input: expected pixels of shape (..., C) (channels last), found a scalar")
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    out = arr.astype(dtype, copy=True)
    out /= dtype(CONFIG.preprocess_scale)
    out -= dtype(1.0)
    return out
