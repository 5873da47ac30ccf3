"""Side-by-side throughput per workload: tfshap, shap.DeepExplainer, the plain-gradient floor.

    TF_CPP_MIN_LOG_LEVEL=3 python tools/bench.py --n 32 --k 100 --repeats 5 --workloads all

Workloads: an MLP on the digits as 64 tabular features, the digits CNN (N=--n, K=--k),
an LSTM and a transformer encoder block over the 8 rows of a digit, and a wide CNN at
64×64 (digits upsampled; untrained, for timing).

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


# -- workloads -------------------------------------------------------------------------------
def _mlp(K, x_train, y_train, epochs):
    model = K.Sequential([K.Input((64,)), K.layers.Dense(64, activation="relu"), K.layers.Dense(32, activation="relu"),
                          K.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train.reshape(-1, 64), y_train, epochs=epochs, verbose=0)
    return model, lambda x: x.reshape(len(x), 64)


def _cnn(K, x_train, y_train, epochs):
    from tfshap.demo import train_cnn

    return train_cnn(K, x_train, y_train, epochs=epochs), lambda x: x


def _lstm(K, x_train, y_train, epochs):
    model = K.Sequential([K.Input((8, 8)), K.layers.LSTM(32), K.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train[..., 0], y_train, epochs=epochs, verbose=0)
    return model, lambda x: x[..., 0]


def _transformer(K, x_train, y_train, epochs):
    """One encoder block over the 8 rows of a digit (8 tokens of 8 features projected to 16)."""
    tokens = K.Input((8, 8))
    h = K.layers.Dense(16)(tokens)
    attended = K.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = K.layers.LayerNormalization()(K.layers.Add()([h, attended]))
    ff = K.layers.Dense(16)(K.layers.Dense(32, activation="gelu")(h))
    h = K.layers.LayerNormalization()(K.layers.Add()([h, ff]))
    model = K.Model(tokens, K.layers.Dense(10, activation="softmax")(K.layers.GlobalAveragePooling1D()(h)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train[..., 0], y_train, epochs=epochs, verbose=0)
    return model, lambda x: x[..., 0]


def _wide_cnn(K, x_train, y_train, epochs):
    """Untrained (timing only): digits upsampled to 64×64, two conv blocks of 32 and 64 filters."""
    model = K.Sequential([
        K.Input((64, 64, 1)),
        K.layers.Conv2D(32, 3, padding="same", activation="relu"), K.layers.MaxPooling2D(2),
        K.layers.Conv2D(64, 3, padding="same", activation="relu"), K.layers.MaxPooling2D(2),
        K.layers.GlobalAveragePooling2D(), K.layers.Dense(10, activation="softmax"),
    ])
    return model, lambda x: np.repeat(np.repeat(x, 8, axis=1), 8, axis=2)


#: name -> (builder, N, K); the digits CNN takes --n and --k.
WORKLOADS = {
    "mlp": (_mlp, 64, 100),
    "cnn": (_cnn, None, None),
    "lstm": (_lstm, 16, 50),
    "transformer": (_transformer, 16, 50),
    "wide_cnn": (_wide_cnn, 4, 20),
}


def _mobilenet(K, x_train, y_train, epochs):
    """Keras 3's MobileNetV2 at 32×32, random weights (timing only): digits upsampled to 32×32 RGB."""
    import keras

    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    return model, lambda x: np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3)


#: The workloads of the time-to-first-attribution table (``--first-call``): the main table's and MobileNetV2.
FIRST_CALL_WORKLOADS = {**WORKLOADS, "mobilenet": (_mobilenet, 4, 10)}


