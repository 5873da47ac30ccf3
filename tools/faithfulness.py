"""Faithfulness: DeepSHAP (tfshap, shap), expected and integrated gradients, and candidate rules,
against exact Shapley values on small trained models.

    TF_CPP_MIN_LOG_LEVEL=3 python tools/faithfulness.py                 # every model, shap included
    TF_CPP_MIN_LOG_LEVEL=3 python tools/faithfulness.py --models softmax_mlp maxpool --no-shap --seed 1
    TF_CPP_MIN_LOG_LEVEL=3 python tools/faithfulness.py --cost             # the rule sets' cost, not faithfulness

Every model is float64, has at most 12 input features, and is trained (Keras 3, seeded) on data
that ships with scikit-learn (diabetes; breast cancer, 12 features; the 8×8 digits cropped to
8×6 and average-pooled to 4×3 = 12 features) or on generated data. The same weights are loaded
into tf_keras, and tfshap must give the same values in both Kerases (checked, to 1e-9).
For each model, ``N`` held-out samples are explained against ``K`` training rows; the ground
truth is ``tools/shapley.py``: the exact Shapley value of ``v(S) = f(x_S, r_rest)`` averaged over
the ``K`` rows, which is what DeepSHAP approximates with the same rows.

Methods (columns):
- ``tfshap``: ``tfshap.compile(model, background)``, the default rules (exact Shapley values per
  max-pooling window of at most 16 inputs, the centred softmax split);
- ``shap``: ``shap.DeepExplainer`` 0.51, in a subprocess with ``TF_USE_LEGACY_KERAS=1`` on the
  same tf_keras model and weights (where it runs; otherwise the cell says why not);
- ``EG``: ``tfshap.GradientExplainer`` (expected gradients, 200 draws, seeded);
- ``IG``: ``method="integrated_gradients"`` (50 Gauss–Legendre nodes, averaged over the rows);
- tfshap's other rule sets, where they change something on the model:
  - ``crossmax``: ``rules="crossmax"``, cross-max for every max-pooling window (shap's rule, and
    tfshap's default before the Shapley split);
  - ``shapley``: ``rules="shapley"``, the 1-vs-rest softmax split: per output, the two-player
    Shapley split between its own logit and the log-sum-exp of the others, centred;
- candidate rules, prototyped here in NumPy (none is registered in tfshap):
  - ``RevealCancel``: DeepLIFT's RevealCancel (Shrikumar et al. 2017) on every elementwise
    nonlinearity after a linear map (the NumPy DeepLIFT below);
  - ``Shapley softmax``: exact Shapley values over the centred logits of the softmax
    (2^C coalitions for C classes), then centred (``, raw``: not centred);
  - ``1-vs-rest softmax, raw``: the ``shapley`` rule set's split without centring
    (:func:`softmax_one_vs_rest`).

The NumPy DeepLIFT handles chains of Dense/Conv2D (with an elementwise activation),
MaxPooling2D, Flatten and Softmax; with the default rules it reproduces tfshap, and with cross-max
pooling and the 1-vs-rest softmax tfshap's other rule sets (checked, and printed), so its
variants differ from tfshap only by the rule they change.
Scores against the exact values: relative L2 error ``‖φ − φ*‖ / ‖φ*‖`` over samples, features
and outputs; Spearman rank correlation of the features' values, per sample and output, averaged;
and the top-3 overlap of the features by ``|φ|``, averaged; for the candidates, also the share of
samples whose L2 error is below the default's (a paired comparison, robust to the spread between
models that a different ``--seed`` shows). Prints markdown tables; checks go to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# ``python tools/faithfulness.py`` puts tools/ first on sys.path, where coverage.py would shadow the
# ``coverage`` package that numba (imported by shap) looks for.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np

N_SAMPLES = 64
N_BACKGROUND = 16
TOP_K = 3
EG_SAMPLES = 200
CLASSES = 10
KERAS_AGREEMENT = 1e-9  # tf_keras and Keras 3 run the same float64 graph; 1e-9 leaves room for op order


# -- data --------------------------------------------------------------------------------------
def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float64 for a data set shipping with scikit-learn, or generated (seeded)."""
    from sklearn import datasets

    if name == "diabetes":
        x, y = datasets.load_diabetes(return_X_y=True)
        return _standardised(x), (y - y.mean()) / y.std()
    if name == "breast_cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
        return _standardised(x[:, :12]), y.astype(np.float64)
    if name == "digits12":
        images, y = datasets.load_digits(return_X_y=True)
        cropped = images.reshape(-1, 8, 8)[:, :, 1:7] / 16.0  # columns 0 and 7 are nearly always blank
        return cropped.reshape(-1, 4, 2, 3, 2).mean((2, 4)), y
    if name == "generated":
        rng = np.random.default_rng(7)
        x = rng.normal(size=(3000, 10))
        y = x[:, 0] * x[:, 1] + np.tanh(x[:, 2] + x[:, 3]) - x[:, 4] * np.maximum(x[:, 5], 0) + 0.5 * x[:, 6]
        return x, y
    raise KeyError(name)


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


# -- models ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A benchmark model: its data, input shape, loss, and the outputs explained (None: the model's)."""

    data: str
    shape: tuple
    loss: str
    outputs: tuple = (None,)
    epochs: int = 60


