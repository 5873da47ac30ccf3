"""Per-sample references on a ChromBPNet-shaped model: tfshap, the plain-gradient floor and shap, side by side.

    TF_CPP_MIN_LOG_LEVEL=3 python tools/bench_sequence.py --n 32 --k 20 --length 1000 --repeats 5

Each of N one-hot sequences is explained against its own K dinucleotide shuffles
(``tfshap.sequence.dinuc_shuffle``), on a ChromBPNet-shaped model (``chrombpnet_like``, both
heads: ChromBPNet's profile target and the log counts, 2 outputs). No reference row is shared,
so every method runs ``N·K`` sample rows and ``N·K`` reference rows forward.

- tfshap: ``explain(x, references=shuffles)`` (and ``hypothetical=True``, TF-MoDISco's input);
- the floor: one ``tf.function`` doing a forward pass over the same ``2·N·K`` rows and one
  ``tf.gradients`` backward per output, gradient × (x − r) averaged per sample;
- shap 0.51 ``DeepExplainer`` with the same shuffles as a per-sample function, on the model
  without dilation (it has no gradient for ``SpaceToBatchND``), and tfshap on that model too.

One process, round robin, best of ``--repeats`` after a warm-up; ratios against the floor.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: shap needs tf.keras to be tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def per_sample_floor(model, n_outputs: int, shape):
    """``floor(x, references)``: the plain-gradient work on every sample paired with its own rows."""
    import tensorflow as tf

    from tfshap.demo import paired_gradient_floor

    x_spec = tf.TensorSpec([None, *shape], tf.float32)
    r_spec = tf.TensorSpec([None, None, *shape], tf.float32)

    @tf.function(input_signature=[x_spec, r_spec], autograph=False)
    def floor(x, references):
        n, k = tf.shape(references)[0], tf.shape(references)[1]
        xs = tf.repeat(x, k, axis=0)
        rs = tf.reshape(references, tf.concat([[-1], tf.shape(x)[1:]], 0))
        return paired_gradient_floor(model, n_outputs, xs, rs, n, k)

    return floor


def two_heads(tf_keras, model):
    """ChromBPNet's profile target and its log counts as one model with 2 outputs."""
    from tfshap.sequence import profile_target

    target = profile_target(model).outputs[0]
    return tf_keras.Model(model.inputs, tf_keras.layers.Concatenate()([target, model.outputs[1]]))


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="sequences explained (default %(default)s)")
    parser.add_argument("--k", type=int, default=20, help="shuffles per sequence (default %(default)s)")
    parser.add_argument("--length", type=int, default=1000, help="sequence length (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-shap", action="store_true")
    args = parser.parse_args(argv)

    import tf_keras

    import tfshap
    from tfshap.sequence import chrombpnet_like, dinuc_shuffle, one_hot, shuffled_references

    rng = np.random.default_rng(0)
    x = one_hot(["".join(rng.choice(list("ACGT"), args.length)) for _ in range(args.n)])
    shuffles = dinuc_shuffle(x, args.k, seed=0)  # (n, k, L, 4)
    output_length = max(args.length // 4, 8)
    dilated = two_heads(tf_keras, chrombpnet_like(tf_keras, args.length, output_length=output_length))
    plain = two_heads(tf_keras, chrombpnet_like(tf_keras, args.length, output_length=output_length, dilated=False))

    rows = {}
    start = time.perf_counter()
    explainer = tfshap.compile(dilated, shuffled_references(args.k, seed=0))
    compile_s = time.perf_counter() - start
    first = explainer.explain(x, references=shuffles)
    rows["tfshap"] = (lambda: explainer.explain(x, references=shuffles),
                      f"compile {compile_s:.1f} s; additivity error {first.additivity_error:.1e}")
    rows["tfshap, hypothetical=True"] = (lambda: explainer.explain(x, references=shuffles, hypothetical=True), "")
    floor = per_sample_floor(dilated, 2, x.shape[1:])
    floor(x, shuffles)
    rows["plain-gradient floor"] = (lambda: floor(x, shuffles).numpy(), "2·N·K rows forward, 1 tf.gradients per output")
    plain_explainer = tfshap.compile(plain, shuffled_references(args.k, seed=0))
    plain_explainer.explain(x, references=shuffles)
    rows["tfshap, no dilation"] = (lambda: plain_explainer.explain(x, references=shuffles), "")
    plain_floor = per_sample_floor(plain, 2, x.shape[1:])
    plain_floor(x, shuffles)
    rows["plain-gradient floor, no dilation"] = (lambda: plain_floor(x, shuffles).numpy(), "")
    if not args.skip_shap:
        import shap

        by_sample = {tuple(map(int, np.argmax(s, -1)[:64])): r for s, r in zip(x, shuffles)}
        data = lambda inputs: [by_sample[tuple(map(int, np.argmax(inputs[0], -1)[:64]))]]  # the same shuffles
        shap_explainer = shap.DeepExplainer(plain, data)
        shap_explainer.shap_values(x[:1], check_additivity=False)
        rows["shap 0.51, no dilation"] = (lambda: shap_explainer.shap_values(x, check_additivity=False), "")

    for call, _ in rows.values():  # warm-up: every chunk traced and optimised before timing
        call()
    times = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, (call, _) in rows.items():
            times[name].append(best(call, 1))
    floors = {"": min(times["plain-gradient floor"]), "no dilation": min(times["plain-gradient floor, no dilation"])}
    import platform
    import subprocess

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")),
                      platform.processor())
    print(f"N={args.n} sequences of length {args.length}, K={args.k} shuffles each, 2 outputs; {model_name}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| method | best s | sequences/s | vs its floor | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, (_, note) in rows.items():
        t = min(times[name])
        floor_t = floors["no dilation" if "no dilation" in name else ""]
        print(f"| {name} | {t:.3f} | {args.n / t:.1f} | {t / floor_t:.2f}× | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