def first_call_child(name: str, method: str) -> None:
    """In a fresh process: the seconds from a built model to the first attribution (or the floor's first call)."""
    import json

    import tf_keras

    import tfshap
    from tfshap.demo import load_digits_data, plain_gradient_floor

    build, n, k = FIRST_CALL_WORKLOADS[name]
    n, k = n or 32, k or 100
    x_train, y_train, x_test, _ = load_digits_data()
    tf_keras.utils.set_random_seed(0)
    model, shape = build(tf_keras, x_train, y_train, 1)  # trained briefly, as in the main table: outside the timing
    samples, background = shape(x_test[:n]), shape(x_train[:k])
    n_outputs = int(np.prod(model.output_shape[1:]))
    start = time.perf_counter()
    if method == "tfshap":
        explainer = tfshap.compile(model, background)
        compiled = time.perf_counter() - start
        explainer.explain(samples)
    else:
        floor = plain_gradient_floor(model, n_outputs)
        compiled = 0.0
        floor(samples, background).numpy()
    print(json.dumps({"seconds": time.perf_counter() - start, "compile": compiled}))


def first_call_table(names: list[str], repeats: int) -> None:
    """Fresh processes, alternating tfshap and the floor: compile + first explain against the floor's first call."""
    import json

    print(f"{cpu_model()}; fresh process per run, {repeats} run(s) each, alternating; the fastest counts; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| workload | tfshap compile + first explain | of which compile | floor first call | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in names:
        runs = {"tfshap": [], "floor": []}
        for _ in range(repeats):
            for method in runs:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--first-call-child", name, method],
                                     capture_output=True, text=True, check=True).stdout
                runs[method].append(json.loads(out.strip().splitlines()[-1]))
        best = {m: min(runs[m], key=lambda r: r["seconds"]) for m in runs}
        build, n, k = FIRST_CALL_WORKLOADS[name]
        label = f"{name} (N={n or 32}, K={k or 100})"
        ratio = best["tfshap"]["seconds"] / best["floor"]["seconds"]
        print(f"| {label} | {best['tfshap']['seconds']:.2f} s | {best['tfshap']['compile']:.2f} s | "
              f"{best['floor']['seconds']:.2f} s | {ratio:.2f}× |", flush=True)


def profile_table(workload: dict, methods: dict, calls: int = 5, top: int = 10) -> None:
    """TensorFlow's profiler on ``calls`` steady-state calls of each method: op time per call by op type."""
    import tempfile

    import tensorflow as tf

    from tfshap import _tf_private

    per_method = {}
    for name, (call, _) in methods.items():
        logdir = tempfile.mkdtemp(prefix="tfshap-profile-")
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            call()
        tf.profiler.experimental.stop()
        seconds = _tf_private.profiled_op_seconds(logdir)
        per_method[name] = {op_type: s / calls for op_type, s in seconds.items()}
    print(f"\n**{workload['label']}**: op time per call (ms) on the compute threads, "
          f"{calls} profiled calls after the timed ones\n")
    print("| method | op time | " + " | ".join(f"top {i + 1}" for i in range(top)) + " |")
    print("| --- | ---: |" + " --- |" * top)
    for name, ops in per_method.items():
        ranked = sorted(ops.items(), key=lambda item: -item[1])[:top]
        cells = [f"{op_type} {1e3 * s:.1f}" for op_type, s in ranked] + [""] * (top - len(ranked))
        print(f"| {name} | {1e3 * sum(ops.values()):.1f} | " + " | ".join(cells) + " |")


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_workload(name, args, data) -> dict:
    """Build (and train) a workload's model, with its samples and background rows."""
    import tf_keras

    x_train, y_train, x_test, _ = data
    build, n, k = WORKLOADS[name]
    n, k = n or args.n, k or args.k
    model, shape = build(tf_keras, x_train, y_train, args.epochs)
    n_outputs = int(np.prod(model.output_shape[1:]))
    return {
        "model": model,
        "samples": shape(x_test[:n]),
        "background": shape(x_train[np.random.default_rng(1).choice(len(x_train), k, replace=False)]),
        "n": n,
        "n_outputs": n_outputs,
        "label": f"{name} (N={n}, K={k}, {n_outputs} outputs)",
    }


