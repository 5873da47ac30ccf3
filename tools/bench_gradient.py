"""Expected gradients side by side: tfshap.GradientExplainer and shap.GradientExplainer.

    TF_CPP_MIN_LOG_LEVEL=3 python tools/bench_gradient.py --n 8 --nsamples 200 --repeats 3

One process, one tf_keras model (shap 0.51 explains tf.keras models only, so the bench sets
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported and both explain the same model): the
seed model of tests/test_gradient_explainer.py, two copies of a digit (Conv2D(8, 3) relu +
Flatten, and Flatten) concatenated into Dense(32) relu, Dropout(0.2), Dense(10) softmax,
trained one epoch on scikit-learn's 8×8 digits. Both explain the same N samples with
``nsamples`` draws each against the same 100 background rows, all 10 outputs; each is
warmed up once, then timed ``repeats`` times round robin, and the best time counts (the
median and the process CPU time are shown too). tfshap runs twice: with shap's default
``batch_size=50`` rows per pass, and with ``batch_size=None`` (chosen from memory).
Prints a markdown table (paste it into BENCHMARKS.md).
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: shap.GradientExplainer needs a tf.keras (= tf_keras) model
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from bench import cpu_model, timed  # noqa: E402  (tools/ is on sys.path when run as a script)

N_BACKGROUND = 100


def seed_model(keras_module, x, y):
    """The two-input digits model of the issue, trained one epoch (Adam, batch 32)."""
    L = keras_module.layers
    keras_module.utils.set_random_seed(0)
    image, copy = keras_module.Input((8, 8, 1)), keras_module.Input((8, 8, 1))
    joined = L.Concatenate()([L.Flatten()(L.Conv2D(8, 3, activation="relu")(image)), L.Flatten()(copy)])
    out = L.Dense(10, activation="softmax")(L.Dropout(0.2)(L.Dense(32, activation="relu")(joined)))
    model = keras_module.Model([image, copy], out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit([x, x], y, epochs=1, batch_size=32, verbose=0)
    return model


def _completeness_gap(values, outputs, base) -> float:
    """Mean |sum(values) − (f(x) − E f(b))| over samples and outputs."""
    total = sum(np.asarray(v, np.float64).reshape(len(outputs), -1, outputs.shape[1]).sum(1) for v in values)
    return float(np.mean(np.abs(total - (outputs - base))))


def gradient_workload(n: int = 8, nsamples: int = 200, repeats: int = 3) -> list[dict]:
    """Time both explainers on the seed model; one row per method: name, best/median s, samples/s, ratio to shap."""
    import shap
    import tf_keras

    import tfshap
    from tfshap.demo import load_digits_data

    x_train, y_train, x_test, _ = load_digits_data()
    model = seed_model(tf_keras, x_train, y_train)
    background = x_train[np.random.default_rng(1).choice(len(x_train), N_BACKGROUND, replace=False)]
    samples = [x_test[:n], x_test[:n]]
    outputs = model.predict(samples, verbose=0).astype(np.float64)
    base = model.predict([background, background], verbose=0).astype(np.float64).mean(0)

    ours = tfshap.GradientExplainer(model, [background, background])
    ours_big = tfshap.GradientExplainer(model, [background, background], batch_size=None)
    theirs = shap.GradientExplainer(model, [background, background])
    methods = {
        "tfshap.GradientExplainer (batch_size=50)": lambda: ours.shap_values(samples, nsamples=nsamples, rseed=0),
        "tfshap.GradientExplainer (batch_size=None)": lambda: ours_big.shap_values(samples, nsamples=nsamples, rseed=0),
        f"shap.GradientExplainer (shap {shap.__version__})": (
            lambda: theirs.shap_values(samples, nsamples=nsamples, rseed=0)
        ),
    }
    times, gaps = {}, {}
    for name, call in methods.items():
        gaps[name] = _completeness_gap(call(), outputs, base)  # warm-up
        times[name] = []
    for _ in range(repeats):  # round robin: a busy machine slows every method alike
        for name, call in methods.items():
            times[name].extend(timed(call, 1))
    shap_best = min(w for w, _ in times[list(methods)[-1]])
    rows = []
    for name in methods:
        wall = [w for w, _ in times[name]]
        rows.append(
            dict(
                method=name,
                best_s=min(wall),
                median_s=float(np.median(wall)),
                cpu_s=min(c for _, c in times[name]),
                samples_per_s=n / min(wall),
                vs_shap=shap_best / min(wall),
                completeness_gap=gaps[name],
            )
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | best s | median s | CPU s (best) | samples/s (best) | × shap's samples/s "
        "| mean abs(sum − (f(x) − E f(b))) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['best_s']:.3f} | {r['median_s']:.3f} | {r['cpu_s']:.3f} | {r['samples_per_s']:.1f} "
            f"| {r['vs_shap']:.1f}× | {r['completeness_gap']:.2e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="samples explained (default %(default)s)")
    parser.add_argument("--nsamples", type=int, default=200, help="draws per sample (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per method after a warm-up (default %(default)s)")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    rows = gradient_workload(args.n, args.nsamples, args.repeats)
    import tensorflow as tf

    print(
        f"two-input digits model, N={args.n} samples, nsamples={args.nsamples}, {N_BACKGROUND} background rows, "
        f"10 outputs; {cpu_model()}, {os.cpu_count()} CPUs; TensorFlow {tf.__version__}; 1-min load average "
        f"{load_start:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
