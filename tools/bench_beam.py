"""Rows per second on Apache Beam's local runner (1 and 2 worker processes) against in-process ``explain``.

    TF_CPP_MIN_LOG_LEVEL=3 python tools/bench_beam.py --rows 1797 --k 100 --repeats 3

The workload is the README's: the digits CNN (Keras 3; Conv2D(16) relu → MaxPool → Dense(64)
relu → 10 softmax, trained one epoch on scikit-learn's 8×8 digits), all 10 outputs explained
against K background digits, over every digit (1,797 rows) saved as one .npy file.

- in-process: ``tfshap.compile`` once (not timed), then ``explainer.explain(rows)``.
- Beam: ``tfshap.beam.explain_files``, the pipeline of ``tfshap explain --out DIR/``: the
  .npy file read, the rows spread over the workers, ``RunInference`` with
  ``ExplainModelHandler``, Parquet written. Its wall time includes what a run costs once:
  the workers' start (Beam's harness, importing TensorFlow), loading and compiling the model
  in each worker, Beam's stages. The same pipeline over ``--small`` rows measures that fixed
  cost, and the difference between the two runs gives the per-row (marginal) throughput.

Runs are round robin, ``--repeats`` times; the best wall time counts. Prints a markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def prepare(d: Path, k: int, rows: int, small: int):
    """The saved CNN, its background, and the rows as .npy files; the in-process explainer."""
    import keras

    import tfshap
    from tfshap.demo import load_digits_data, train_cnn

    x_train, y_train, x_test, _ = load_digits_data()
    model = train_cnn(keras, x_train, y_train, epochs=1)
    model.save(d / "cnn.keras")
    everything = np.concatenate([x_train, x_test])
    background = x_train[np.random.default_rng(1).choice(len(x_train), k, replace=False)]
    np.save(d / "bg.npy", background)
    x = np.resize(everything, (rows, *everything.shape[1:]))
    (d / "rows").mkdir()
    (d / "small").mkdir()
    np.save(d / "rows" / "x.npy", x)
    np.save(d / "small" / "x.npy", x[:small])
    return tfshap.compile(model, background), x


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have exited (the Beam workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_beam(d: Path, which: str, workers: int, rows_per_batch: int | None, intra_op: int | None = None):
    """(wall, CPU) seconds of one pipeline run over ``d/which/*.npy`` with ``workers`` local worker processes
    (``intra_op``: TF_NUM_INTRAOP_THREADS for the worker processes)."""
    from tfshap import beam as tb

    handler_kwargs = (
        {} if rows_per_batch is None else {"min_batch_size": rows_per_batch, "max_batch_size": rows_per_batch}
    )
    handler = tb.ExplainModelHandler(d / "cnn.keras", d / "bg.npy", **handler_kwargs)
    out = d / f"out-{which}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    if intra_op is not None:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(intra_op)  # read by the workers' TensorFlow, not this one's
    start, cpu = time.perf_counter(), cpu_seconds()
    try:
        summary = tb.explain_files(handler, tb.match_inputs(str(d / which / "*.npy")), str(out), LAYOUT,
                                   options=tb.local_options(workers), worker_log=str(d / "workers.log"))
    finally:
        os.environ.pop("TF_NUM_INTRAOP_THREADS", None)
    seconds = time.perf_counter() - start, cpu_seconds() - cpu
    assert summary.rows_failed == 0 and summary.attempts == 1, summary
    return seconds


LAYOUT = None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    except OSError:
        return "unknown CPU"


def main() -> None:
    global LAYOUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1797)
    parser.add_argument("--small", type=int, default=64, help="rows of the run that measures the fixed cost")
    parser.add_argument("--k", type=int, default=100, help="background rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows-per-batch", type=int, default=None, help="default: the handler's")
    parser.add_argument("--intra-op", action="store_true",
                        help="also run each multi-worker case with TF_NUM_INTRAOP_THREADS = CPUs / workers")
    args = parser.parse_args()

    from tfshap import beam as tb

    d = Path(tempfile.mkdtemp(prefix="tfshap-bench-beam-"))
    try:
        explainer, x = prepare(d, args.k, args.rows, args.small)
        LAYOUT = tb.layout_of(explainer, ["x"])
        rows_per_batch = args.rows_per_batch or tb.explainer_rows_per_batch(explainer)
        explainer.explain(x[:8])  # warm-up: traces
        load = os.getloadavg()[0]
        cases = [(w, None) for w in args.workers]
        if args.intra_op:
            cases += [(w, max(1, os.cpu_count() // w)) for w in args.workers if w > 1]
        times: dict = {"in-process": [], **{(w, t, s): [] for w, t in cases for s in ("rows", "small")}}
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), cpu_seconds()
            explainer.explain(x)
            times["in-process"].append((time.perf_counter() - start, cpu_seconds() - cpu))
            for workers, threads in cases:
                for which in ("rows", "small"):
                    times[(workers, threads, which)].append(run_beam(d, which, workers, args.rows_per_batch, threads))
        best = {key: min(value) for key, value in times.items()}  # the best wall time, with its CPU time
        base = args.rows / best["in-process"][0]
        print(f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; load average {load:.2f} at the start, "
              f"{os.getloadavg()[0]:.2f} at the end. {args.rows} rows, K={args.k}, {rows_per_batch} rows per batch, "
              f"best of {args.repeats}.\n")
        print("| run | wall s | CPU s | rows/s | × in-process | fixed cost s | marginal rows/s "
              "| marginal × in-process |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        wall, cpu = best["in-process"]
        print(f"| in-process `explain` | {wall:.2f} | {cpu:.1f} | {base:.0f} | 1.00 | | | |")
        for workers, threads in cases:
            (whole, cpu), (small, _) = best[(workers, threads, "rows")], best[(workers, threads, "small")]
            marginal = (args.rows - args.small) / max(whole - small, 1e-9)
            fixed = small - args.small / marginal
            name = f"Beam, {workers} worker{'s' if workers > 1 else ''}"
            name += f", {threads} TF thread(s) each" if threads else ""
            print(f"| {name} | {whole:.2f} | {cpu:.1f} | {args.rows / whole:.0f} | "
                  f"{args.rows / whole / base:.2f} | {fixed:.1f} | {marginal:.0f} | {marginal / base:.2f} |")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