def tfshap_and_floor(workload: dict, jit: bool = False, other_backward: bool = False) -> dict:
    """Compile and warm up tfshap and the floor for a workload: ``{method: (call, note)}``; stores the
    first explanation in ``workload["first"]``.

    Every workload runs this before shap runs anywhere: shap.DeepExplainer leaves TensorFlow's
    gradient registry patched (``shap_Erfc``, ``shap_DivNoNan``, …) after an error, which breaks
    any later gradient by op type in the same process.
    """
    import tfshap
    from tfshap.demo import plain_gradient_floor

    model, samples, background = workload["model"], workload["samples"], workload["background"]
    methods = {}
    call, note, workload["first"], explainer = _compiled(lambda: tfshap.compile(model, background), samples)
    methods["tfshap"] = (call, note)
    if jit:  # the same explainer compiled with XLA, a row of its own
        call, note, _, _ = _compiled(
            lambda: tfshap.compile(model, background, jit_compile=True), samples, refusable=True
        )
        methods["tfshap, jit_compile=True"] = (call, note)
    # The backward vectorized over the outputs: a loop model's steady state (what the explainer runs once it
    # has explained VECTORIZE_AFTER_PAIRS pairs), or with --other-backward the strategy tfshap does not pick.
    if explainer is not None and _vectorizes_later(explainer):
        vectorized = f"tfshap after {explainer.VECTORIZE_AFTER_PAIRS:,} pairs (vectorized over outputs)"
    else:
        vectorized = "tfshap, vectorized over outputs" if other_backward and explainer is not None else None
    if vectorized:
        call, note, _, _ = _compiled(lambda: tfshap.compile(model, background, vectorize_outputs=True), samples)
        methods[vectorized] = (call, note)
    floor = plain_gradient_floor(model, workload["n_outputs"])
    floor(samples, background).numpy()  # warm-up (traces)
    methods[FLOOR] = (
        lambda: floor(samples, background).numpy(), "1 forward over 2·N·K rows + 1 tf.gradients per output"
    )
    return methods


def _vectorizes_later(explainer) -> bool:
    """Whether ``explainer`` (default options) switches to the backward vectorized over its outputs after
    ``VECTORIZE_AFTER_PAIRS`` pairs: a model with a loop."""
    return explainer.program.has_loops and explainer.program.can_vectorize(explainer.n_outputs)


def _compiled(compile_explainer, samples, refusable: bool = False):
    """``(call, note, first explanation, explainer)`` for an explainer compiled and warmed up (XLA compiles
    on the first call); all but ``note`` are None where the model is not supported or, if ``refusable``,
    the options are refused."""
    import tfshap

    start = time.perf_counter()
    try:
        explainer = compile_explainer()
    except tfshap.UnsupportedOpError as error:
        return None, f"not supported: {error.problems[0].describe()}", None, None
    except ValueError as error:
        if not refusable:
            raise
        return None, f"refused: {str(error)[:60]}", None, None
    compile_s = time.perf_counter() - start
    first = explainer.explain(samples)  # warm-up
    note = f"compile {compile_s:.1f} s; additivity error {first.additivity_error:.1e}"
    return (lambda: explainer.explain(samples)), note, first, explainer


FLOOR = "plain-gradient floor"


def time_methods(workload: dict, methods: dict, repeats: int) -> list[tuple]:
    """Rows ``(workload, N, method, best s, median s, best CPU s, note)``, round robin; the floor last."""
    times = {method: [] for method, (call, _) in methods.items() if call is not None}
    for _ in range(repeats):  # round robin, so that a busy machine slows every method alike
        for method in times:
            times[method].extend(timed(methods[method][0], 1))
    rows = []
    for method in sorted(methods, key=lambda m: m == FLOOR):
        note = methods[method][1]
        if method not in times:
            rows.append((workload["label"], workload["n"], method, None, None, None, note))
            continue
        wall, cpu = [w for w, _ in times[method]], [c for _, c in times[method]]
        rows.append((workload["label"], workload["n"], method, min(wall), float(np.median(wall)), min(cpu), note))
    return rows