CASES = {
    "relu_mlp": Case("diabetes", (10,), "mse"),
    "tanh_mlp": Case("diabetes", (10,), "mse"),
    "sigmoid_mlp": Case("breast_cancer", (12,), "binary_crossentropy"),
    "softmax_mlp": Case("digits12", (12,), "sparse_categorical_crossentropy", (None, "logits")),
    "maxpool": Case("digits12", (4, 3, 1), "sparse_categorical_crossentropy", (None, "logits")),
    "gate": Case("generated", (10,), "mse"),
    "product": Case("generated", (10,), "mse"),
    "lstm": Case("digits12", (4, 3), "logits_crossentropy", epochs=40),
    "attention": Case("digits12", (4, 3), "logits_crossentropy", epochs=40),
}


def build(K, name: str):
    """The model ``name`` in the Keras module ``K``."""
    L = K.layers
    inp = K.Input(CASES[name].shape)
    if name == "relu_mlp":
        h = L.Dense(16, activation="relu", name="d1")(L.Dense(32, activation="relu", name="d0")(inp))
        return K.Model(inp, L.Dense(1, name="out")(h))
    if name == "tanh_mlp":
        h = L.Dense(8, activation="tanh", name="d1")(L.Dense(16, activation="tanh", name="d0")(inp))
        return K.Model(inp, L.Dense(1, name="out")(h))
    if name == "sigmoid_mlp":
        h = L.Dense(16, activation="sigmoid", name="d0")(inp)
        return K.Model(inp, L.Dense(1, activation="sigmoid", name="out")(h))
    if name == "softmax_mlp":
        return K.Model(inp, _softmax_head(K, L.Dense(24, activation="relu", name="d0")(inp)))
    if name == "maxpool":
        h = L.Conv2D(8, 2, padding="same", activation="relu", name="conv")(inp)
        h = L.Flatten(name="flat")(L.MaxPooling2D(2, strides=(2, 1), name="pool")(h))
        return K.Model(inp, _softmax_head(K, h))
    if name == "gate":  # a gated linear unit: value ⊙ sigmoid(gate)
        value, gate = L.Dense(8, name="value")(inp), L.Dense(8, activation="sigmoid", name="gate")(inp)
        return K.Model(inp, L.Dense(1, name="out")(L.Multiply(name="mul")([value, gate])))
    if name == "product":  # quadratic: (U x) ⊙ (V x)
        u, v = L.Dense(6, name="u")(inp), L.Dense(6, name="v")(inp)
        return K.Model(inp, L.Dense(1, name="out")(L.Multiply(name="mul")([u, v])))
    if name == "lstm":
        return K.Model(inp, L.Dense(CLASSES, name="logits")(L.LSTM(8, name="lstm")(inp)))
    if name == "attention":
        h = L.Dense(8, name="embed")(inp)
        attended = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(h, h)
        h = L.LayerNormalization(name="ln")(L.Add(name="residual")([h, attended]))
        return K.Model(inp, L.Dense(CLASSES, name="logits")(L.GlobalAveragePooling1D(name="gap")(h)))
    raise KeyError(name)


def _softmax_head(K, h):
    """Dense(10) logits, then a Softmax layer."""
    return K.layers.Softmax(name="softmax")(K.layers.Dense(CLASSES, name="logits")(h))


def weights_of(model) -> dict:
    """``{layer name: [arrays]}`` for every layer with weights."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers if layer.get_weights()}


def load_weights(model, weights: dict) -> None:
    """Set the weights of every layer named in ``weights``."""
    for name, arrays in weights.items():
        model.get_layer(name).set_weights(arrays)


def explained(K, model, output: str | None):
    """The model itself, or the sub-model from its input to the layer ``output``."""
    return model if output is None else K.Model(model.inputs[0], model.get_layer(output).output)


def float64(K):
    """Build float64 layers in ``K`` within the block (:func:`tfshap.testing.floatx`)."""
    from tfshap.testing import floatx

    return floatx(K, "float64")


def train(name: str, seed: int = 0):
    """Build ``name`` in Keras 3 (float64), train it (Adam, seeded); return (model, samples, background)."""
    import keras

    case = CASES[name]
    x, y = dataset(case.data)
    x = x.reshape(len(x), *case.shape)
    order = np.random.default_rng(seed).permutation(len(x))
    held_out, train_rows = order[:N_SAMPLES], order[N_SAMPLES:]
    with float64(keras):
        keras.utils.set_random_seed(seed)
        model = build(keras, name)
        loss = case.loss
        if loss == "logits_crossentropy":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
        model.fit(x[train_rows], y[train_rows], epochs=case.epochs, batch_size=64, verbose=0)
    background = x[train_rows[np.random.default_rng(seed + 1).choice(len(train_rows), N_BACKGROUND, replace=False)]]
    return model, x[held_out], background


# -- scores ------------------------------------------------------------------------------------
def scores(phi: np.ndarray, exact: np.ndarray, k: int = TOP_K) -> dict:
    """Relative L2 error, mean Spearman correlation and mean top-k overlap of ``phi`` against ``exact``;
    ``per_sample``: each sample's L2 error (for paired comparisons between methods)."""
    from scipy.stats import spearmanr

    n, n_out = exact.shape[0], exact.shape[-1]
    a, b = phi.reshape(n, -1, n_out), exact.reshape(n, -1, n_out)
    rho, overlap = [], []
    for i in range(n):
        for o in range(n_out):
            if np.ptp(b[i, :, o]) > 0 and np.ptp(a[i, :, o]) > 0:
                rho.append(spearmanr(a[i, :, o], b[i, :, o]).statistic)
            top_a, top_b = np.argsort(-np.abs(a[i, :, o]))[:k], np.argsort(-np.abs(b[i, :, o]))[:k]
            overlap.append(len(set(top_a) & set(top_b)) / k)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    per_sample = np.linalg.norm((a - b).reshape(n, -1), axis=1)
    spearman = float(np.mean(rho)) if rho else float("nan")
    return {"rel_l2": rel, "spearman": spearman, "topk": float(np.mean(overlap)), "per_sample": per_sample}


