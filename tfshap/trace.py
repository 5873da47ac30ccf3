"""Model forms → one function from (paired) model inputs to the flattened explained output."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import _tf_private
from .errors import CompileError


@dataclass
class Traced:
    """The explained function.

    ``call(inputs)`` takes one tensor per model input and returns ``(y, attributed)``:
    ``y`` is ``(batch, n_outputs)``; ``attributed`` is the list of tensors to attribute to
    (a layer's output for ``inputs=``) or None for the model inputs themselves.
    ``call_eagerly(inputs)`` is ``y`` from Keras's own eager inference, and
    ``float64_outputs(arrays)`` the same function run by a float64 copy of the model (None
    where no such copy can be built).
    """

    call: Callable[[list[tf.Tensor]], tuple[tf.Tensor, list[tf.Tensor] | None]]
    input_specs: list[tf.TensorSpec]
    layer_names: list[str]
    keras: str
    attributed_layer: str | None = None
    #: The width of ``y`` where Keras knows the outputs' shapes, else None.
    n_outputs: int | None = None
    #: Whether a layer runs a loop over time steps (an RNN: a layer with a ``cell``).
    has_loops: bool = False
    call_eagerly: Callable[[list[tf.Tensor]], tf.Tensor] | None = None
    model: object = field(default=None, repr=False)
    rebuild: Callable | None = field(default=None, repr=False)
    _float64: object = field(default=None, repr=False)

    def float64_outputs(self, arrays: Sequence[np.ndarray]) -> np.ndarray | None:
        """``y`` computed by a float64 copy of the model (built once), or None where it cannot be built."""
        if self._float64 is None:
            self._float64 = _float64_copy(self) or False
        if self._float64 is False:
            return None
        return np.asarray(self._float64.call_eagerly([tf.convert_to_tensor(a) for a in arrays]), np.float64)


def _flavour(obj) -> str | None:
    """'tf_keras' (Keras 2), 'keras' (Keras 3), or None for anything else."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        if module.startswith("tf_keras"):
            return "tf_keras"
        if module.startswith("keras"):
            return "keras"
    return None


def _keras_module(flavour: str):
    if flavour == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras


def _load_keras2(path: Path, safe_mode: bool):
    with _tf_private.keras2_safe_mode(safe_mode):  # its .h5 and SavedModel loaders ignore the argument
        return _keras_module("tf_keras").models.load_model(path, compile=False, safe_mode=safe_mode)


def _saved_by_keras2(path: Path) -> bool:
    """Whether an ``.h5`` file was written by Keras 2 (its ``keras_version`` attribute)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"")
    except (ImportError, OSError):
        return False
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version.startswith("2.")


def load_model(path: str | os.PathLike, *, safe_mode: bool = True):
    """Load a ``.keras``/``.h5`` file or a SavedModel directory, refusing arbitrary code unless ``safe_mode=False``."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"no model at {str(path)!r}: expected a .keras or .h5 file or a SavedModel directory")
    errors = []
    if p.is_dir():
        loaders = [("tf_keras", lambda: _load_keras2(p, safe_mode))]
    elif p.suffix in (".keras", ".h5", ".hdf5"):
        loaders = [
            ("keras", lambda: _keras_module("keras").saving.load_model(p, compile=False, safe_mode=safe_mode)),
            ("tf_keras", lambda: _load_keras2(p, safe_mode)),
        ]
        if p.suffix != ".keras" and _saved_by_keras2(p):
            loaders.reverse()  # Keras 3 would load it too, with its own layers' semantics (Masking differs)
    else:
        raise ValueError(f"cannot load {str(path)!r}: expected a .keras or .h5 file or a SavedModel directory")
    for name, load in loaders:
        try:
            return load()
        except Exception as exc:  # noqa: BLE001 - each Keras tries in turn; all errors are reported below
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise ValueError(f"could not load the model at {str(path)!r}:\n  " + "\n  ".join(errors))


def resolve_model(model):
    """A Keras model (either Keras) from any model form that API.md accepts."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    if isinstance(model, (tuple, list)) and len(model) == 2:
        inputs, outputs = model
        flat = tf.nest.flatten(inputs) + tf.nest.flatten(outputs)
        flavours = {_flavour(t) for t in flat}
        if len(flavours) == 1 and None not in flavours and all(type(t).__name__ == "KerasTensor" for t in flat):
            return _keras_module(flavours.pop()).Model(inputs, outputs)
        raise ValueError(
            "a model pair must be (inputs, outputs) of Keras symbolic tensors from one Keras, "
            "e.g. (model.layers[0].input, model.layers[-1].output)"
        )
    if _flavour(model) is not None and hasattr(model, "layers") and callable(model):
        return model
    raise ValueError(
        "model must be a Keras model (tf_keras or Keras 3), an (inputs, outputs) pair of Keras "
        f"tensors, or a path to a saved model; got {type(model).__name__}"
    )


def all_layers(model) -> list:
    """The model and every layer inside it, wrapped layers (Bidirectional, TimeDistributed) included."""
    found, stack, seen = [], [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(getattr(layer, "layers", None) or [])
        for attr in ("layer", "forward_layer", "backward_layer", "cell"):
            inner = getattr(layer, attr, None)
            if inner is not None and hasattr(inner, "name"):
                stack.append(inner)
    return found


def _symbolic_inputs(model) -> list | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def _input_structure(model):
    """The nesting of a functional model's inputs (a tensor, a list, a dict), or None."""
    try:
        return model.input if _symbolic_inputs(model) is not None else None
    except (AttributeError, ValueError):
        return None


def _specs(model, background: Sequence[np.ndarray] | None) -> list[tf.TensorSpec]:
    inputs = _symbolic_inputs(model)
    if inputs is not None:
        return [tf.TensorSpec([None, *t.shape[1:]], tf.as_dtype(t.dtype)) for t in inputs]
    if background is None:
        raise ValueError("cannot tell the input shapes of this subclassed model without background data")
    floatx = _keras_module(_flavour(model)).backend.floatx()
    specs = []
    for b in background:
        dtype = tf.as_dtype(b.dtype) if np.issubdtype(b.dtype, np.floating) else tf.as_dtype(floatx)
        specs.append(tf.TensorSpec([None, *b.shape[1:]], dtype))
    return specs


def _layer(model, name: str, what: str):
    try:
        return model.get_layer(name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(f"{what}={name!r} is not a layer of this model; its layers are {names}") from None


def flatten_outputs(outputs) -> tf.Tensor:
    """Concatenate every output, each flattened to ``(batch, -1)``."""
    flat = [tf.reshape(o, [-1, int(np.prod(o.shape[1:]))] if o.shape[1:].is_fully_defined() else
                       [tf.shape(o)[0], -1]) for o in tf.nest.flatten(outputs)]
    flat = [tf.cast(o, flat[0].dtype) for o in flat]
    return flat[0] if len(flat) == 1 else tf.concat(flat, axis=1)


#: ``output=LOGITS`` explains the pre-activation of the model's final layer(s).
LOGITS = "logits"


def _is_activation_layer(layer) -> bool:
    """A layer whose whole computation is an activation (Activation, Softmax, ReLU, ...): its input is the logits."""
    return type(layer).__name__ in {"Activation", "Softmax", "ReLU", "LeakyReLU", "ELU", "PReLU", "ThresholdedReLU"}


def _output_layers(model) -> list:
    """The layers whose outputs are the model's outputs, in output order."""
    outputs = tf.nest.flatten(model.outputs)
    found = []
    for t in outputs:
        layer = next((layer for layer in reversed(model.layers) if _produces(layer, t)), None)
        if layer is None:
            raise ValueError("output='logits' could not find the layer that computes the model's output")
        found.append(layer)
    return found


def _produces(layer, tensor) -> bool:
    try:
        return any(o is tensor for o in tf.nest.flatten(layer.output))
    except (AttributeError, ValueError, RuntimeError):
        return False


def _logits(model, Model, flavour: str):
    """``(explained model, layers whose activation is switched off while tracing)`` for ``output='logits'``."""
    if _symbolic_inputs(model) is None:
        raise ValueError("output='logits' needs a functional or Sequential model built with an Input; "
                         "this model has no symbolic inputs (subclassed?)")
    outputs, switched = [], []
    for layer, out in zip(_output_layers(model), tf.nest.flatten(model.outputs)):
        if _is_activation_layer(layer):
            outputs.append(layer.input)  # the logits go into the activation layer
        elif getattr(layer, "activation", None) is not None and not hasattr(layer, "cell"):
            outputs.append(out)
            switched.append(layer)  # Dense(..., activation="softmax"): computed without its activation
        elif hasattr(layer, "cell"):
            raise ValueError(f"output='logits': the final layer {layer.name!r} is recurrent, whose output has no "
                             "pre-activation to explain; expected a final Dense-like or activation layer")
        else:
            outputs.append(out)  # no activation: the output already is the logits
    return Model(_symbolic_inputs(model), outputs if len(outputs) > 1 else outputs[0]), switched


class _OutputRecorder:
    """Within the block, records what ``layer.call`` returns: the tensors to attribute to.

    The layer's output is taken from the very call that computes the explained output, so
    it lies on that path whatever Keras's graph of nodes holds (a Sequential model's layers
    may have several). A layer called more than once per forward pass is refused.
    """

    def __init__(self, layer):
        self.layer, self.outputs = layer, []

    def __enter__(self):
        self.outputs = []
        original = self.layer.call

        def recording(*args, **kwargs):
            out = original(*args, **kwargs)
            self.outputs.append(out)
            return out

        self.layer.call = recording

    def __exit__(self, *exc):
        del self.layer.call  # the class's method again

    def output(self) -> list[tf.Tensor]:
        if len(self.outputs) != 1:
            raise CompileError(
                f"layer {self.layer.name!r} ran {len(self.outputs)} times in one forward pass; inputs= needs a layer "
                "that runs exactly once, on the path to the output"
            )
        return [t for t in tf.nest.flatten(self.outputs[0]) if isinstance(t, tf.Tensor)]


class _WithoutActivation:
    """Within the block, ``layer.activation`` of each layer is the identity (restored afterwards)."""

    def __init__(self, layers, identity):
        self.layers, self.identity, self.saved = layers, identity, []

    def __enter__(self):
        for layer in self.layers:
            self.saved.append((layer, layer.activation))
            layer.activation = self.identity

    def __exit__(self, *exc):
        for layer, activation in reversed(self.saved):
            layer.activation = activation
        self.saved = []


def trace(model, background=None, *, output: str | None = None, inputs: str | None = None) -> Traced:
    """Resolve ``model`` and describe the function to explain.

    ``output``: None (the model's outputs), ``"logits"`` (the pre-activation of the model's
    final layer, whatever its activation) or a layer name (that layer's output).
    ``inputs``: None (the model inputs) or a layer name whose output is attributed to.
    """
    model = resolve_model(model)
    flavour = _flavour(model)
    specs = _specs(model, background)
    symbolic = _symbolic_inputs(model)
    if (output is not None or inputs is not None) and symbolic is None:
        raise ValueError(
            "output= and inputs= need a functional or Sequential model built with an Input; "
            "this model has no symbolic inputs (subclassed?)"
        )
    K = _keras_module(flavour)
    Model = K.Model
    explained, switched = model, []
    if output == LOGITS and LOGITS not in {layer.name for layer in model.layers}:
        explained, switched = _logits(model, Model, flavour)
    elif output is not None:
        explained = Model(symbolic, _layer(model, output, "output").output)
    attributed_layer = None if inputs is None else _layer(model, inputs, "inputs")
    recorder = _OutputRecorder(attributed_layer)

    layers = all_layers(model)
    structure = _input_structure(explained)
    without_activation = _WithoutActivation(switched, K.activations.linear)

    def run(tensors: list[tf.Tensor]):
        if structure is not None:
            args = tf.nest.pack_sequence_as(structure, list(tensors))
        else:
            args = tensors[0] if len(tensors) == 1 else list(tensors)
        with _tf_private.standard_rnn_cells(layers), without_activation:
            return explained(args, training=False)

    def call(tensors: list[tf.Tensor]):
        if attributed_layer is None:
            return flatten_outputs(run(tensors)), None
        with recorder:
            out = run(tensors)
        return flatten_outputs(out), recorder.output()

    def call_eagerly(tensors: list[tf.Tensor]) -> tf.Tensor:
        return call(tensors)[0]

    return Traced(
        call=call,
        input_specs=specs,
        layer_names=[layer.name for layer in layers],
        keras=flavour,
        attributed_layer=None if attributed_layer is None else attributed_layer.name,
        n_outputs=_static_width(explained),
        has_loops=any(getattr(layer, "cell", None) is not None for layer in layers),
        call_eagerly=call_eagerly,
        model=model,
        rebuild=lambda copy: trace(copy, background, output=output, inputs=inputs),
    )


def _static_width(model) -> int | None:
    """``Σ prod(shape[1:])`` of the model's symbolic outputs, or None where a shape is unknown (subclassed)."""
    outputs = _symbolic_outputs(model)
    if outputs is None:
        return None
    shapes = [tuple(o.shape[1:]) for o in outputs]
    if any(d is None for shape in shapes for d in shape):
        return None
    return int(sum(np.prod(shape, dtype=np.int64) for shape in shapes))


def _symbolic_outputs(model) -> list | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return list(tf.nest.flatten(outputs)) if outputs else None


def _float64_copy(traced: Traced) -> Traced | None:
    """The explained function of a float64 copy of the model (same weights), or None where Keras cannot copy it."""
    try:
        return traced.rebuild(float64_clone(traced.model))
    except Exception:  # noqa: BLE001 - any model Keras cannot rebuild from its config: the noise stays unmeasured
        return None


def float64_clone(model):
    """A copy of a functional or Sequential Keras model computing in float64, with the same weights."""
    K = _keras_module(_flavour(model))
    if _symbolic_inputs(model) is None:
        raise ValueError("only functional and Sequential models can be copied from their configuration")

    def clone_layer(layer):
        if isinstance(layer, K.Model) and _symbolic_inputs(layer) is not None:
            return K.models.clone_model(layer, clone_function=clone_layer)
        config = layer.get_config()
        config["dtype"] = "float64"
        return type(layer).from_config(config)

    copy = K.models.clone_model(model, clone_function=clone_layer)
    weights = model.get_weights()
    copy.set_weights([w.astype(np.float64) if np.issubdtype(w.dtype, np.floating) else w for w in weights])
    return copy


__all__ = ["Traced", "trace", "load_model", "resolve_model", "flatten_outputs", "CompileError", "LOGITS"]
