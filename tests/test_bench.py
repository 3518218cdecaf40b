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


def test_each_call_records_the_system_timed_before_it():
    """benchmarks/after_each.py and bench_conditions_ab.py file each call under its predecessor: the record
    must be the call order itself (the first timed call has none; warm-up calls are not predecessors)."""
    order = []
    systems = {name: (lambda _x, n=name: order.append(n)) for name in ("ours", "tf", "ort")}
    calls = bench.interleaved_calls(systems, None, repeats=12, warmup=1, gap=0.0)
    timed = order[len(systems):]
    assert [n for n, _, _ in calls] == timed
    assert [p for _, p, _ in calls] == [None, *timed[:-1]]
    assert all(t >= 0 for _, _, t in calls)