# -- NumPy DeepLIFT with switchable rules ------------------------------------------------------
@dataclass
class Dense:
    """``y = act(x A + b)`` on flat rows; Conv2D becomes one (its matrix, by convolving the unit basis)."""

    A: np.ndarray
    b: np.ndarray
    act: str


@dataclass
class WindowMax:
    """``y_o = max_t x[windows[o, t]]``: max pooling on flat channels-last rows."""

    windows: np.ndarray


ACTIVATIONS = {
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
}


def stages_of(model) -> list | None:
    """The model as NumPy stages, or None where it is not a chain of Dense/Conv2D/MaxPooling2D/Flatten/Softmax."""
    stages = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Flatten"):
            continue
        if kind in ("Dense", "Conv2D"):
            A, b = (layer.get_weights() if kind == "Dense" else _conv_matrix(layer))
            stages.append(Dense(np.asarray(A, np.float64), np.asarray(b, np.float64), layer.activation.__name__))
        elif kind == "MaxPooling2D":
            stages.append(WindowMax(_pool_windows(layer)))
        elif kind == "Softmax" and isinstance(stages[-1], Dense) and stages[-1].act == "linear":
            stages[-1].act = "softmax"
        else:
            return None
        if getattr(stages[-1], "act", "linear") not in (*ACTIVATIONS, "softmax"):
            return None
    return stages


def _shape(tensor) -> tuple:
    return tuple(int(s) for s in tensor.shape[1:])


def _conv_matrix(layer) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with ``conv(x) = x A + b`` on flat channels-last rows: the convolution of the unit basis."""
    import tensorflow as tf

    in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    kernel, bias = layer.get_weights()
    d = int(np.prod(in_shape))
    basis = np.eye(d).reshape(d, *in_shape)
    padding = layer.padding.upper()
    conv = tf.nn.conv2d(basis, kernel, strides=layer.strides, padding=padding, dilations=layer.dilation_rate)
    A = conv.numpy().reshape(d, -1)
    return A, np.tile(bias, int(np.prod(out_shape[:-1])))


def _pool_windows(layer) -> np.ndarray:
    """(outputs, window) flat input indices of a VALID max pooling, channels last."""
    (h, w, c), (oh, ow, _) = _shape(layer.input), _shape(layer.output)
    (ph, pw), (sh, sw) = layer.pool_size, layer.strides
    if layer.padding.lower() != "valid":
        raise ValueError("the NumPy DeepLIFT takes VALID max pooling only")
    index = np.arange(h * w * c).reshape(h, w, c)
    corners = [(i * sh, j * sw, ch) for i in range(oh) for j in range(ow) for ch in range(c)]
    return np.array([index[i : i + ph, j : j + pw, ch].ravel() for i, j, ch in corners])


def forward(stages: list, x: np.ndarray) -> list:
    """The input of every stage and the output, for flat rows ``x``."""
    values = [x]
    for stage in stages:
        z = values[-1]
        if isinstance(stage, WindowMax):
            values.append(z[:, stage.windows].max(-1))
        elif stage.act == "softmax":
            values.append(_softmax(z @ stage.A + stage.b))
        else:
            values.append(ACTIVATIONS[stage.act][0](z @ stage.A + stage.b))
    return values


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ratio(num: np.ndarray, den: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``num / den``, and ``fallback`` (the slope) where ``|den|`` is at rounding level."""
    close = np.abs(den) <= 1e-12 * (1 + np.abs(num))
    return np.where(close, fallback, num / np.where(close, 1.0, den))


def deeplift(stages: list, x: np.ndarray, references: np.ndarray, rules: dict) -> np.ndarray:
    """DeepSHAP values ``(n, *shape, n_outputs)``: per (sample, reference) pair multipliers, averaged over references.

    ``rules``: ``act`` ("rescale" | "reveal_cancel"), ``pool`` ("crossmax" | "shapley"),
    ``softmax`` (a key of :data:`SOFTMAX_RULES`).
    """
    n, k = len(x), len(references)
    X = np.repeat(x.reshape(n, -1), k, 0)
    R = np.tile(references.reshape(k, -1), (n, 1))
    vx, vr = forward(stages, X), forward(stages, R)
    n_out = vx[-1].shape[1]
    g = np.broadcast_to(np.eye(n_out), (len(X), n_out, n_out))
    for i in reversed(range(len(stages))):
        g = _backward(stages[i], vx[i], vr[i], g, rules)
    phi = (g * (X - R)[:, None, :]).reshape(n, k, n_out, -1).mean(1)
    return np.moveaxis(phi, 1, -1).reshape(*x.shape, n_out)


def _backward(stage, x: np.ndarray, r: np.ndarray, g: np.ndarray, rules: dict) -> np.ndarray:
    """Multipliers of the stage's input, given those of its output ``g`` ``(pairs, outputs, width)``."""
    if isinstance(stage, WindowMax):
        return _window_max_backward(stage.windows, x, r, g, rules["pool"])
    zx, zr = x @ stage.A + stage.b, r @ stage.A + stage.b
    if stage.act == "softmax":
        M = SOFTMAX_RULES[rules["softmax"]](zx, zr)
        return np.einsum("pok,pkj,dj->pod", g, M, stage.A)
    if rules["act"] == "reveal_cancel" and stage.act != "linear":
        return _reveal_cancel_backward(stage, x, r, g)
    f, slope = ACTIVATIONS[stage.act]
    m = _ratio(f(zx) - f(zr), zx - zr, slope((zx + zr) / 2))
    return (g * m[:, None, :]) @ stage.A.T


