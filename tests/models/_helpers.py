"""Small helpers shared by the end-to-end tests: Keras flavours, floatx, additivity, data, float32 bounds."""

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


@contextlib.contextmanager
def replaced_rule(op_type: str, family: str, **kwargs):
    """``tfshap.register_rule(op_type, family, replace=True, **kwargs)`` within the block; the rule before
    it afterwards.

    Rules apply when an explainer is compiled: compile inside the block. The old rule object
    comes back as it was (``tfshap.registry.unregister_rule`` / ``restore_rule``).
    """
    from tfshap import registry

    old = registry.unregister_rule(op_type)
    registry.register_rule(op_type, family, replace=True, **kwargs)
    try:
        yield
    finally:
        registry.unregister_rule(op_type)
        if old is not None:
            registry.restore_rule(old)


def totals(values) -> np.ndarray:
    """Sum of attributions over every input dimension (and every input): ``(n, n_outputs)``."""
    values = values if isinstance(values, list) else [values]
    return sum(np.asarray(v, np.float64).reshape(v.shape[0], -1, v.shape[-1]).sum(axis=1) for v in values)


def additivity_gap(values, base_values, outputs) -> np.ndarray:
    """``sum(values) + base_values - outputs`` computed here, independently of tfshap: ``(n, n_outputs)``."""
    return totals(values) + np.asarray(base_values, np.float64) - np.asarray(outputs, np.float64)


def assert_additive(attributions, atol: float) -> None:
    """Summation-to-delta for every sample and every output (recomputed here), and the reported error is
    within ``atol``."""
    gap = additivity_gap(attributions.values, attributions.base_values, attributions.outputs)
    assert np.max(np.abs(gap)) <= atol, f"additivity gap {np.max(np.abs(gap)):.3g} > {atol:.3g}"
    assert 0 <= attributions.additivity_error <= atol, (
        f"reported additivity error {attributions.additivity_error:.3g} > {atol:.3g}"
    )


# -- float32 tolerances ------------------------------------------------------------------------------
#: float32's machine epsilon, 2**-23; its unit roundoff (the most one rounding moves a value,
#: relative to it) is half that.
EPS32 = float(np.finfo(np.float32).eps)

#: Roundings per layer besides its kernels: the op itself and a rule's Δy, Δx and their ratio
#: (or a normalisation's mean, variance and scaling).
ELEMENTWISE_ROUNDINGS = 4

#: λ of the probabilistic bound below: a bound of λ√n·u fails with probability at most
#: 2n·exp(−λ²/2), 1.6e-8 for n = 340 roundings (Higham & Mary 2019, Theorem 2.4).
LAMBDA = 7.0


def float32_bound(roundings: float, magnitude: float, eps: float = EPS32) -> float:
    """``min(n, λ√n) · u · magnitude``: how far ``n`` roundings can move a result (``u = eps / 2``).

    ``u`` is the most one rounding moves the value it produces, relative to it (float32's by
    default; pass float16's eps for a half-precision computation), and ``magnitude`` is the
    largest absolute value the roundings handle (for a sum, the sum of its terms' absolute
    values). ``n·u·magnitude`` is the first-order worst case, the errors adding up (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1); when the errors are
    independent and of mean zero, as rounding errors of unrelated values are, they grow as
    ``λ√n·u`` instead (N. J. Higham and T. Mary, "A new approach to probabilistic rounding error
    analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4), which is smaller once n > λ².
    """
    n = float(roundings)
    return min(n, LAMBDA * np.sqrt(n)) * (eps / 2) * float(magnitude)


def kernel_roundings(model, backward: bool = True) -> int:
    """Roundings on the longest way through ``model``'s kernels and layers (and back, with ``backward``).

    A dot product of n terms rounds n times: each kernel adds its fan-in to the forward pass and
    its fan-out to the backward pass (which multiplies by its transpose), its bias one more; each
    layer adds :data:`ELEMENTWISE_ROUNDINGS`, and a normalisation layer the sums of its mean and
    variance over a sample's features; all twice with ``backward``. Recurrent kernels are
    counted once: a test of a recurrent model multiplies by its number of steps itself.
    """
    passes = 2 if backward else 1
    count = 0
    for weight in model.weights:
        shape = tuple(weight.shape)
        if len(shape) >= 2:
            fan_in, fan_out = int(np.prod(shape[:-1])), int(np.prod(shape[:-2])) * shape[-1]
            count += fan_in + 1 + (fan_out if backward else 0)
    for layer in model.layers:
        count += passes * ELEMENTWISE_ROUNDINGS
        if "Normalization" in type(layer).__name__:
            count += passes * 2 * int(np.prod(layer.input.shape[1:]))
    return count


def explain_roundings(model, background_rows: int, steps: int = 1) -> int:
    """Roundings of one attribution: forward and backward through the model (``steps`` times for a loop),
    then the mean over the background rows."""
    return steps * kernel_roundings(model) + background_rows


