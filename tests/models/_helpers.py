"""Small helpers shared by the end-to-end tests: Keras flavours, floatx, additivity, data."""

from __future__ import annotations

import contextlib

import numpy as np

from tfshap.testing import floatx  # noqa: F401  (re-exported for the tests)

KERASES = ["tf_keras", "keras3"]


def keras_module(name: str):
    """The Keras module for a fixture parameter: tf_keras (Keras 2) or keras (Keras 3)."""
    if name == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras


@contextlib.contextmanager
def global_policy(K, name: str):
    """Build layers under the mixed-precision policy ``name``; put the previous one back.

    tf_keras's default is *no* global policy (layers then follow floatx): setting "float32"
    back instead would pin every later model to float32 whatever floatx says.
    """
    before = K.mixed_precision.global_policy()
    K.mixed_precision.set_global_policy(name)
    try:
        yield K
    finally:
        K.mixed_precision.set_global_policy(None if K.__name__ == "tf_keras" else before)


def totals(values) -> np.ndarray:
    """Sum of attributions over every input dimension (and every input): ``(n, n_outputs)``."""
    values = values if isinstance(values, list) else [values]
    return sum(np.asarray(v, np.float64).reshape(v.shape[0], -1, v.shape[-1]).sum(axis=1) for v in values)


def additivity_gap(values, base_values, outputs) -> np.ndarray:
    """``sum(values) + base_values - outputs`` computed here, independently of tfshap: ``(n, n_outputs)``."""
    return totals(values) + np.asarray(base_values, np.float64) - np.asarray(outputs, np.float64)


def assert_additive(attributions, atol: float) -> None:
    """Summation-to-delta for every sample and every output (recomputed here), and the reported error is within ``atol``."""
    gap = additivity_gap(attributions.values, attributions.base_values, attributions.outputs)
    assert np.max(np.abs(gap)) <= atol, f"additivity gap {np.max(np.abs(gap)):.3g} > {atol:.3g}"
    assert 0 <= attributions.additivity_error <= atol, f"reported additivity error {attributions.additivity_error:.3g} > {atol:.3g}"


def predict(model, x) -> np.ndarray:
    """The model's outputs at ``x``, every output flattened and concatenated: ``(n, n_outputs)``."""
    out = model(x, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in out], axis=1)


def digits(dtype="float32"):
    """scikit-learn's digits (bundled, no download) as 8x8x1 images scaled to [0, 1], and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(dtype)[..., None]
    return images, data.target.astype("int64")


def transformer_block(K, seq_len: int, dim: int, heads: int, causal: bool = False):
    """A transformer encoder block and a 2-way head, in the current floatx of Keras ``K``.

    Self-attention, residual add, LayerNormalization, a Dense feed-forward with gelu, a
    second residual add and LayerNormalization, GlobalAveragePooling1D, Dense(2).
    """
    inp = K.Input((seq_len, dim))
    attention = K.layers.MultiHeadAttention(heads, dim // heads, name="attention")
    attended = attention(inp, inp, use_causal_mask=causal)
    h = K.layers.LayerNormalization(name="norm_1")(K.layers.Add()([inp, attended]))
    ff = K.layers.Dense(2 * dim, activation="gelu", name="ff_1")(h)
    ff = K.layers.Dense(dim, name="ff_2")(ff)
    h = K.layers.LayerNormalization(name="norm_2")(K.layers.Add()([h, ff]))
    out = K.layers.Dense(2, name="head")(K.layers.GlobalAveragePooling1D()(h))
    return K.Model(inp, out)


def random_weights(model, rng) -> None:
    """Seeded weights for every variable: kernels ~ N(0, 1/fan_in), gammas ~ 1 + 0.1·N, the rest ~ 0.1·N."""
    values = []
    for variable, current in zip(model.weights, model.get_weights()):
        if current.ndim >= 2:
            values.append(rng.normal(scale=1 / np.sqrt(current.shape[0]), size=current.shape))
        elif "gamma" in variable.name:
            values.append(1 + 0.1 * rng.normal(size=current.shape))
        else:
            values.append(0.1 * rng.normal(size=current.shape))
    model.set_weights([v.astype(c.dtype) for v, c in zip(values, model.get_weights())])