def _shap_method(model, samples, background, first, n_outputs) -> dict:
    import warnings

    import shap
    import tensorflow as tf

    warnings.filterwarnings("ignore", module="shap")
    tf.get_logger().setLevel("ERROR")
    try:
        start = time.perf_counter()
        deep = shap.DeepExplainer(model, background)
        setup_s = time.perf_counter() - start
        values = np.asarray(deep.shap_values(samples, check_additivity=False))  # warm-up
    except Exception as error:  # noqa: BLE001  (the anchor fails on LSTMs and attention; that is a result)
        return {f"shap {shap.__version__}": (None, f"fails: {type(error).__name__}: {str(error).splitlines()[0][:80]}")}
    base = model.predict(background, verbose=0).reshape(len(background), -1).mean(axis=0)
    outputs = model.predict(samples, verbose=0).reshape(len(samples), -1)
    error = float(np.max(np.abs(values.reshape(len(samples), -1, n_outputs).sum(axis=1) + base - outputs)))
    gap = float(np.max(np.abs(values - first.values)))
    return {f"shap {shap.__version__}": (
        lambda: deep.shap_values(samples, check_additivity=False),
        f"setup {setup_s:.1f} s; additivity error {error:.1e}; max abs(shap − tfshap) {gap:.1e}",
    )}


def memory_child(n: int, k: int, exported: bool = False) -> None:
    """Explain ``n`` digits against ``k`` background rows of the digits CNN; print peak RSS and time.

    ``exported``: through the explainer's SavedModel, loaded back into this process.
    """
    import tempfile

    import tensorflow as tf
    import tf_keras

    import tfshap
    from tfshap.demo import build_cnn, load_digits_data

    x_train, _, x_test, _ = load_digits_data()
    rng = np.random.default_rng(0)
    background = x_train[rng.integers(0, len(x_train), k)] + rng.normal(0, 0.01, (k, 8, 8, 1)).astype(np.float32)
    samples = x_test[rng.integers(0, len(x_test), n)]
    explainer = tfshap.compile(build_cnn(tf_keras), background)
    with tempfile.TemporaryDirectory() as scratch:
        if exported:
            loaded = tf.saved_model.load(str(explainer.export(f"{scratch}/explainer")))
        start = time.perf_counter()
        if exported:
            found = loaded.explain(tf.constant(samples))
            values, outputs = found["values"].numpy(), found["outputs"].numpy()
            error = np.abs(values.reshape(n, -1, 10).sum(1) + found["base_values"].numpy() - outputs).max()
        else:
            error = explainer.explain(samples).additivity_error
        seconds = time.perf_counter() - start
    print(f"{n} {k} {peak_rss_mib():.0f} {seconds:.1f} {error:.1e} {explainer.batch_size(10)}")


def stream_child(n: int, k: int) -> None:
    """Stream ``n`` rows of a memory-mapped digits file against ``k`` background rows to a .npy; print peak RSS."""
    import tempfile

    import tf_keras

    import tfshap
    from tfshap.demo import build_cnn, load_digits_data

    x_train, _, x_test, _ = load_digits_data()
    rng = np.random.default_rng(0)
    background = x_train[rng.integers(0, len(x_train), k)]
    with tempfile.TemporaryDirectory() as scratch:
        inputs = np.lib.format.open_memmap(f"{scratch}/x.npy", mode="w+", dtype=np.float32, shape=(n, 8, 8, 1))
        for start in range(0, n, 4096):  # written a slice at a time: the whole input is never in memory
            rows = min(4096, n - start)
            inputs[start : start + rows] = x_test[rng.integers(0, len(x_test), rows)]
        inputs.flush()
        del inputs
        explainer = tfshap.compile(build_cnn(tf_keras), background)
        start = time.perf_counter()
        result = explainer.explain_to(
            f"{scratch}/values.npy", np.load(f"{scratch}/x.npy", mmap_mode="r"), progress=False
        )
        seconds = time.perf_counter() - start
        size_mib = os.path.getsize(f"{scratch}/values.npy") / 2**20
        print(f"{n} {k} {peak_rss_mib():.0f} {seconds:.1f} {result.additivity_error:.1e} {size_mib:.0f}")