def largest_activation(model, rows, sums: bool = True) -> float:
    """The largest absolute value the forward pass of ``model`` handles on ``rows``.

    That is the largest of the inputs, every layer's inputs and outputs, and every dot product's
    sum of absolute terms ``Σ|w_i·x_i| + |b|`` (Dense, plain convolutions, recurrent kernels, whose
    states are at most 1): a float32 sum of n terms errs by at most n·EPS32 times that
    (Higham, §3.1), and every rounding of the forward and backward passes is relative to one
    of these values, or to one times a derivative of at most 1. ``sums=False`` leaves the sums
    of absolute terms out, for kernels that accumulate in a wider type (half precision on CPU).
    """
    K = keras_module("tf_keras" if type(model).__module__.startswith("tf_keras") else "keras3")
    layers = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    ends = [_as_list(layer.input) for layer in layers], [_as_list(layer.output) for layer in layers]
    flat = [t for group in (*ends[0], *ends[1]) for t in group]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    got = _as_list(K.Model(inputs, flat)(rows, training=False))
    got = [np.asarray(a, np.float64) for a in got]
    largest = max(float(np.max(np.abs(a))) for a in [*(np.asarray(r, np.float64) for r in _as_list(rows)), *got])
    position = 0
    for layer, inputs in zip(layers, ends[0] if sums else []):
        first = got[position]
        position += len(inputs)
        largest = max(largest, _sum_of_absolute_terms(layer, first))
    return largest


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _sum_of_absolute_terms(layer, x: np.ndarray) -> float:
    """``max Σ|w_i·x_i| + |b|`` over the dot products of a Dense, plain convolution or recurrent layer; 0 otherwise."""
    import tensorflow as tf

    cell = getattr(layer, "cell", None)
    kernel = getattr(cell or layer, "kernel", None)
    if kernel is None or type(layer).__name__ not in _CONTRACTIONS:
        return 0.0
    kernel = np.abs(np.asarray(kernel, np.float64))
    bias = getattr(cell or layer, "bias", None)
    bias = 0.0 if bias is None else float(np.max(np.abs(np.asarray(bias, np.float64))))
    if kernel.ndim == 2:
        terms = np.abs(x) @ kernel
    else:
        strides, dilations = list(layer.strides), list(layer.dilation_rate)
        terms = tf.nn.convolution(np.abs(x), kernel, strides, layer.padding.upper(), dilations=dilations).numpy()
    recurrent = getattr(cell, "recurrent_kernel", None)
    if recurrent is not None:  # the state (tanh, sigmoid outputs) is at most 1 in absolute value
        terms = terms + np.abs(np.asarray(recurrent, np.float64)).sum(0)
    return float(np.max(terms)) + bias


#: The layers whose kernels :func:`_sum_of_absolute_terms` knows how to apply.
_CONTRACTIONS = {"Dense", "Conv1D", "Conv2D", "Conv3D", "LSTM", "GRU", "SimpleRNN"}


def forward_bound(model, rows, extra_roundings: int = 0) -> float:
    """How far a float32 forward pass of ``model`` on ``rows`` can be from the exact outputs.

    ``extra_roundings``: those of ops inside layers that have no kernel (attention's scores).
    """
    roundings = kernel_roundings(model, backward=False) + extra_roundings
    return float32_bound(roundings, largest_activation(model, rows))


def explain_bound(
    model, rows, background_rows: int, values=None, steps: int = 1, extra_roundings: int = 0, eps: float = EPS32
) -> float:
    """How far a float32 attribution of ``model``, or its additivity gap, can be from exact.

    Each value is carried forward and back through the model and averaged over
    ``background_rows`` pairs (:func:`explain_roundings`). The additivity gap is a sum of each
    layer's conservation errors, each relative to the sum of that layer's absolute
    contributions: with ``values`` (the attributions, any precision), their largest absolute
    sum over the input features joins the magnitude. ``steps``: how many times a loop runs the
    model's kernels (a recurrent layer's time steps). ``extra_roundings``: those of ops inside
    layers that have no kernel, forward and backward (attention's scores and combination).
    ``eps``: the machine epsilon of the dtype the model computes in.
    """
    magnitude = largest_activation(model, rows)
    if values is not None:
        per_input = values if isinstance(values, list) else [values]
        l1 = sum(np.abs(np.asarray(v, np.float64)).reshape(v.shape[0], -1, v.shape[-1]).sum(1) for v in per_input)
        magnitude = max(magnitude, float(np.max(l1)))
    return float32_bound(explain_roundings(model, background_rows, steps) + extra_roundings, magnitude, eps)


def assert_explains_inference(result, model, x, background, atol: float = 1e-12) -> None:
    """The explained outputs and base values are the model's own at inference (``training=False``).

    Additivity is measured against tfshap's traced forward pass: a model traced in another mode
    (dropout, noise, random layers active) would still add up. float64: within ``atol``.
    """
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=atol)
    np.testing.assert_allclose(result.base_values, predict(model, background).mean(0), rtol=0, atol=atol)


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
