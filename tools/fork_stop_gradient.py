"""What kundajelab's shap fork computes for ChromBPNet's profile target, checked numerically.

    python tools/fork_stop_gradient.py PATH/TO/kundajelab-shap-checkout

ChromBPNet explains ``f(x) = Σ_p s_p · c_p`` with ``c = logits − mean(logits)`` and
``s = softmax(stop_gradient(c))``, through the fork's ``TFDeepExplainer`` (TensorFlow 1 graph
mode). The fork has no handler for ``StopGradient``, so TensorFlow's own gradient (none) stops
there; the ``Softmax`` behind it still counts as varying, so the ``Mul`` gets the fork's
two-player rule, whose multiplier for ``c_p`` is ``s̄_p = ½(s_p(x) + s_p(r))``. The claim:

    φ_fork = mean_k Σ_p s̄_p(x, r_k) · φ_k[c_p]        (φ_k[c_p]: DeepSHAP of c_p for the pair (x, r_k))
    Σ φ_fork = f(x) − mean_k f(r_k) − mean_k Σ_p c̄_p Δs_p     (the last term, the softmax's share, is dropped)

This script runs the fork in a child process (``TF_USE_LEGACY_KERAS=1``, eager execution off)
on an undilated ``tfshap.sequence.chrombpnet_like`` model, computes the right-hand side with
tfshap (one reference row at a time, on the model of ``c``), and prints both, with tfshap's
own explanation (``StopGradient`` as the identity) beside them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES, N_REFERENCES, LENGTH, OUTPUT_LENGTH = 3, 4, 128, 60


def _fork_module(checkout: Path, folder: Path):
    """The fork's ``deep_tf.py`` as a module, its two package-relative imports replaced."""
    source = (checkout / "shap/explainers/deep/deep_tf.py").read_text()
    source = source.replace("from shap.explainers.explainer import Explainer", "class Explainer: pass")
    source = source.replace("from .misc import", "from fork_misc import")
    (folder / "fork_deep_tf.py").write_text(source)
    (folder / "fork_misc.py").write_text((checkout / "shap/explainers/deep/misc.py").read_text())
    sys.path.insert(0, str(folder))
    import fork_deep_tf

    return fork_deep_tf


def fork_side(checkout: Path, folder: Path) -> None:
    """In the child: the fork's attributions of ChromBPNet's profile target, saved to ``fork.npz``."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    import tf_keras

    from tfshap.sequence import chrombpnet_like

    data = np.load(folder / "data.npz")
    model = chrombpnet_like(tf_keras, LENGTH, dilated=False, output_length=OUTPUT_LENGTH)
    model.set_weights([data[f"w{i}"] for i in range(int(data["n_weights"]))])
    logits = model.outputs[0]
    # chrombpnet/evaluation/interpret/shap_utils.py, get_weightedsum_meannormed_logits
    meannormed_logits = logits - tf.reduce_mean(logits, axis=1)[:, None]
    softmax_out = tf.nn.softmax(tf.stop_gradient(meannormed_logits), axis=1)
    target = tf.reduce_sum(softmax_out * meannormed_logits, axis=1)
    x, references = data["x"], data["references"]

    def per_sample(sample):
        return [references[int(np.argmax([(row == sample[0]).all() for row in x]))]]

    session = tf.compat.v1.keras.backend.get_session()
    explainer = _fork_module(checkout, folder).TFDeepExplainer((model.input, target), per_sample, session=session)
    phi = explainer.shap_values(x)
    f_x = session.run(target, {model.input: x})
    f_r = session.run(target, {model.input: references.reshape(-1, *x.shape[1:])}).reshape(references.shape[:2])
    np.savez(folder / "fork.npz", phi=phi, f_x=f_x, f_r=f_r)


def _softmax(c: np.ndarray) -> np.ndarray:
    e = np.exp(c - c.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main(checkout: Path) -> None:
    """Run the fork in a child, then compare its values with the closed form and with tfshap's."""
    import tensorflow as tf
    import tf_keras

    import tfshap
    from tfshap.sequence import chrombpnet_like, dinuc_shuffle, profile_target

    model = chrombpnet_like(tf_keras, LENGTH, dilated=False, output_length=OUTPUT_LENGTH, seed=3)
    x = np.eye(4, dtype="float32")[np.random.default_rng(5).integers(0, 4, (N_SAMPLES, LENGTH))]
    references = dinuc_shuffle(x, N_REFERENCES, seed=1)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        weights = model.get_weights()
        np.savez(folder / "data.npz", x=x, references=references, n_weights=len(weights),
                 **{f"w{i}": w for i, w in enumerate(weights)})
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
        child = subprocess.run([sys.executable, __file__, str(checkout), "--fork-side", scratch], env=env, check=False)
        if child.returncode:
            raise SystemExit(f"the fork's run failed (exit status {child.returncode})")
        fork = dict(np.load(folder / "fork.npz"))
    logits = tf_keras.Model(model.inputs, model.outputs[0])
    centre = tf_keras.layers.Lambda(lambda t: t - tf.reduce_mean(t, axis=1, keepdims=True))
    centred = tf_keras.Model(model.inputs, centre(model.outputs[0]))

    def c(rows):
        z = logits.predict(rows, verbose=0).astype(np.float64)
        return z - z.mean(-1, keepdims=True)

    closed, dropped = np.zeros(x.shape), np.zeros(N_SAMPLES)
    for i in range(N_SAMPLES):
        for k in range(N_REFERENCES):
            per_pair = tfshap.compile(centred, references[i, k : k + 1]).explain(x[i : i + 1]).values[0]  # (L, 4, P)
            cx, cr = c(x[i : i + 1])[0], c(references[i, k : k + 1])[0]
            closed[i] += (per_pair * 0.5 * (_softmax(cx) + _softmax(cr))).sum(-1) / N_REFERENCES
            dropped[i] += (0.5 * (cx + cr) * (_softmax(cx) - _softmax(cr))).sum() / N_REFERENCES
    target = profile_target(model)
    identity = np.stack(
        [tfshap.compile(target, references[i]).explain(x[i : i + 1]).values[0, ..., 0] for i in range(N_SAMPLES)]
    )
    phi, scale = fork["phi"], np.abs(fork["phi"]).max()
    print(f"max |φ_fork − closed form| / max |φ_fork|   = {np.abs(phi - closed).max() / scale:.1e}")
    print(f"Σ φ_fork                                   = {phi.reshape(N_SAMPLES, -1).sum(1)}")
    print(f"f(x) − mean f(r)                           = {fork['f_x'] - fork['f_r'].mean(1)}")
    print(f"dropped share mean Σ_p c̄_p Δs_p             = {dropped}")
    print(f"Σ φ_fork + dropped share                   = {phi.reshape(N_SAMPLES, -1).sum(1) + dropped}")
    print(f"Σ φ_tfshap (StopGradient as the identity)  = {identity.reshape(N_SAMPLES, -1).sum(1)}")
    print(f"max |φ_tfshap − φ_fork| / max |φ_fork|     = {np.abs(identity - phi).max() / scale:.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    if "--fork-side" in sys.argv:
        fork_side(Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--fork-side") + 1]))
    else:
        main(Path(sys.argv[1]))
