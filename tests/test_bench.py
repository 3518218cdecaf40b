"""``npxception bench``'s interleaving: within its rounds, every system follows every other
equally often. Our pass timed right after ONNX Runtime's took 192-218 ms against 153-180 ms
after one of our own (docs/performance.md), so the old fixed order A B C A B C charged that
cost to whichever system came after ONNX Runtime.
"""

from collections import Counter

import pytest

from npxception import bench


@pytest.mark.parametrize("names", [("ours", "ort"), ("ours", "tf", "ort"), ("ours", "tf", "ort", "ours_f64")])
def test_each_system_follows_each_other_equally_often(names):
    calls = []
    systems = {name: (lambda _x, n=name: calls.append(n)) for name in names}
    rounds = len(bench.round_orders(len(names)))
    medians = bench.interleaved(systems, None, repeats=2 * rounds, warmup=1, gap=0.0)
    assert set(medians) == set(names)
    timed = calls[len(names):]  # after one warm-up call each
    assert Counter(timed) == {name: 2 * rounds for name in names}
    follows = Counter()
    for r in range(0, len(timed), len(names)):
        round_ = timed[r:r + len(names)]
        assert sorted(round_) == sorted(names)  # one call of each system per round
        follows.update(zip(round_, round_[1:]))
    pairs = [(a, b) for a in names for b in names if a != b]
    counts = {p: follows[p] for p in pairs}
    assert min(counts.values()) == max(counts.values()) > 0, counts
