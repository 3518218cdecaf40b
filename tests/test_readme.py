"""Every code block of README.md runs as written.

The conventions, for whoever adds a block to the README (keep them, or change
them here and say so in the README's contributors' notes):

1. Every fenced block is ```sh or ```python. Any other fence fails this test,
   so that no block is silently left out; show expected output as a ``# ->``
   comment inside the block.
2. A ```python block runs as one script in a fresh interpreter
   (``sys.executable``), in README order; blocks share no state.
3. A ```sh block runs line by line, each line with ``bash -o pipefail -c``;
   each line must exit 0 and print no traceback. ``# comments`` are fine, and a
   trailing backslash continues a line.
4. Install commands are not run: the suite runs inside the installed
   environment. In ``pip install SPEC && REST`` only REST runs; SPEC must be
   ``-e .`` or ``-e '.[EXTRA]'`` with EXTRA defined in pyproject.toml.
5. The test command, ``python -m pytest``, is not run again (it is running);
   it must be exactly the command .ci/run runs, so CI runs what the README says.
6. Everything runs in a scratch folder (the working directory) holding the
   repository's ``examples/`` and the files named in ``FIXTURES`` below. A README
   line that reads a new input file needs an entry there. Outputs (``-o x``,
   ``> x``) land in the scratch folder, and lines run in README order, so a
   line may read what an earlier one wrote (``verify my_model.npz`` after
   ``convert ... -o my_model.npz``).
7. The environment: ``NPXCEPTION_OFFLINE=1``, and ``NPXCEPTION_HOME`` a scratch
   cache in which ``weights="imagenet"`` finds its converted weights where it
   looks for them (``weights/xception_weights_tf_dim_ordering_tf_kernels.npz``).
   They are a random-weight Keras Xception with the ImageNet top (299x299, the
   official layout), written as a legacy weights-only HDF5 file like the official
   one and converted by weights_tools: the real 88 MB file is never downloaded.
   Placed there by hand, they carry no record of the official file's MD5, so
   ``model.source`` says ``unverified (...)`` and a warning goes to stderr.
   ``npxception`` on PATH is the console script, or ``python -m npxception``
   without an activated venv (tests/console_script.py).
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

import npxception
from console_script import path_with_command
from npxception.labels import imagenet_labels
from npxception.pretrained import FILES, _paths
from predict_reference import keras_reference, top_indices

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TEST_COMMAND = "python -m pytest"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
INSTALL = re.compile(r"^(?:python -m )?pip install (?P<spec>.+?)(?:\s*&&\s*(?P<rest>.+))?$")


def build_finetuned(ref, path):
    """A converted classifier of one's own: 5 classes at 71x71 (seeded random weights)."""
    npxception.Xception(classes=5, input_shape=(71, 71, 3), seed=4).save(path)


def build_keras_model(ref, path):
    """A Keras 3 ``.keras`` Xception backbone (random weights, BN statistics too): what convert and
    compare read. 71x71 without the top keeps compare's Keras run short."""
    import keras

    from keras_helpers import randomize

    randomize(keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3),
                                          pooling="avg"), seed=6).save(path)


# file name the README uses -> how to make it (ref: tests/predict_reference.py's Keras model)
FIXTURES = {
    "my_finetuned.npz": build_finetuned,
    "my_model.keras": build_keras_model,
}


def blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README, in order."""
    return [(lang.strip(), code) for lang, code in FENCE.findall(README.read_text(encoding="utf-8"))]


def shell_lines(code: str) -> list[str]:
    """The commands of a sh block: comments dropped, backslash continuations joined."""
    lines, current = [], ""
    for raw in code.splitlines():
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip() and not current.lstrip().startswith("#"):
            lines.append(current.strip())
        current = ""
    return lines


def test_readme_opens_with_the_two_commands():
    """A fresh machine needs two commands: run the main job, run the tests; CI runs the second."""
    first, second = blocks()[:2]
    assert first[0] == second[0] == "sh"
    assert INSTALL.match(shell_lines(first[1])[0])["rest"].startswith("npxception predict ")
    assert INSTALL.match(shell_lines(second[1])[0])["rest"] == TEST_COMMAND
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert ci[-1] == TEST_COMMAND  # .ci/run ends with exactly the README's test command


def test_every_block_has_a_runnable_language():
    langs = [lang for lang, _ in blocks()]
    assert langs and set(langs) <= {"sh", "python"}, langs


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """(cwd, env) for README commands: examples/, the fixtures, and a cache holding 'imagenet'."""
    ref = keras_reference(tmp_path_factory)
    root = tmp_path_factory.mktemp("readme")
    cwd = root / "work"
    cwd.mkdir()
    (cwd / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    for name, build in FIXTURES.items():
        build(ref, cwd / name)

    home = root / "home"
    env = dict(os.environ, NPXCEPTION_OFFLINE="1", NPXCEPTION_HOME=str(home))
    env.pop("NPXCEPTION_WEIGHTS_URL", None)
    env["PATH"] = path_with_command(root / "bin", env)
    # The official file's layout: a legacy weights-only HDF5 (layer_names at the root),
    # written from the Keras model, then converted to where weights="imagenet" looks.
    import h5py
    from npxception import weights_tools
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    h5 = root / FILES[True].fname
    with h5py.File(h5, "w") as f:
        save_weights_to_hdf5_group(f, ref.keras_model)
    target = home / "weights" / _paths(True)[1].name  # pretrained.py's cache layout
    target.parent.mkdir(parents=True)
    # the stand-in has the official layout, not the official bytes (their MD5 decides the head): give it
    weights_tools.convert(h5, target, variant="keras", pooling="avg", input_shape=(299, 299),
                          classifier_activation="softmax")
    h5.unlink()  # 88 MB: not kept longer than needed
    return ref, cwd, env


def run_shell(line, cwd, env):
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert "Traceback" not in proc.stderr, (line, proc.stderr)
    assert proc.returncode == 0, (line, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def sh_commands():
    out = []
    for lang, code in blocks():
        if lang == "sh":
            out += shell_lines(code)
    return out


def checked_install(line: str) -> str | None:
    """The part of an install line that runs (None: nothing); the spec checked against pyproject."""
    m = INSTALL.match(line)
    if not m:
        return line
    spec = shlex.split(m["spec"])
    assert spec[0] == "-e" and len(spec) == 2, line
    extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", spec[1])
    assert extras, f"{line}: expected `pip install -e .` or -e '.[extra]'"
    defined = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in (extras[1] or "").split(",") if extras[1] else []:
        assert extra in defined, f"{line}: pyproject.toml defines no extra {extra!r}"
    return m["rest"]


@pytest.mark.parametrize("line", sh_commands())
def test_shell_line(sandbox, line):
    ref, cwd, env = sandbox
    command = checked_install(line)
    if command is None or command == TEST_COMMAND:
        return  # nothing else to run: see conventions 4 and 5
    proc = run_shell(command, cwd, env)
    if command == "npxception predict examples/chelsea.png":
        # The documented first run: the cat photo labelled with the cached 'imagenet'
        # weights, Keras' own top 5 (ranks in order; ref: Keras' pipeline on that photo).
        labels = imagenet_labels()
        lines = proc.stdout.strip().splitlines()
        assert lines[0] == "examples/chelsea.png"
        for rank, index in enumerate(top_indices(ref.probs[0][None], 5)[0], 1):
            wnid, name = labels[index]
            assert re.fullmatch(rf"\s+{rank}\.\s+[0-9.]+\s+{wnid} {re.escape(name)}\s+\(class {index}\)",
                                lines[rank]), lines[rank]


@pytest.mark.parametrize("index", [k for k, (lang, _) in enumerate(blocks()) if lang == "python"])
def test_python_block(sandbox, index):
    _, cwd, env = sandbox
    code = blocks()[index][1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (code, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    if "model.summary()" in code:  # the printed table, once (summary() returns None, as in Keras)
        assert proc.stdout.count("Total params: 22,910,480") == 1, proc.stdout
    if "print(model.source)" in code:
        # the stand-in was placed in the cache by hand, not converted here from the official file (its MD5
        # is not recorded): it is named so, with a warning, never "imagenet (PATH)" (review 24, F7)
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith("unverified (") and "placed by hand" in last, proc.stdout
        assert "UnverifiedWeightsWarning" in proc.stderr, proc.stderr


def test_referenced_documents_exist():
    """Every Markdown file named in the code, the tests and the docs is in the repository
    (as a path from the root, or next to the file that names it)."""
    missing = []
    for folder, suffix in [(".", "*.md"), ("docs", "*.md"), ("tests", "*.py"), ("npxception", "**/*.py"),
                           ("benchmarks", "*.py")]:
        for path in (REPO / folder).glob(suffix):
            for name in set(re.findall(r"[\w./-]+\.md\b", path.read_text(encoding="utf-8"))):
                if not ((REPO / name).is_file() or (path.parent / name).is_file()):
                    missing.append(f"{path.relative_to(REPO)}: {name}")
    assert missing == []


def test_every_pytest_raises_names_its_message():
    """A bare ``pytest.raises`` of an exception type passes on any such error, even the wrong one:
    every one says with ``match=`` which message it expects."""
    loose = []
    for path in sorted((REPO / "tests").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"pytest\.raises\(", text):
            depth, end = 1, m.end()
            while depth and end < len(text):  # the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            if "match=" not in text[m.end():end]:
                loose.append(f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}")
    assert loose == []
