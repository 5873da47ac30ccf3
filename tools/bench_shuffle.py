"""Dinucleotide shuffles side by side: tfshap.sequence.dinuc_shuffle and deeplift's loop.

    python tools/bench_shuffle.py --n 100 --k 20 --length 2114 --repeats 3 [--deeplift dinuc_shuffle.py]

One process: N random one-hot sequences of the given length, K shuffles of each (ChromBPNet's
reference set: K = 20, L = 2,114). tfshap shuffles them all in one call; deeplift's
``dinuc_shuffle(seq, num_shufs, rng)`` (``deeplift/dinuc_shuffle.py`` of
github.com/kundajelab/deeplift, loaded from the path given, as ChromBPNet calls it) is a Python
loop over shuffles and positions, called once per sequence. Each is warmed up once, then
timed ``repeats`` times round robin; the best time counts. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfshap.sequence import dinuc_shuffle  # noqa: E402


def _deeplift(path: str):
    """deeplift's ``dinuc_shuffle``, loaded from its file."""
    spec = importlib.util.spec_from_file_location("deeplift_dinuc_shuffle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dinuc_shuffle


def main(argv=None) -> None:
    """Time the shuffles and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="sequences")
    parser.add_argument("--k", type=int, default=20, help="shuffles per sequence")
    parser.add_argument("--length", type=int, default=2114)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deeplift", metavar="PATH", help="deeplift/dinuc_shuffle.py, to time it too")
    args = parser.parse_args(argv)
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(0).integers(0, 4, (args.n, args.length))]
    methods = {"tfshap.sequence.dinuc_shuffle (one call)": lambda: dinuc_shuffle(x, args.k, seed=0)}
    if args.deeplift:
        shuffle = _deeplift(args.deeplift)
        rng = np.random.RandomState(0)
        methods["deeplift dinuc_shuffle (per sequence)"] = lambda: [shuffle(s, args.k, rng) for s in x]
    best = {name: np.inf for name in methods}
    for fn in methods.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    first = next(iter(best.values()))
    print(f"N={args.n} sequences × K={args.k} shuffles × L={args.length}, best of {args.repeats}\n")
    print("| method | time (s) | shuffles/s | time / tfshap's |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {args.n * args.k / seconds:,.0f} | {seconds / first:.2f}× |")


if __name__ == "__main__":
    main()
