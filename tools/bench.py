"""Side-by-side throughput on the digits CNN: tfshap, shap.DeepExplainer, the plain-gradient floor.

    TF_CPP_MIN_LOG_LEVEL=3 python tools/bench.py --n 32 --k 100 --repeats 5

One process, one tf_keras model (shap 0.51 explains tf.keras models only, so the bench sets
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported and all three explain the same model):
Conv2D + relu, MaxPooling2D, Flatten, Dense relu, Dense softmax over 10, trained for a few
epochs on scikit-learn's 8×8 digits. Each method is warmed up once, then timed
``--repeats`` times, round robin, on the same N samples × K background rows; the best
time counts (the median is shown too), and so does the process's CPU time per call, which
another busy process on the machine disturbs less than the wall clock.
The floor is :func:`tfshap.demo.plain_gradient_floor`: one forward pass over the 2·N·K
paired rows and one ``tf.gradients`` backward per output, in one ``tf.function``.
Prints a markdown table (paste it into BENCHMARKS.md).
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: shap.DeepExplainer needs a tf.keras (= tf_keras) model
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def timed(fn, repeats: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process) for each of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="samples explained (default %(default)s)")
    parser.add_argument("--k", type=int, default=100, help="background rows (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method, after one warm-up (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs for the CNN (default %(default)s)")
    parser.add_argument("--skip-shap", action="store_true", help="leave shap.DeepExplainer out")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()[0]
    import tensorflow as tf
    import tf_keras

    import tfshap
    from tfshap.demo import load_digits_data, plain_gradient_floor, train_cnn

    x_train, y_train, x_test, _ = load_digits_data()
    if args.n > len(x_test) or args.k > len(x_train):
        parser.error(f"--n at most {len(x_test)} and --k at most {len(x_train)}")
    model = train_cnn(tf_keras, x_train, y_train, epochs=args.epochs)
    samples = x_test[: args.n]
    background = x_train[np.random.default_rng(1).choice(len(x_train), args.k, replace=False)]
    n_outputs = int(model.output_shape[-1])

    methods = {}  # name -> (call, note)
    start = time.perf_counter()
    explainer = tfshap.compile(model, background)
    compile_s = time.perf_counter() - start
    first = explainer.explain(samples)  # warm-up
    methods["tfshap.compile(...).explain"] = (
        lambda: explainer.explain(samples),
        f"compile {compile_s:.1f} s once; additivity error {first.additivity_error:.1e}",
    )
    if not args.skip_shap:
        import warnings

        import shap

        warnings.filterwarnings("ignore", module="shap")
        tf.get_logger().setLevel("ERROR")
        start = time.perf_counter()
        deep = shap.DeepExplainer(model, background)
        setup_s = time.perf_counter() - start
        shap_values = np.asarray(deep.shap_values(samples))  # warm-up
        base = model.predict(background, verbose=0).mean(axis=0)
        outputs = model.predict(samples, verbose=0)
        shap_error = float(np.max(np.abs(shap_values.reshape(args.n, -1, n_outputs).sum(axis=1) + base - outputs)))
        gap = float(np.max(np.abs(shap_values - first.values)))
        methods[f"shap.DeepExplainer (shap {shap.__version__})"] = (
            lambda: deep.shap_values(samples),
            f"setup {setup_s:.1f} s; additivity error {shap_error:.1e}; max abs(shap − tfshap) {gap:.1e}",
        )
    floor = plain_gradient_floor(model, n_outputs)
    floor(samples, background).numpy()  # warm-up (traces)
    methods["plain-gradient floor"] = (lambda: floor(samples, background).numpy(), "1 forward over 2·N·K rows + 1 tf.gradients per output")

    # Round robin, so that a busy machine slows every method alike; the best time counts.
    times = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, (call, _) in methods.items():
            times[name].extend(timed(call, 1))
    rows = []
    for name, (_, note) in methods.items():
        wall = [w for w, _ in times[name]]
        cpu = [c for _, c in times[name]]
        rows.append((name, min(wall), float(np.median(wall)), min(cpu), note))
    t_floor = rows[-1][1]
    cpu_floor = rows[-1][3]
    t_shap = rows[1][1] if not args.skip_shap else None

    load_end = os.getloadavg()[0]
    t_tfshap = rows[0][1]
    print(f"digits CNN, N={args.n} samples, K={args.k} background rows, {n_outputs} outputs; "
          f"{args.repeats} timed calls each, round robin, after a warm-up")
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; TensorFlow {tf.__version__}, tf_keras {tf_keras.__version__}, "
          f"Python {platform.python_version()}; GPU: {'yes' if tf.config.list_physical_devices('GPU') else 'no'}; "
          f"1-min load average {load_start:.2f} before, {load_end:.2f} after")
    print()
    print("| method | best s | median s | samples/s (best) | time vs floor | CPU s (best) | CPU vs floor | notes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for method, seconds, median, cpu, note in rows:
        print(
            f"| {method} | {seconds:.3f} | {median:.3f} | {args.n / seconds:.1f} | {seconds / t_floor:.2f}× "
            f"| {cpu:.3f} | {cpu / cpu_floor:.2f}× | {note} |"
        )
    print()
    cpu_tfshap = rows[0][3]
    print(f"tfshap time / floor time: {t_tfshap / t_floor:.2f}× wall, {cpu_tfshap / cpu_floor:.2f}× CPU (goal ≤ 1.5×)")
    if not args.skip_shap:
        cpu_shap = rows[1][3]
        print(f"tfshap speedup over shap.DeepExplainer: {t_shap / t_tfshap:.2f}× wall, {cpu_shap / cpu_tfshap:.2f}× CPU (goal ≥ 5×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