def _child_fields(flag: str, n: int, k: int) -> list[str]:
    """The six fields a ``--memory-child``/``--stream-child`` run of this script prints last, from a fresh process."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), flag, str(n), str(k)],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[-6:]


def stream_table(ns: list[int], k: int) -> None:
    """Peak RSS of explain_to over memory-mapped inputs of growing length, each in a fresh process."""
    print(
        f"\nStreaming: digits CNN, K={k}, all 10 outputs, explain_to from a memory-mapped .npy "
        "(peak RSS, ru_maxrss)\n"
    )
    print("| samples N | values file MiB | peak RSS MiB | seconds | additivity error |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in ns:
        _, _, rss, seconds, error, size = _child_fields("--stream-child", n, k)
        print(f"| {n:,} | {size} | {rss} | {seconds} | {error} |")


def memory_table(n: int, ks: list[int], exported: bool = False) -> None:
    """Peak RSS of one explanation per background size, each in a fresh process."""
    through = "the exported SavedModel's explain" if exported else "explain"
    print(
        f"\nMemory: digits CNN, N={n} samples, all 10 outputs, {through}, a fresh process per row "
        "(peak RSS, ru_maxrss)\n"
    )
    print("| background rows K | pairs | peak RSS MiB | seconds | pairs per chunk | additivity error |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in ks:
        _, _, rss, seconds, error, chunk = _child_fields("--export-child" if exported else "--memory-child", n, k)
        print(f"| {k:,} | {n * k:,} | {rss} | {seconds} | {chunk} | {error} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="samples explained by the digits CNN (default %(default)s)")
    parser.add_argument("--k", type=int, default=100, help="background rows of the digits CNN (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per method, after one warm-up (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default %(default)s)")
    parser.add_argument("--workloads", default="cnn",
                        help=f"comma-separated, from {','.join(WORKLOADS)} or all (default %(default)s)")
    parser.add_argument("--skip-shap", action="store_true", help="leave shap.DeepExplainer out")
    parser.add_argument("--jit", action="store_true", help="add a row for tfshap compiled with jit_compile=True (XLA)")
    parser.add_argument("--other-backward", action="store_true",
                        help="add a row for tfshap vectorized over the outputs for models without a loop "
                             "(models with one always get it: their steady state)")
    parser.add_argument("--profile", action="store_true",
                        help="after the table, TensorFlow's profiler on each workload's methods: op time by op type")
    parser.add_argument("--gradient", action="store_true",
                        help="also tfshap.GradientExplainer vs shap.GradientExplainer (tools/bench_gradient.py), N=--n")
    parser.add_argument("--memory", default="",
                        help="comma-separated background sizes: peak RSS per size (digits CNN, N=--n)")
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("N", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--export-memory", default="",
                        help="as --memory, through the explainer's exported SavedModel loaded back")
    parser.add_argument("--export-child", nargs=2, type=int, metavar=("N", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--stream", default="",
                        help="comma-separated sample counts: peak RSS of explain_to over a memory-mapped input "
                             "(digits CNN, K=--k)")
    parser.add_argument("--stream-child", nargs=2, type=int, metavar=("N", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--first-call", action="store_true",
                        help="time to first attribution: compile + first explain against the floor's first call, each "
                             "in a fresh process (--workloads, plus mobilenet; --repeats runs each)")
    parser.add_argument("--first-call-child", nargs=2, metavar=("WORKLOAD", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_call_child:
        first_call_child(*args.first_call_child)
        return 0
    if args.first_call:
        names = list(FIRST_CALL_WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
        first_call_table(names, args.repeats)
        return 0
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    if args.export_child:
        memory_child(*args.export_child, exported=True)
        return 0
    if args.stream_child:
        stream_child(*args.stream_child)
        return 0
    if args.stream:
        stream_table([int(n) for n in args.stream.split(",")], args.k)
        return 0
    if args.memory or args.export_memory:
        sizes = [int(k) for k in (args.memory or args.export_memory).split(",")]
        memory_table(args.n, sizes, exported=bool(args.export_memory))
        return 0
    names = list(WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; expected some of {sorted(WORKLOADS)}")

    load_start = os.getloadavg()[0]
    import tensorflow as tf
    import tf_keras

    from tfshap.demo import load_digits_data

    data = load_digits_data()
    if args.n > len(data[2]) or args.k > len(data[0]):
        parser.error(f"--n at most {len(data[2])} and --k at most {len(data[0])}")
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; TensorFlow {tf.__version__}, tf_keras {tf_keras.__version__}, "
          f"Python {platform.python_version()}; GPU: {'yes' if tf.config.list_physical_devices('GPU') else 'no'}")
    print(f"{args.repeats} timed calls per method, round robin, after a warm-up; the best time counts\n")
    print("| workload | method | best s | median s | samples/s | time vs floor | CPU vs floor | peak RSS MiB | notes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    # Every model is built, trained and compiled first: shap.DeepExplainer leaves TensorFlow's
    # gradient registry patched (shap_DivNoNan, ...), after which training or tracing a gradient
    # by op type fails in this process.
    workloads = {name: prepare_workload(name, args, data) for name in names}
    methods = {
        name: tfshap_and_floor(workloads[name], jit=args.jit, other_backward=args.other_backward) for name in names
    }
    summary = []
    for name in names:
        w = workloads[name]
        if not args.skip_shap and w["first"] is not None:
            methods[name].update(_shap_method(w["model"], w["samples"], w["background"], w["first"], w["n_outputs"]))
        rows = time_methods(w, methods[name], args.repeats)
        rss = peak_rss_mib()
        floor = rows[-1]
        for workload, n, method, best, median, cpu, note in rows:
            if best is None:
                print(f"| {workload} | {method} | – | – | – | – | – | {rss:.0f} | {note} |")
                continue
            print(f"| {workload} | {method} | {best:.3f} | {median:.3f} | {n / best:.1f} | {best / floor[3]:.2f}× "
                  f"| {cpu / floor[5]:.2f}× | {rss:.0f} | {note} |")
        by_method = {r[2]: r for r in rows if r[3] is not None}
        shap_rows = [r for m, r in by_method.items() if m.startswith("shap")]
        if "tfshap" in by_method and floor[3] is not None:
            line = f"{name}: tfshap {by_method['tfshap'][3] / floor[3]:.2f}× the floor's time"
            if shap_rows:
                line += f", {shap_rows[0][3] / by_method['tfshap'][3]:.2f}× faster than shap"
            summary.append(line)
    load_end = os.getloadavg()[0]
    print()
    for line in summary:
        print(line)
    print(f"1-min load average {load_start:.2f} before, {load_end:.2f} after (goals: ≤ 1.5× the floor, ≥ 5× shap)")
    if args.profile:  # after the timings, which the profiler would slow down
        for name in names:
            profile_table(workloads[name], {m: c for m, c in methods[name].items() if not m.startswith("shap")})
    if args.gradient:
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_gradient.py")
        spec = importlib.util.spec_from_file_location("tfshap_tools_bench_gradient", path)
        gradient = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gradient)
        print(f"\nGradientExplainer on the two-input digits model, N={args.n}, nsamples=200, 100 background rows:\n")
        print(gradient.markdown(gradient.gradient_workload(args.n, 200, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
