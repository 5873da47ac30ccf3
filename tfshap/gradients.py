"""Expected gradients (``GradientExplainer``) and integrated gradients: the model's plain
gradients averaged along straight paths from reference rows to the samples.

Both estimate ``φ = E[∂f/∂z(r + α(x − r)) · (x − r)]``, over ``α`` and reference rows ``r``:

- expected gradients draw, per sample, ``nsamples`` pairs (background row, ``α ~ U(0, 1)``);
  the sums of ``φ`` approach ``f(x) − E[f(background)]`` as ``nsamples`` grows;
- integrated gradients take every baseline row with fixed quadrature nodes ``α_s`` and
  weights ``w_s`` (Gauss–Legendre by default, or the midpoint rule) and average over the
  baselines; the sums approach ``f(x) − mean f(baseline)`` as ``steps`` grows.

Every (sample, reference, α) row of a call goes through one ``tf.function``, in chunks of
``batch_size`` rows, with every explained output's gradient taken in the graph. No rewrite
is applied: any differentiable model works, and these are estimates (their error is
reported as ``Attributions.convergence_delta``), not DeepSHAP's exact values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from . import precision
from .attributions import Attributions, summed
from .base import CompiledExplainer
from .batching import default_batch_size
from .errors import CompileError
from .validate import as_arrays

METHOD_OPTIONS = {
    "expected_gradients": ("nsamples", "local_smoothing", "rseed"),
    "integrated_gradients": ("steps", "rule"),
}
RULES = ("gauss_legendre", "midpoint")
DEFAULT_RULE = "gauss_legendre"
DEFAULT_STEPS = 50
DEFAULT_NSAMPLES = 200
#: Up to this many outputs, one backward pass each; beyond, one pass over copies of the rows.
_SEPARATE_BACKWARDS_MAX = 16


# -- checking options -----------------------------------------------------------------------
def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _smoothing(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) or value < 0:
        raise ValueError(f"local_smoothing must be a finite number >= 0 (the noise std); got {value!r}")
    return float(value)


def _seed(value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
        raise ValueError(f"rseed must be None or a non-negative integer; got {value!r}")
    return None if value is None else int(value)


def _rule(value) -> str:
    if value not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {value!r}")
    return value


# -- the rows of an estimate ----------------------------------------------------------------
@dataclass
class Rows:
    """The (sample, reference row, α, weight) rows of an estimate, sample-major:
    ``φ[sample] = Σ weight · ∂f/∂z(r + α(x − r)) · (x − r)`` over the sample's rows."""

    sample: np.ndarray
    reference: np.ndarray
    alpha: np.ndarray
    weight: np.ndarray


def quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: midpoint ``α_s = (s + ½)/S, w_s = 1/S``; Gauss–Legendre mapped from [−1, 1]."""
    steps, rule = _positive_int(steps, "steps"), _rule(rule)
    if rule == "midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def expected_gradient_rows(n: int, n_background: int, nsamples: int, rng: np.random.Generator) -> Rows:
    """Per sample, ``nsamples`` draws of (background row, ``α ~ U(0, 1)``), each of weight ``1/nsamples``."""
    rows = n * nsamples
    return Rows(
        sample=np.repeat(np.arange(n), nsamples),
        reference=rng.integers(n_background, size=rows),
        alpha=rng.random(rows),
        weight=np.full(rows, 1.0 / nsamples),
    )


def integrated_gradient_rows(n: int, n_baselines: int, steps: int, rule: str) -> Rows:
    """Every sample × every baseline × every quadrature node; weight ``w_s / n_baselines``."""
    nodes, weights = quadrature(steps, rule)
    per_sample = n_baselines * steps
    return Rows(
        sample=np.repeat(np.arange(n), per_sample),
        reference=np.tile(np.repeat(np.arange(n_baselines), steps), n),
        alpha=np.tile(nodes, n * n_baselines),
        weight=np.tile(weights, n * n_baselines) / n_baselines,
    )


# -- the graph --------------------------------------------------------------------------------
class PathProgram:
    """The traced model's plain gradients along paths, for a chunk of rows, in one ``tf.function``.

    ``chunk(k, moments)(samples, background, sample_index, reference_index, alpha, weight,
    output_index, seed)`` returns, per input, ``(n_samples, *shape, k)``: the sum over the
    chunk's rows of each sample of ``weight · v`` with ``v = ∂f_j/∂z · (x − r)`` for the ``k``
    outputs ``j`` named per sample by ``output_index``; with ``moments``, also the sums of
    ``weight · v²`` (both in float64 then).
    """

    def __init__(self, traced, jit_compile: bool, local_smoothing: float, forward):
        self.traced = traced
        self.jit_compile = jit_compile
        self.local_smoothing = local_smoothing
        # batching.default_batch_size counts two rows per (sample, background) pair; a path row is one
        self.activation_bytes_per_row = _row_bytes(forward.get_concrete_function().graph) // 2
        self._chunk_fns: dict[tuple[int, bool], object] = {}

    def chunk(self, k: int, moments: bool):
        if (k, moments) not in self._chunk_fns:
            self._chunk_fns[k, moments] = self._trace_chunk(k, moments)
        return self._chunk_fns[k, moments]

    def _trace_chunk(self, k: int, moments: bool):
        specs = [tf.TensorSpec(s.shape, s.dtype) for s in self.traced.input_specs]
        copies = k if k > _SEPARATE_BACKWARDS_MAX else 1

        def chunk(samples, background, sample_index, reference_index, alpha, weight, output_index, seed):
            x = self._smoothed([tf.gather(s, sample_index) for s in samples], seed)
            r = [tf.gather(b, reference_index) for b in background]
            deltas = [xi - ri for xi, ri in zip(x, r)]
            points = [ri + _per_row(alpha, d) * d for ri, d in zip(r, deltas)]
            row_outputs = tf.gather(output_index, sample_index)  # (rows, k)
            if copies == 1:
                grads = self._gradients_per_output(points, row_outputs, k)
            else:
                grads = self._gradients_over_copies(points, row_outputs, k)
            n_samples = tf.shape(samples[0])[0]
            sums, squares = [], []
            for g, d in zip(grads, deltas):
                v = g * d[..., None]  # (rows, *shape, k)
                w = _per_row(weight, v)
                if moments:
                    v, w = tf.cast(v, tf.float64), tf.cast(w, tf.float64)
                    squares.append(tf.math.unsorted_segment_sum(w * v * v, sample_index, n_samples))
                sums.append(tf.math.unsorted_segment_sum(w * v, sample_index, n_samples))
            return sums + squares

        fn = tf.function(chunk, jit_compile=self.jit_compile, autograph=False)
        index = tf.TensorSpec([None], tf.int32)
        row_float = tf.TensorSpec([None], tf.float64)
        return fn.get_concrete_function(
            specs, specs, index, index, row_float, row_float,
            tf.TensorSpec([None, k], tf.int32), tf.TensorSpec([2], tf.int64),
        )

    def _smoothed(self, x: list[tf.Tensor], seed: tf.Tensor) -> list[tf.Tensor]:
        """``x + N(0, local_smoothing²)`` per row and input (stateless: the seed names the noise)."""
        if not self.local_smoothing:
            return x
        return [
            xi + self.local_smoothing * tf.random.stateless_normal(
                tf.shape(xi), tf.random.experimental.stateless_fold_in(seed, i), dtype=xi.dtype
            )
            for i, xi in enumerate(x)
        ]

    def _gradients_per_output(self, points, row_outputs, k: int) -> list[tf.Tensor]:
        """One backward pass per output slot: per input, ``(rows, *shape, k)``."""
        y, _ = self.traced.call(points)
        per_input = [[] for _ in points]
        for j in range(k):
            target = tf.gather(y, row_outputs[:, j], batch_dims=1)
            for i, g in enumerate(tf.gradients(target, points, unconnected_gradients=tf.UnconnectedGradients.ZERO)):
                per_input[i].append(tf.convert_to_tensor(g))
        return [tf.stack(g, -1) for g in per_input]

    def _gradients_over_copies(self, points, row_outputs, k: int) -> list[tf.Tensor]:
        """The rows copied once per output slot, one backward pass: per input, ``(rows, *shape, k)``."""
        n_rows = tf.shape(row_outputs)[0]
        tiled = [tf.tile(p, tf.concat([[k], tf.ones([tf.rank(p) - 1], tf.int32)], 0)) for p in points]
        y, _ = self.traced.call(tiled)
        # copy c of row p is row c · n_rows + p and explains output slot c
        target = tf.gather(y, tf.reshape(tf.transpose(row_outputs), [-1]), batch_dims=1)
        grads = tf.gradients(target, tiled, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        out = []
        for g, p in zip(grads, points):
            rank = p.shape.rank
            split = tf.reshape(tf.convert_to_tensor(g), tf.concat([[k, n_rows], tf.shape(p)[1:]], 0))
            out.append(tf.transpose(split, [*range(1, rank + 1), 0]))
        return out


def _per_row(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A ``(rows,)`` vector cast to ``like``'s dtype and shaped to broadcast over its other axes."""
    return tf.reshape(tf.cast(values, like.dtype), tf.concat([[-1], tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def _row_bytes(graph) -> int:
    """Bytes per row of every float tensor with a batch axis in ``graph`` (a forward pass): a memory estimate."""
    total = 0
    for op in graph.get_operations():
        for t in op.outputs:
            shape = t.shape
            if t.dtype.is_floating and shape.rank and shape[0] is None and shape[1:].is_fully_defined():
                total += int(np.prod(shape[1:])) * t.dtype.size
    return total


def run_rows(chunk_fn, samples, background, output_index, rows: Rows, batch_size: int, seed: int, moments: bool):
    """``(sums, squares)``: per input, ``Σ weight · v`` (and ``Σ weight · v²``) per sample, chunked by rows."""
    n, n_inputs = len(samples[0]), len(samples)
    totals = None
    for start in range(0, len(rows.sample), batch_size):
        part = slice(start, start + batch_size)
        sample_index = rows.sample[part]
        first, last = int(sample_index[0]), int(sample_index[-1]) + 1
        result = chunk_fn(
            [tf.convert_to_tensor(s[first:last]) for s in samples],
            list(background),
            tf.convert_to_tensor(sample_index - first, tf.int32),
            tf.convert_to_tensor(rows.reference[part], tf.int32),
            tf.convert_to_tensor(rows.alpha[part], tf.float64),
            tf.convert_to_tensor(rows.weight[part], tf.float64),
            tf.convert_to_tensor(output_index[first:last], tf.int32),
            tf.constant([seed, start], tf.int64),
        )
        if totals is None:
            totals = [np.zeros((n, *r.shape[1:]), np.float64) for r in result]
        for total, part_sum in zip(totals, result):
            total[first:last] += part_sum.numpy()
    return totals[:n_inputs], (totals[n_inputs:] if moments else None)


def variance_of_mean(sums: np.ndarray, squares: np.ndarray, nsamples: int) -> np.ndarray:
    """``s² / N``: the unbiased per-draw variance over the ``N`` draws, divided by ``N`` (from Σv/N and Σv²/N)."""
    spread = np.maximum(squares - sums * sums, 0.0)  # E[v²] − E[v]², clipped at 0 against rounding
    return spread / (nsamples - 1)


def convergence_delta(values, base_values: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """``sum(values) − (f(x) − f(baseline))`` per sample and output: ``(n, k)``."""
    return summed(values) + np.asarray(base_values, np.float64) - np.asarray(outputs, np.float64)


def _check_method(method: str, inputs, options: dict) -> None:
    if method not in METHOD_OPTIONS:
        raise ValueError(f"method must be one of {tuple(METHOD_OPTIONS)}; got {method!r}")
    unknown = sorted(set(options) - set(METHOD_OPTIONS[method]))
    if unknown:
        raise ValueError(f"method {method!r} takes the options {METHOD_OPTIONS[method]}; got {unknown}")
    if inputs is not None:
        raise ValueError(
            f"inputs= (attributing to a layer's output) is supported by method='deep' only; "
            f"method {method!r} attributes to the model inputs: leave inputs=None"
        )


# -- the explainers ---------------------------------------------------------------------------
class PathExplainer(CompiledExplainer):
    """``tfshap.compile(..., method="expected_gradients" | "integrated_gradients")``.

    Plain gradients of the traced model (no rewrite), reused for many calls and following
    the model's live weights. ``explain`` returns ``Attributions`` whose
    ``convergence_delta`` (``sum(values) − (f(x) − E f(reference))``, per sample and
    output) says how far the estimate is from complete; ``additivity_error`` is its largest
    magnitude.

    Parameters
    ----------
    model, background, output, batch_size, jit_compile
        As :func:`tfshap.compile` takes them (``batch_size``: (sample, reference, α) rows per chunk).
    method : {"expected_gradients", "integrated_gradients"}
        Which path method.
    inputs : None
        Path methods attribute to the model inputs only.
    **options
        ``nsamples``, ``local_smoothing``, ``rseed`` (expected gradients); ``steps``, ``rule``
        (integrated gradients).
    """

    checks_additivity_by_default = False

    def __init__(self, model, background, *, method, output=None, inputs=None, batch_size=None, jit_compile=None,
                 **options):
        _check_method(method, inputs, options)
        if callable(background) and not isinstance(background, tf.Tensor):
            raise ValueError(f"method {method!r} takes background arrays (reference rows); per-sample reference "
                             "functions are for method='deep'")
        self.method = method
        self.nsamples = _positive_int(options.get("nsamples", DEFAULT_NSAMPLES), "nsamples")
        self.local_smoothing = _smoothing(options.get("local_smoothing", 0))
        self.rseed = _seed(options.get("rseed"))
        self.steps = _positive_int(options.get("steps", DEFAULT_STEPS), "steps")
        self.rule = _rule(options.get("rule", DEFAULT_RULE))
        if batch_size is not None:
            batch_size = _positive_int(batch_size, "batch_size")
        super().__init__(model, background, output=output, batch_size=batch_size, jit_compile=jit_compile)
        self._describe_from_forward()
        precision.check_traced_forward(self)
        self.paths = PathProgram(self.traced, self.jit_compile, self.local_smoothing, self.forward)
        try:
            self.paths.chunk(self.n_outputs, False)  # traces now, so that a missing gradient fails here
        except LookupError as exc:
            raise CompileError(f"method {method!r} needs the model's gradients: {exc}") from None

    @property
    def rules_used(self) -> str:
        return f"none ({self.method}: the model's plain gradients, no rewrite)"

    def batch_size(self, k: int) -> int:
        """Rows (sample, reference, α) per chunk.

        Parameters
        ----------
        k : int
            Outputs explained per sample.
        """
        if self._batch_size is not None:
            return self._batch_size
        elements = sum(int(np.prod(s.shape[1:])) for s in self.traced.input_specs)
        return default_batch_size(self.paths.activation_bytes_per_row, k, elements)

    # -- explaining ---------------------------------------------------------------------------
    def explain(self, x, *, ranked_outputs: int | None = None, output_rank_order: str = "max") -> Attributions:
        """Attributions of ``x``, with ``convergence_delta``.

        Parameters
        ----------
        x : array, list of arrays, or tf.data.Dataset
            The samples.
        ranked_outputs : int, optional
            Explain only each sample's top ``ranked_outputs`` outputs.
        output_rank_order : {"max", "min", "max_abs"}
            How outputs are ranked.

        Returns
        -------
        Attributions
        """
        if isinstance(x, tf.data.Dataset):
            merged = self.explain_dataset(x, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order)
            return dataclasses.replace(
                merged, convergence_delta=convergence_delta(merged.values, merged.base_values, merged.outputs)
            )
        return self.estimate(x, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order)[0]

    def estimate(self, x, *, ranked_outputs=None, output_rank_order="max", nsamples=None, rseed=None, variances=False):
        """``(Attributions, variances or None)``; ``nsamples``/``rseed`` override the compile options.

        Parameters
        ----------
        x : array or list of arrays
            The samples.
        ranked_outputs, output_rank_order
            As in :meth:`explain`.
        nsamples : int, optional
            Draws per sample (expected gradients).
        rseed : int, optional
            Fixes the draws.
        variances : bool
            Also return the variance of each estimate (expected gradients only), in the
            layout of ``values``: the per-draw variance / ``nsamples``.
        """
        nsamples = self.nsamples if nsamples is None else _positive_int(nsamples, "nsamples")
        rseed = self.rseed if rseed is None else _seed(rseed)
        if variances and self.method != "expected_gradients":
            raise ValueError("variances come from sampling: they need method='expected_gradients'")
        if variances and nsamples < 2:
            raise ValueError(
                f"return_variances=True needs nsamples >= 2 to estimate a variance; got nsamples={nsamples}"
            )
        arrays = as_arrays(x, self.input_specs, "x", allow_integer=False)
        outputs = self.outputs_of(arrays)
        base = self.expected_value
        index = self._output_index(outputs, ranked_outputs, output_rank_order)
        k = index.shape[1]
        rng = np.random.default_rng(rseed)
        rows = self._rows(len(outputs), nsamples, rng)
        seed = int(rng.integers(2**31))
        sums, squares = run_rows(
            self.paths.chunk(k, variances), arrays, self.background, index, rows, self.batch_size(k), seed, variances
        )
        delta = convergence_delta(sums, base[index], np.take_along_axis(outputs, index, axis=1))
        attributions = self._attributions(sums, base, outputs, index, ranked_outputs is not None, arrays,
                                         convergence_delta=delta)
        dtype = self.output_dtype.as_numpy_dtype
        if not variances:
            return attributions, None
        return attributions, _layout([variance_of_mean(s, q, nsamples).astype(dtype) for s, q in zip(sums, squares)])

    def _rows(self, n: int, nsamples: int, rng: np.random.Generator) -> Rows:
        n_references = int(self.background[0].shape[0])
        if self.method == "expected_gradients":
            return expected_gradient_rows(n, n_references, nsamples, rng)
        return integrated_gradient_rows(n, n_references, self.steps, self.rule)

    def shap_values(self, X, ranked_outputs=None, output_rank_order="max", check_additivity=False):
        """As ``DeepExplainer.shap_values``; the sums are estimates, so the additivity check is off by default.

        Parameters
        ----------
        X : array or list of arrays
            The samples.
        ranked_outputs, output_rank_order
            As in :meth:`explain`.
        check_additivity : bool
            Raise :class:`tfshap.AdditivityError` when the estimate misses by more than rounding.
        """
        return super().shap_values(X, ranked_outputs, output_rank_order, check_additivity)


def _layout(arrays: list):
    """One input: the array; several: the list."""
    return arrays[0] if len(arrays) == 1 else arrays


class GradientExplainer:
    """Drop-in for ``shap.GradientExplainer(model, data)``: expected gradients in one compiled graph.

    Per sample, ``nsamples`` pairs (background row, ``α ~ U(0, 1)``) are drawn (the same row
    for every input of a multi-input model), Gaussian noise of std ``local_smoothing`` is
    added to ``x`` when it is positive, and ``grad(b + α(x − b)) · (x − b)`` is averaged.
    ``batch_size`` is the number of (sample, draw) rows per pass through the graph.
    ``rseed`` fixes the draws (background rows, then α, from ``numpy.random.default_rng``);
    the smoothing noise is drawn in the graph per chunk, so it also depends on ``batch_size``
    (and on ``jit_compile`` through ``tfshap.compile``).

    Parameters
    ----------
    model : Keras model, (inputs, outputs) pair, or path
        As :func:`tfshap.compile` takes it.
    data : array or list of arrays
        The background rows.
    batch_size : int
        (sample, draw) rows per pass.
    local_smoothing : float
        The std of Gaussian noise added to ``x``.
    session : None
        A TensorFlow 1 argument of shap's; must be None.
    """

    def __init__(self, model, data, batch_size=50, local_smoothing=0, *, session=None):
        if session is not None:
            raise ValueError("session is a TensorFlow 1 argument; tfshap runs on TensorFlow 2 and takes none")
        self.explainer = PathExplainer(
            model, data, method="expected_gradients", batch_size=batch_size, local_smoothing=local_smoothing
        )

    @property
    def expected_value(self) -> np.ndarray:
        """The mean model output over ``data``, ``(n_outputs,)``."""
        return self.explainer.expected_value

    def shap_values(
        self, X, nsamples=200, ranked_outputs=None, output_rank_order="max", rseed=None, return_variances=False
    ):
        """shap's layout: ``(n, *input_shape, n_outputs)`` per input (a list for several inputs).

        With ``ranked_outputs``: ``(values, indexes)``; with ``return_variances``:
        ``(values, variances)``; with both: ``(values, variances, indexes)``, as shap.
        ``variances`` has the layout of ``values`` and is the variance of each estimate, i.e.
        the unbiased per-draw variance divided by ``nsamples`` (shap divides by
        ``sqrt(nsamples)`` instead, and uses the biased per-draw variance).

        Parameters
        ----------
        X : array or list of arrays
            The samples.
        nsamples : int
            Draws per sample.
        ranked_outputs : int, optional
            Explain only each sample's top ``ranked_outputs`` outputs.
        output_rank_order : {"max", "min", "max_abs"}
            How outputs are ranked.
        rseed : int, optional
            Fixes the draws.
        return_variances : bool
            Also return the variance of each estimate.
        """
        attributions, variances = self.explainer.estimate(
            X,
            ranked_outputs=ranked_outputs,
            output_rank_order=output_rank_order,
            nsamples=nsamples,
            rseed=rseed,
            variances=return_variances,
        )
        result = (attributions.values,)
        if return_variances:
            result += (variances,)
        if ranked_outputs is not None:
            result += (attributions.output_indices,)
        return result[0] if len(result) == 1 else result

    def __call__(self, X, nsamples=200):
        """A ``shap.Explanation`` of ``X``, as ``shap.GradientExplainer(...)(X)`` returns (needs shap).

        Parameters
        ----------
        X : array or list of arrays
            The samples.
        nsamples : int
            Draws per sample.

        Returns
        -------
        shap.Explanation
            ``values`` as :meth:`shap_values` returns them, ``data`` is ``X``, and each
            sample's base values (shap's are None).
        """
        try:
            from shap import Explanation
        except ImportError as exc:
            raise ImportError("calling an explainer returns a shap.Explanation, which needs shap: "
                              "python -m pip install shap (or use .shap_values(X))") from exc
        attributions, _ = self.explainer.estimate(X, nsamples=nsamples)
        base = np.broadcast_to(attributions.base_values, np.shape(attributions.outputs)).copy()
        return Explanation(values=attributions.values, base_values=base, data=X)


__all__ = ["GradientExplainer", "PathExplainer"]
