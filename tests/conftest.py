"""Shared test set-up: the hypothesis profiles, TensorFlow's quiet import, and how xdist splits the suite."""

from __future__ import annotations

import os
import shutil

# TensorFlow's C++ logging is noise in test output; must be set before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# CI: the same examples every run (derandomize), a fixed budget, and no deadline
# because the first call of each Numba kernel includes its JIT compile.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Local development: more examples, still no deadline (JIT warm-up).
settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# pytest-xdist (pyproject's addopts: 2 workers, --dist loadfile) gives each worker whole files, so a
# module-scoped Keras corpus is built once, in the worker that runs its file. Files that share a
# process-wide build (predict_reference's Keras model, cached for the process) go to one worker together.
SHARED_BUILDS = {
    "predict_reference": ("test_cli.py", "test_framework_free.py", "test_predict.py", "test_readme.py"),
}
# Started first, longest first (xdist orders by test count): a long file started last would leave the
# other worker idle at the end. By the clean-clone run of 2026-11-30 13:50 UTC (setup + call + teardown of
# its tests, load 10-20): test_training_checkpoints 707 s, test_real_world_files 576, test_mixed_precision 339.
LONGEST = ("test_training_checkpoints.py", "test_real_world_files.py", "test_mixed_precision.py",
           "test_convert_files.py", "predict_reference", "test_channels_first.py", "test_model_keras.py",
           "test_compare.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None  # another --dist given on the command line: xdist's own scheduler
    from xdist.scheduler import LoadFileScheduling

    group_of = {file: group for group, files in SHARED_BUILDS.items() for file in files}

    def unit(scope):
        return scope.rsplit("/", 1)[-1]

    class FilesAndSharedBuilds(LoadFileScheduling):
        def _split_scope(self, nodeid):
            file = super()._split_scope(nodeid)
            return group_of.get(unit(file), file)

        def _assign_work_unit(self, node):
            long = [s for s in self.workqueue if unit(s) in LONGEST]
            for scope in sorted(long, key=lambda s: LONGEST.index(unit(s)), reverse=True):
                self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return FilesAndSharedBuilds(config, log)


# The fast path's threads spin up to ~11 ms before they sleep (npxception/fast/threads.py, SPIN_CYCLES: under
# another process's load a thread that sleeps within a pass loses its core). The suite calls the kernels in
# bursts between Python work, on 2 xdist workers on 2 cores: each burst's spin afterwards would take the other
# worker's core for nothing. A spin's length changes no result, only when a waiting thread sleeps (the locks are
# the protocol), and tests/test_threads.py sets it where it tests it; here the 1 ms it had before 2026-11-30.
from npxception.fast import threads as _threads  # noqa: E402

_threads.SPIN_CYCLES = 3_000_000

# Disk: a whole run used to leave 5-10 GB under /tmp/pytest-of-<user> (Keras corpora, SavedModels,
# converted .npz), and pytest keeps the last three runs; a CI run once failed with ENOSPC. pyproject's
# tmp_path_retention_policy = "failed" deletes each passing test's tmp_path and, after a green run, the
# whole base directory. The module-scoped corpora (up to 1.8 GB each) are deleted here when their file is
# done, so that the peak is one file's worth per worker, not the suite's. A directory that must outlive
# its file (a process-wide cache, predict_reference) is made with a name starting SESSION_PREFIX.
SESSION_PREFIX = "session_"


@pytest.fixture(scope="module", autouse=True)
def _free_module_tmp(request, tmp_path_factory):
    """Remove what this file's fixtures wrote under the base temp directory, unless one of its tests failed."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return  # a failing file keeps its files to look at, as pytest keeps a failing test's tmp_path
    for path in set(base.iterdir()) - before:
        if path.name.startswith(SESSION_PREFIX):
            continue
        if path.is_symlink():  # pytest's "<name>current" links to the newest numbered directory
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
