"""``tfshap.compile`` and the shap-compatible ``DeepExplainer``: the factory above every explainer."""

from __future__ import annotations

from .deep import DeepSHAPExplainer
from .gradients import METHOD_OPTIONS, PathExplainer

METHODS = ("deep", *METHOD_OPTIONS)
#: Options of method="deep" besides the common arguments.
DEEP_OPTIONS = ("strategy", "rules", "vectorize_outputs")


def compile(model, background, *, output=None, inputs=None, method="deep", batch_size=None, jit_compile=None,  # noqa: A001
            **method_options):
    """Trace and rewrite ``model`` once; the returned explainer is reused for many calls.

    Parameters
    ----------
    model : Keras model, (inputs, outputs) pair of Keras tensors, or path
        A ``tf_keras`` (Keras 2) or Keras 3 model; a pair ``(inputs, outputs)`` of Keras
        symbolic tensors (a tensor or a list each) to explain part of a model; or a path to
        a saved ``.keras``/``.h5`` file or SavedModel directory, loaded in safe mode.
    background : array, list of arrays, or function
        The reference rows, ``(K, *input_shape)``, one array per model input; for
        ``method="integrated_gradients"``, the baseline rows. A function gives references
        per sample, as in shap: called with a list holding one array per model input for
        one sample (no batch axis), it returns one array or a list of arrays
        ``(K_i, *input_shape)``; ``K_i`` may differ between samples (``method="deep"`` only).
    output : str, optional
        None: the model's outputs (flattened to ``(n, n_outputs)``). ``"logits"``: the
        pre-activation of the model's final layer(s), whatever the activation (a softmax or
        sigmoid fused into a Dense layer, or a separate Activation/Softmax layer). A layer
        name: that layer's output.
    inputs : str, optional
        A layer name: attribute to that layer's output (e.g. ``"embedding"`` for token
        models); background and samples are still model inputs (``method="deep"`` only).
    method : {"deep", "expected_gradients", "integrated_gradients"}
        DeepSHAP (exact sums), or a path method on the model's plain gradients.
    batch_size : int, optional
        Pairs (sample, reference row) per chunk, which bounds memory; None sizes chunks from
        the memory available and the shapes of the data explained.
    jit_compile : bool, optional
        Compile with XLA. None and False: off. Refused (``ValueError``) where XLA would make
        the values wrong (run-time mask checks, max pooling's cross-max rule).
    **method_options
        ``method="deep"``: ``strategy`` (a ``tf.distribute`` strategy: chunks are dealt out
        to its devices), ``rules`` (a rule set, see ``tfshap.registry.rule_sets()``;
        default ``"default"``), ``vectorize_outputs`` (None: one backward pass vectorized over
        the outputs for models with a loop; True/False force it).
        ``"expected_gradients"``: ``nsamples=200``, ``local_smoothing=0``, ``rseed=None``.
        ``"integrated_gradients"``: ``steps=50``, ``rule="gauss_legendre"`` or ``"midpoint"``.

    Returns
    -------
    CompiledExplainer
        Its ``explain(x)`` returns :class:`tfshap.Attributions`; ``shap_values``,
        ``expected_value``, ``explain_to``, ``export`` and calling it (a ``shap.Explanation``)
        are as documented in the reference.

    Raises
    ------
    UnsupportedOpError
        An op on the path from the explained inputs to the output has no exact rule.
    CompileError
        The model cannot be explained as asked (e.g. its traced forward pass is not its
        inference output, or the output depends on the inputs other than through ``inputs``).
    ValueError
        Bad arguments or background: says what was expected.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method != "deep":
        return PathExplainer(model, background, method=method, output=output, inputs=inputs, batch_size=batch_size,
                             jit_compile=jit_compile, **method_options)
    unknown = sorted(set(method_options) - set(DEEP_OPTIONS))
    if unknown:
        raise ValueError(f"method 'deep' takes the options {DEEP_OPTIONS}; got {unknown}")
    return DeepSHAPExplainer(model, background, output=output, inputs=inputs, batch_size=batch_size,
                             jit_compile=jit_compile, **method_options)


class DeepExplainer:
    """Drop-in for ``shap.DeepExplainer(model, data)``: exact DeepSHAP values from a compiled graph.

    Parameters
    ----------
    model : Keras model, (inputs, outputs) pair, or path
        As :func:`compile` takes it.
    data : array, list of arrays, or function
        The background; a function gives per-sample references (see :func:`compile`).
    session, learning_phase_flags
        TensorFlow 1 arguments of shap's; ``session`` must be None.
    combine_mult_and_diffref : callable, optional
        kundajelab's ``fn(mult, orig_inp, bg_data)``: values are combined in Python from the
        per-reference multipliers of each sample (see :meth:`DeepSHAPExplainer.combine`).
    output : str, optional
        As :func:`compile` (e.g. ``"logits"``).
    inputs : str, optional
        As :func:`compile`: a layer whose output is attributed to (e.g. ``"embedding"``).
    batch_size : int, optional
        As :func:`compile`.
    """

    def __init__(self, model, data, session=None, learning_phase_flags=None, combine_mult_and_diffref=None, *,
                 output=None, inputs=None, batch_size=None):
        if session is not None:
            raise ValueError("session is a TensorFlow 1 argument; tfshap runs on TensorFlow 2 and takes none")
        if combine_mult_and_diffref is not None and not callable(combine_mult_and_diffref):
            raise ValueError("combine_mult_and_diffref must be a function fn(mult, orig_inp, bg_data); "
                             f"got {combine_mult_and_diffref!r}")
        self.combine_mult_and_diffref = combine_mult_and_diffref
        self.explainer = compile(model, data, output=output, inputs=inputs, batch_size=batch_size)

    @property
    def expected_value(self):
        """The mean model output over the background, ``(n_outputs,)``; None with per-sample references."""
        return self.explainer.expected_value

    def explain(self, X, **options):
        """tfshap's own result for ``X`` (:class:`tfshap.Attributions`).

        Parameters
        ----------
        X : array or list of arrays
            The samples.
        **options
            As :meth:`tfshap.deep.DeepSHAPExplainer.explain` (``references``, ``ranked_outputs``, ...).
        """
        if self.combine_mult_and_diffref is None:
            return self.explainer.explain(X, **options)
        return self.explainer.combine(X, self.combine_mult_and_diffref, **options)

    def shap_values(self, X, ranked_outputs=None, output_rank_order="max", check_additivity=True):
        """As shap's: ``(n, *input_shape, n_outputs)`` per input; with ``ranked_outputs``, ``(values, indexes)``.

        With ``combine_mult_and_diffref`` the values are the combiner's, which need not add
        up (hypothetical contributions do not), so they are not checked.

        Parameters
        ----------
        X : array or list of arrays
            The samples.
        ranked_outputs : int, optional
            Explain only each sample's top ``ranked_outputs`` outputs.
        output_rank_order : {"max", "min", "max_abs"}
            How outputs are ranked.
        check_additivity : bool
            Raise :class:`tfshap.AdditivityError` when the sums miss by more than rounding explains.
        """
        result = self.explain(X, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order)
        if check_additivity and self.combine_mult_and_diffref is None:
            self.explainer.check_additivity(result)
        return result.values if ranked_outputs is None else (result.values, result.output_indices)

    def __call__(self, X):
        """A ``shap.Explanation`` of ``X``, as ``shap.DeepExplainer(...)(X)`` returns.

        Parameters
        ----------
        X : array or list of arrays
            The samples.

        Returns
        -------
        shap.Explanation
            ``values`` as :meth:`shap_values` returns them, ``data`` is ``X``, ``base_values``
            each sample's base values (shap's are None).
        """
        return self.explainer(X)