def _reveal_cancel_backward(stage: Dense, x: np.ndarray, r: np.ndarray, g: np.ndarray) -> np.ndarray:
    """DeepLIFT RevealCancel through ``act(x A + b)`` (kundajelab/deeplift's Dense + RevealCancel).

    ``Δz⁺ = Δx⁺A⁺ + Δx⁻A⁻``, ``Δz⁻ = Δx⁺A⁻ + Δx⁻A⁺`` (split by the sign of each term ``Δx_i A_ij``);
    ``Δy⁺ = ½[f(zr + Δz⁺) − f(zr)] + ½[f(zr + Δz) − f(zr + Δz⁻)]``, ``Δy⁻`` symmetric (the two-player
    Shapley split between the positive and negative parts); ``m± = Δy± / Δz±``; back through the
    matrix, an input with ``Δx_i > 0`` takes ``g m⁺ A⁺ᵀ + g m⁻ A⁻ᵀ``, one with ``Δx_i < 0`` the
    mirror, and ``Δx_i = 0`` the mean of both.
    """
    f, slope = ACTIVATIONS[stage.act]
    A_pos, A_neg = np.maximum(stage.A, 0), np.minimum(stage.A, 0)
    dx = x - r
    dx_pos, dx_neg = np.maximum(dx, 0), np.minimum(dx, 0)
    dz_pos, dz_neg = dx_pos @ A_pos + dx_neg @ A_neg, dx_pos @ A_neg + dx_neg @ A_pos
    zr = r @ stage.A + stage.b
    dy_pos = 0.5 * (f(zr + dz_pos) - f(zr)) + 0.5 * (f(zr + dz_pos + dz_neg) - f(zr + dz_neg))
    dy_neg = 0.5 * (f(zr + dz_neg) - f(zr)) + 0.5 * (f(zr + dz_pos + dz_neg) - f(zr + dz_pos))
    m_pos = _ratio(dy_pos, dz_pos, slope(zr + dz_neg / 2))
    m_neg = _ratio(dy_neg, dz_neg, slope(zr + dz_pos / 2))
    g_pos, g_neg = g * m_pos[:, None, :], g * m_neg[:, None, :]
    to_pos = g_pos @ A_pos.T + g_neg @ A_neg.T  # an input that rose: its terms Δx_i A_ij > 0 went to z⁺
    to_neg = g_pos @ A_neg.T + g_neg @ A_pos.T
    sign = np.sign(dx)[:, None, :]
    return np.where(sign > 0, to_pos, np.where(sign < 0, to_neg, 0.5 * (g_pos + g_neg) @ stage.A.T))


def _window_max_backward(windows: np.ndarray, x: np.ndarray, r: np.ndarray, g: np.ndarray, rule: str) -> np.ndarray:
    """Cross-max (tfshap's rule) or exact Shapley values per window, as multipliers ``φ_t / Δx_t``."""
    xw, rw = x[:, windows], r[:, windows]  # (pairs, outputs, window)
    if rule == "crossmax":
        x_wins = xw.max(-1) >= rw.max(-1)
        chosen = np.where(x_wins, xw.argmax(-1), rw.argmax(-1))
        at = lambda v: np.take_along_axis(v, chosen[..., None], -1)[..., 0]
        m_at = _ratio(xw.max(-1) - rw.max(-1), at(xw) - at(rw), np.ones_like(chosen, dtype=x.dtype))
        m = np.where(np.arange(windows.shape[1]) == chosen[..., None], m_at[..., None], 0.0)
    elif rule == "shapley":
        phi = max_shapley(xw, rw)
        m = _ratio(phi, xw - rw, np.zeros_like(phi))
    else:
        raise ValueError(f"pool rule must be 'crossmax' or 'shapley'; got {rule!r}")
    out = np.zeros((*g.shape[:2], x.shape[1]))
    for t in range(windows.shape[1]):  # within one window offset t, the windows' inputs are distinct
        out[:, :, windows[:, t]] += g * m[:, None, :, t]
    return out


