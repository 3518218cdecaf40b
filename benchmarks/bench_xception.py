"""Run the side-by-side benchmark and write its tables.

    python benchmarks/bench_xception.py                  # batch 1 and 8, float32 and float64
    python benchmarks/bench_xception.py --out results.json --markdown results.md

The same measurement as ``npxception bench`` (see npxception/bench.py for the
method: same weights, interleaved runs after warm-up, medians, ratios within one
run, RSS and start-up in fresh processes). Needs the test and bench extras.
"""

from __future__ import annotations

import argparse
import json
import sys

from npxception.bench import run, to_markdown


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--size", type=int, default=299)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--out", default="benchmarks/results.json")
    p.add_argument("--markdown", default="benchmarks/results.md")
    args = p.parse_args()
    res = run(args.batch, args.size, ("float32", "float64"), ("tf", "ort"), args.repeats,
              not args.no_reference, log=lambda s: print(s, file=sys.stderr))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    with open(args.markdown, "w") as f:
        f.write(to_markdown(res) + "\n")
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