def max_shapley(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Exact Shapley values of ``v(S) = max(x_S ∪ r_rest)`` over the last axis (w players), in O(w²), no enumeration.

    ``v(S) = min + ∫ 1[v(S) > t] dt``, and on each interval between consecutive values of ``x ∪ r``
    the game ``1[v(S) > t]`` is constant. Where some player has both ``x_i, r_i > t`` it is 1 for
    every ``S`` (no credit). Otherwise it is ``1 − 1[S ∩ P = ∅ and N ⊆ S]`` with ``P = {x_i > t ≥ r_i}``
    (``p`` players) and ``N = {r_i > t ≥ x_i}`` (``q`` players), whose Shapley values are
    ``q! (p − 1)! / (p + q)!`` for each player of ``P`` and ``−(q − 1)! p! / (p + q)!`` for each of
    ``N`` (sums of unanimity games; the Beta integrals ``B(q + 1, p)`` and ``B(q, p + 1)``).
    So ``φ_i = Σ_intervals length · that weight``.
    """
    from scipy.special import gammaln

    values = np.sort(np.concatenate([x, r], -1), -1)
    lower, length = values[..., :-1], np.diff(values, axis=-1)  # the intervals (lower, lower + length)
    above_x = x[..., :, None] > lower[..., None, :]  # (..., player, interval): x_i above the interval
    above_r = r[..., :, None] > lower[..., None, :]
    in_p, in_n = above_x & ~above_r, above_r & ~above_x
    live = ~np.any(above_x & above_r, -2, keepdims=True)
    p, q = in_p.sum(-2, keepdims=True), in_n.sum(-2, keepdims=True)
    log_total = gammaln(p + q + 1)
    weight_p = np.exp(gammaln(q + 1) + gammaln(np.maximum(p, 1)) - log_total)
    weight_n = -np.exp(gammaln(np.maximum(q, 1)) + gammaln(p + 1) - log_total)
    per_interval = np.where(in_p, weight_p, 0.0) + np.where(in_n, weight_n, 0.0)
    return np.sum(per_interval * live * length[..., None, :], -1)


def _exact_shapley(f, x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Shapley values over the last axis of ``x`` against ``r`` (same shape), ``f``: ``(..., w) -> (..., o)``."""
    shapley = load_sibling("shapley")
    w = x.shape[-1]
    masks = shapley.coalitions(w)
    v = f(np.where(masks, x[..., None, :], r[..., None, :]))  # (..., 2^w, o)
    return np.einsum("sj,...so->...jo", shapley.shapley_weights(w), v)


# -- softmax rules: M[p, o, j] = the multiplier of p_o with respect to z_j ----------------------
def softmax_default(zx: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """tfshap's before centring: e = exp(z − c) (rescale), s = Σe, log p = z − c − log s (rescale on log),
    p = exp(log p) (rescale)."""
    c = np.maximum(zx.max(-1, keepdims=True), zr.max(-1, keepdims=True))
    ex, er = np.exp(zx - c), np.exp(zr - c)
    m_e = _ratio(ex - er, zx - zr, np.exp((zx + zr) / 2 - c))
    lsx = np.log(ex.sum(-1, keepdims=True))
    lsr = np.log(er.sum(-1, keepdims=True))
    sx, sr = np.exp(lsx), np.exp(lsr)
    m_log = _ratio(lsx - lsr, sx - sr, 2 / (sx + sr))
    lpx, lpr = zx - c - lsx, zr - c - lsr
    m_p = _ratio(np.exp(lpx) - np.exp(lpr), lpx - lpr, np.exp((lpx + lpr) / 2))
    return m_p[:, :, None] * (np.eye(zx.shape[1]) - (m_e * m_log)[:, None, :])


def _centred(rule):
    """The rule at centred logits, its multipliers then through the centring (tfshap's softmax rules):
    ``z̃ = z − (w·z)·1`` with ``w ∝ (p(x) + p(r))/2`` over the logits with probability in both rows,
    ``m_z = m̃ − w · Σ_j m̃``."""

    def centred(zx, zr):
        px, pr = _softmax(zx), _softmax(zr)
        shared = np.where((px > 0) & (pr > 0), (px + pr) / 2, 0.0)
        total = shared.sum(-1, keepdims=True)
        w = np.where(total > 1e-6, shared / np.where(total > 1e-6, total, 1.0), (px + pr) / 2)
        M = rule(zx - (w * zx).sum(-1, keepdims=True), zr - (w * zr).sum(-1, keepdims=True))
        return M - w[:, None, :] * M.sum(-1, keepdims=True)

    return centred


def softmax_projected(zx: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """The default's multipliers centred, the logits not: misses summation-to-delta by mean(m)·ΣΔz (not offered)."""
    M = softmax_default(zx, zr)
    return M - M.mean(-1, keepdims=True)


def softmax_shapley(zx: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """Exact Shapley values of the softmax over its logits as players: ``M[o, j] = φ_j(p_o) / Δz_j``."""
    phi = _exact_shapley(_softmax, zx, zr)  # (pairs, players j, outputs o)
    return np.swapaxes(_ratio(phi, (zx - zr)[:, :, None], np.zeros_like(phi)), 1, 2)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(t / 2))


def softmax_one_vs_rest(zx: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """Two players per output o: its logit a = z_o and the rest b = log Σ_{j≠o} e^{z_j}, with p_o = σ(a − b).

    ``φa = ½[σ(ax − br) − σ(ar − br)] + ½[σ(ax − bx) − σ(ar − bx)]``, ``φb = Δp_o − φa`` (two-player
    Shapley, exact for two classes); ``m_a = φa / Δa``; ``φb`` reaches the other logits through
    ``b = log s_o`` as in the default rule: ``m_j = (φb / Δb) · m_log,o · m_e,j`` with
    ``m_e,j = Δe^{z_j − c} / Δz_j`` and ``m_log,o = Δlog s_o / Δs_o``.
    """
    c = np.maximum(zx.max(-1, keepdims=True), zr.max(-1, keepdims=True))
    ex, er = np.exp(zx - c), np.exp(zr - c)
    m_e = _ratio(ex - er, zx - zr, np.exp((zx + zr) / 2 - c))
    n_classes = zx.shape[1]
    others = 1 - np.eye(n_classes)  # others[o, j]: j ≠ o
    sx, sr = ex @ others, er @ others  # s_o = Σ_{j≠o} e^{z_j − c}, (pairs, o)
    bx, br = np.log(sx), np.log(sr)
    ax, ar = zx - c, zr - c
    phi_a = 0.5 * (_sigmoid(ax - br) - _sigmoid(ar - br)) + 0.5 * (_sigmoid(ax - bx) - _sigmoid(ar - bx))
    phi_b = _sigmoid(ax - bx) - _sigmoid(ar - br) - phi_a
    slope = lambda t: _sigmoid(t) * (1 - _sigmoid(t))
    mid_a, mid_b = (ax + ar) / 2, (bx + br) / 2
    m_a = _ratio(phi_a, ax - ar, 0.5 * (slope(mid_a - br) + slope(mid_a - bx)))
    m_b = _ratio(phi_b, bx - br, -0.5 * (slope(ar - mid_b) + slope(ax - mid_b)))
    m_log = _ratio(bx - br, sx - sr, 2 / (sx + sr))
    M = (m_b * m_log)[:, :, None] * m_e[:, None, :] * others
    return M + m_a[:, :, None] * np.eye(n_classes)


SOFTMAX_RULES = {
    "default": softmax_default,  # before centring: a common shift of the logits gets credit
    "centred": _centred(softmax_default),  # tfshap's default
    "shapley": _centred(softmax_shapley),
    "shapley_raw": softmax_shapley,
    "projected": softmax_projected,
    "one_vs_rest": _centred(softmax_one_vs_rest),  # tfshap's rules="shapley"
    "one_vs_rest_raw": softmax_one_vs_rest,
}
#: tfshap's default rules, in NumPy.
DEFAULT_RULES = {"act": "rescale", "pool": "shapley", "softmax": "centred"}
#: tfshap's other rule sets, in NumPy: name -> the rules they change (checked against tfshap).
RULE_SETS = {"crossmax": {"pool": "crossmax"}, "shapley": {"softmax": "one_vs_rest"}}
#: The NumPy variants reported: name -> the rules they change, and which stages they need to differ.
VARIANTS = {
    "RevealCancel": ({"act": "reveal_cancel"}, ("act",)),
    "Shapley softmax": ({"softmax": "shapley"}, ("softmax",)),
    "Shapley softmax, raw": ({"softmax": "shapley_raw"}, ("softmax",)),
    "1-vs-rest softmax, raw": ({"softmax": "one_vs_rest_raw"}, ("softmax",)),
}


def _uses(stages: list, what: str) -> bool:
    if what == "pool":
        return any(isinstance(s, WindowMax) for s in stages)
    if what == "softmax":
        return any(getattr(s, "act", None) == "softmax" for s in stages)
    return any(getattr(s, "act", "linear") not in ("linear", "softmax") for s in stages)


# -- running -----------------------------------------------------------------------------------
def load_sibling(name: str):
    """A module of tools/ by path, under its own name (tools/ stays off sys.path: its coverage.py
    would shadow the ``coverage`` package)."""
    module_name = f"tfshap_tools_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def row_name(name: str, output: str | None) -> str:
    return name if output is None else f"{name} ({output})"


def explain_model(name: str, trained: tuple, shap_values: dict, log) -> dict:
    """Every method's scores on the trained model ``name``, per output explained: ``{row: {method: scores}}``."""
    import keras
    import tf_keras

    import tfshap

    shapley = load_sibling("shapley")
    model, x, background = trained
    weights = weights_of(model)
    with float64(tf_keras):
        model2 = build(tf_keras, name)
    load_weights(model2, weights)
    results = {}
    for output in CASES[name].outputs:
        row = row_name(name, output)
        start = time.perf_counter()
        target = explained(keras, model, output)
        exact = shapley.shapley_values(target, x, background)
        values = {"tfshap": tfshap.compile(model, background, output=output).explain(x).values}
        other = tfshap.compile(model2, background, output=output).explain(x).values
        gap = float(np.max(np.abs(other - values["tfshap"])))
        if gap > KERAS_AGREEMENT * max(1.0, float(np.max(np.abs(values["tfshap"])))):
            raise AssertionError(f"{row}: tf_keras and Keras 3 disagree by {gap:.2e}")
        values["EG"] = tfshap.GradientExplainer(target, background).shap_values(x, nsamples=EG_SAMPLES, rseed=0)
        values["IG"] = tfshap.compile(model, background, output=output, method="integrated_gradients").explain(x).values
        if row in shap_values:
            values["shap"] = shap_values[row]
        for rule_set in _rule_sets_changing(target):
            values[rule_set] = tfshap.compile(model, background, output=output, rules=rule_set).explain(x).values
        checks = _numpy_variants(target, x, background, values)
        results[row] = {m: scores(v, exact) if isinstance(v, np.ndarray) else v for m, v in values.items()}
        results[row]["_checks"] = {"keras_gap": gap, **checks}
        log(f"{row}: {time.perf_counter() - start:.1f}s; checks {results[row]['_checks']}")
    return results


def _rule_sets_changing(model) -> list:
    """tfshap's rule sets other than the default that treat some layer of ``model`` differently."""
    kinds = {type(layer).__name__ for layer in model.layers}
    rule_sets = (("crossmax", {"MaxPooling2D"}), ("shapley", {"Softmax", "MultiHeadAttention"}))
    return [name for name, layers in rule_sets if kinds & layers]


def _numpy_variants(target, x, background, values: dict) -> dict:
    """Add the NumPy DeepLIFT variants that change something on this model; return the checks made."""
    stages = stages_of(target)
    if stages is None:
        return {}
    base = deeplift(stages, x, background, DEFAULT_RULES)
    checks = {"numpy_vs_tfshap": float(np.max(np.abs(base - values["tfshap"])))}
    for rule_set, change in RULE_SETS.items():
        if rule_set in values:
            numpy_values = deeplift(stages, x, background, {**DEFAULT_RULES, **change})
            checks[f"numpy_vs_tfshap_{rule_set}"] = float(np.max(np.abs(numpy_values - values[rule_set])))
    for variant, (change, needs) in VARIANTS.items():
        if all(_uses(stages, what) for what in needs):
            values[variant] = deeplift(stages, x, background, {**DEFAULT_RULES, **change})
            checks[f"{variant} sum gap"] = float(np.max(np.abs(_totals(values[variant]) - _totals(base))))
    return checks


def _totals(phi: np.ndarray) -> np.ndarray:
    return phi.reshape(len(phi), -1, phi.shape[-1]).sum(1)


# -- shap, in a subprocess with tf.keras = tf_keras --------------------------------------------
def shap_in_subprocess(trained: dict, log) -> dict:
    """shap.DeepExplainer's values ``{row: values or 'fails: reason'}`` on the same models and weights."""
    with tempfile.TemporaryDirectory() as tmp:
        request = Path(tmp) / "request.npz"
        arrays = {}
        for name, (model, x, background) in trained.items():
            arrays[f"{name}/x"], arrays[f"{name}/background"] = x, background
            for layer, ws in weights_of(model).items():
                for i, w in enumerate(ws):
                    arrays[f"{name}/w/{layer}/{i}"] = w
        np.savez(request, **arrays)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, __file__, "--shap-worker", str(request)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log(f"the shap process failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
            return {}
        out = dict(np.load(Path(tmp) / "shap.npz"))
    return {key[: -len("/values")]: v for key, v in out.items() if key.endswith("/values")} | {
        key[: -len("/error")]: str(v) for key, v in out.items() if key.endswith("/error")
    }


def shap_worker(request: str) -> None:
    """In the subprocess: shap.DeepExplainer on every requested model (tf.keras, float64, the given weights)."""
    import shap
    import tensorflow as tf

    arrays = dict(np.load(request))
    names = [key.split("/")[0] for key in arrays if key.endswith("/x")]
    out = {}
    tf.keras.backend.set_floatx("float64")
    for name in names:
        model = build(tf.keras, name)
        prefix = f"{name}/w/"
        weights = {}
        for key, array in arrays.items():
            if key.startswith(prefix):
                layer, i = key[len(prefix) :].rsplit("/", 1)
                weights.setdefault(layer, {})[int(i)] = array
        load_weights(model, {layer: [ws[i] for i in sorted(ws)] for layer, ws in weights.items()})
        x, background = arrays[f"{name}/x"], arrays[f"{name}/background"]
        for output in CASES[name].outputs:
            row = row_name(name, output)
            target = model if output is None else (model.inputs[0], model.get_layer(output).output)
            try:
                values = shap.DeepExplainer(target, background).shap_values(x, check_additivity=False)
                out[f"{row}/values"] = np.asarray(values).reshape(*x.shape, -1)
            except Exception as exc:  # noqa: BLE001  (the table reports why shap did not run)
                out[f"{row}/error"] = np.array(f"{type(exc).__name__}: {_reason(exc)}")
    np.savez(Path(request).parent / "shap.npz", **out)


def _reason(exc: Exception) -> str:
    """The informative line of an error (Keras wraps the cause between a heading and the call's arguments)."""
    noise = ("•", "Arguments received", "Call arguments received", "Exception encountered", "File ", "in user code")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(noise)]
    return (lines or [""])[-1][:160]


# -- the tables --------------------------------------------------------------------------------
METHODS = ["tfshap", "shap", "EG", "IG"]
CANDIDATES = ["tfshap", *RULE_SETS, *VARIANTS]
METRICS = {
    "rel_l2": ("relative L2 error ‖φ − φ*‖ / ‖φ*‖ (lower is better)", "{:.3f}"),
    "spearman": ("Spearman rank correlation with φ*, mean over samples and outputs (higher is better)", "{:.3f}"),
    "topk": (f"top-{TOP_K} overlap with φ* by |φ|, mean over samples and outputs (higher is better)", "{:.2f}"),
}


def add_wins(results: dict) -> None:
    """Each candidate's ``wins``: the share of samples where its L2 error is below the default's (paired)."""
    for result in results.values():
        base = result["tfshap"]["per_sample"]
        for method in CANDIDATES[1:]:
            if isinstance(result.get(method), dict):
                result[method]["wins"] = float(np.mean(result[method]["per_sample"] < base - 1e-12 * (1 + base)))


def _cell(value, cell) -> str:
    """A table cell: "—" where the method does not apply, "fails" where it raised, else ``cell(scores)``."""
    if value is None:
        return "—"
    return "fails" if isinstance(value, str) else cell(value)


def _table(results: dict, methods: list, cell) -> list:
    methods = [m for m in methods if any(m in r for r in results.values())]
    lines = ["| model | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for row, result in results.items():
        cells = [_cell(result.get(m), cell) for m in methods]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def render(results: dict) -> str:
    """Markdown: one table per metric for the methods, and one for the candidate rules (all three metrics a cell)."""
    parts = []
    for metric, (title, fmt) in METRICS.items():
        table = _table(results, METHODS, lambda s, m=metric, f=fmt: f.format(s[m]))
        parts.append("\n".join([f"**{title}**", "", *table]))
    failures = sorted({f"{row}: {v}" for row, r in results.items() for v in r.values() if isinstance(v, str)})
    if failures:
        parts.append("shap fails on:\n" + "\n".join(f"- {f}" for f in failures))
    legend = (
        "**rule sets and candidate rules: relative L2 error (the share of samples where it beats tfshap's default)**"
        " (`crossmax`, `shapley`: tfshap's rule sets; the others NumPy prototypes)"
    )
    wins = lambda s: f"{s['rel_l2']:.3f}" + (f" ({100 * s['wins']:.0f}%)" if "wins" in s else "")
    parts.append("\n".join([legend, "", *_table(results, CANDIDATES, wins)]))
    ranks = lambda s: f"{s['spearman']:.3f} / {s['topk']:.2f}"
    title = f"**rule sets and candidate rules: Spearman / top-{TOP_K} overlap**"
    parts.append("\n".join([title, "", *_table(results, CANDIDATES, ranks)]))
    return "\n\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-shap", action="store_true", help="skip shap.DeepExplainer (its subprocess)")
    parser.add_argument("--seed", type=int, default=0, help="the data split, initial weights and background rows")
    parser.add_argument("--cost", action="store_true",
                        help="instead: time each rule set on tools/bench.py's digits CNN and wide CNN")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per rule set with --cost")
    parser.add_argument("--shap-worker", metavar="REQUEST", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shap_worker:
        shap_worker(args.shap_worker)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.cost:
        print(cost_table(args.repeats))
        return
    log = lambda text: print(text, file=sys.stderr, flush=True)
    start = time.perf_counter()
    trained = {name: train(name, args.seed) for name in args.models}
    log(f"trained: {time.perf_counter() - start:.0f}s")
    shap_values = {} if args.no_shap else shap_in_subprocess(trained, log)
    log(f"shap: {time.perf_counter() - start:.0f}s")
    results = {}
    for name in args.models:
        results.update(explain_model(name, trained[name], shap_values, log))
    add_wins(results)
    print(render(results))
    print(f"\n{N_SAMPLES} samples × {N_BACKGROUND} reference rows per model, seed {args.seed};"
          f" {time.perf_counter() - start:.0f}s in all"
          f" on {_cpu_model()} ({os.cpu_count()} cores).")


#: tools/bench.py's workloads timed by ``--cost``: name -> (samples N, background rows K).
COST_WORKLOADS = {"cnn": (32, 100), "wide_cnn": (4, 20), "transformer": (16, 50)}


def cost_table(repeats: int) -> str:
    """Markdown: seconds per explanation under each rule set and the plain-gradient floor, round robin in one
    process (tools/bench.py's models, samples and timing), and each one's time against the default rules."""
    import tfshap
    from tfshap.demo import load_digits_data

    bench = load_sibling("bench")
    data = load_digits_data()
    lines = ["| workload | rules | best s | median s | best vs default | CPU vs default | best vs floor | notes |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    load_before = os.getloadavg()[0]
    for name, (n, k) in COST_WORKLOADS.items():
        workload = bench.prepare_workload(name, argparse.Namespace(n=n, k=k, epochs=3), data)
        methods = {}
        model, background = workload["model"], workload["background"]
        for rules in tfshap.registry.rule_sets():
            compile_explainer = lambda model=model, background=background, rules=rules: tfshap.compile(
                model, background, rules=rules)
            call, note, _, _ = bench._compiled(compile_explainer, workload["samples"])
            methods[rules] = (call, note)
        methods[bench.FLOOR] = bench.tfshap_and_floor(workload)[bench.FLOOR]
        rows = {row[2]: row for row in bench.time_methods(workload, methods, repeats)}
        default, floor = rows["default"], rows[bench.FLOOR]
        for method, (label, _, _, best, median, cpu, note) in rows.items():
            lines.append(f"| {label} | {method} | {best:.3f} | {median:.3f} | {best / default[3]:.2f}× "
                         f"| {cpu / default[5]:.2f}× | {best / floor[3]:.2f}× | {note} |")
    lines += ["", *window_cost_lines(repeats)]
    lines.append(f"\n{repeats} timed calls each, round robin, after a warm-up; the best counts. 1-minute load "
                 f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {_cpu_model()} "
                 f"({os.cpu_count()} cores).")
    return "\n".join(lines)


def window_cost_lines(repeats: int, inputs: int = 1 << 22, sizes=(4, 9, 16, 25)) -> list:
    """Markdown: the Shapley split of a window max against cross-max, alone, on ``inputs`` float32 values in windows
    of each size (best of ``repeats``), with the ops and tracing time of the Shapley split's graph."""
    import tensorflow as tf

    from tfshap.rewrite_rules import pooling

    rng = np.random.default_rng(0)
    warm = tf.TensorSpec([None, 2], tf.float32)
    tf.function(pooling.shapley_max_multipliers).get_concrete_function(warm, warm)  # the first trace's set-up
    lines = ["| window w | Shapley split s | cross-max s | ratio | Shapley graph ops | tracing s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w in sizes:
        x, r = (tf.constant(rng.normal(size=(inputs // w, w)), tf.float32) for _ in range(2))
        spec = tf.TensorSpec([None, w], tf.float32)
        start = time.perf_counter()
        shapley = tf.function(pooling.shapley_max_multipliers).get_concrete_function(spec, spec)
        tracing = time.perf_counter() - start
        cross = tf.function(pooling.cross_max_multipliers).get_concrete_function(spec, spec)
        best = [min(_seconds(fn, x, r) for _ in range(repeats)) for fn in (shapley, cross)]
        lines.append(f"| {w} | {best[0]:.3f} | {best[1]:.3f} | {best[0] / best[1]:.1f}× "
                     f"| {len(shapley.graph.get_operations())} | {tracing:.2f} |")
    return lines


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _cpu_model() -> str:
    """``lscpu``'s model name, from tools/bench.py (whose import sets TF_USE_LEGACY_KERAS=1: put back)."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    cpu_model = load_sibling("bench").cpu_model
    if before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = before
    return cpu_model()


if __name__ == "__main__":
    main()
