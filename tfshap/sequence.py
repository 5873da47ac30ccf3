"""One-hot DNA: dinucleotide shuffles as per-sample references, a ChromBPNet-shaped model, TF-MoDISco files.

The sequence-model workflow (BPNet, ChromBPNet and their kin) explains each sequence against
shuffled copies of itself that keep its dinucleotide counts, projects the multipliers onto
"hypothetical contributions" for every base, and hands those to TF-MoDISco to find motifs.

- :func:`dinuc_shuffle` draws, uniformly and independently, sequences with the same
  dinucleotide counts and the same first base as each input sequence (Altschul and
  Erickson's Eulerian-path method, vectorised over sequences and shuffles).
- :func:`shuffled_references` wraps it in shap's per-sample ``data`` form.
- :func:`chrombpnet_like` builds a small model with ChromBPNet's architecture (either Keras),
  and :func:`profile_target` the scalar that ChromBPNet explains for its profile head.
- :func:`write_modisco_inputs` writes the ``ohe.npz``/``shap.npz`` pair ``modisco motifs`` reads.

One-hot rows are ``A, C, G, T`` in that order; an all-zero row is ``N`` (or padding).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
from pathlib import Path

import numpy as np

#: The order of the one-hot axis.
ALPHABET = "ACGT"
# Symbols of the shuffle's graph: the four bases and N (an all-zero row).
_SYMBOLS = 5
_N = 4
# Sequences shuffled together: a block's int64 keys stay near 64 MiB.
_BLOCK_ELEMENTS = 1 << 23


def one_hot(sequences, dtype=np.float32) -> np.ndarray:
    """``(N, L, 4)`` one-hot rows (``A, C, G, T``) of equal-length strings; ``N`` and other letters give zero rows.

    Parameters
    ----------
    sequences : str or sequence of str
        DNA strings of one length, any case. One string gives ``(L, 4)``.
    dtype : numpy dtype
        Of the result.

    Returns
    -------
    numpy.ndarray
        ``(N, L, 4)``, or ``(L, 4)`` for one string.

    Raises
    ------
    ValueError
        If the strings differ in length or there are none.
    """
    single = isinstance(sequences, str)
    strings = [sequences] if single else list(sequences)
    if not strings or len({len(s) for s in strings}) != 1:
        lengths = sorted({len(s) for s in strings})
        raise ValueError(f"sequences must be one or more strings of one length; got lengths {lengths}")
    codes = np.frombuffer("".join(strings).upper().encode("ascii", "replace"), np.uint8).reshape(len(strings), -1)
    lookup = np.full(256, _N, np.int64)
    lookup[np.frombuffer(ALPHABET.encode(), np.uint8)] = np.arange(4)
    encoded = np.eye(_SYMBOLS, 4, dtype=dtype)[lookup[codes]]
    return encoded[0] if single else encoded


# Symbol of a row of 4 from its bits (A = 1, C = 2, G = 4, T = 8): 4 (N) for none, -1 for two or more.
_SYMBOL_OF_BITS = np.full(16, -1, np.int8)
_SYMBOL_OF_BITS[[0, 1, 2, 4, 8]] = [_N, 0, 1, 2, 3]


def _checked_tokens(onehot) -> tuple[np.ndarray, np.ndarray]:
    """``(array, symbols)``: ``onehot`` checked to be one-hot ``(L, 4)`` or ``(N, L, 4)``, and its symbols (4: N)."""
    array = np.asarray(onehot)
    if array.ndim not in (2, 3) or array.shape[-1] != 4 or array.shape[-2] < 1:
        raise ValueError(
            f"onehot must be one-hot DNA of shape (L, 4) or (N, L, 4) with L >= 1 (bases A, C, G, T on the last "
            f"axis); got shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"onehot must be a numeric or boolean array; got dtype {array.dtype}")
    ones = array == 1
    symbols = _SYMBOL_OF_BITS[np.packbits(ones, axis=-1, bitorder="little")[..., 0]]
    bad = (symbols < 0) | ~(ones | (array == 0)).all(axis=-1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        place = f"sequence {where[0]}, position {where[1]}" if len(where) == 2 else f"position {where[0]}"
        raise ValueError(
            f"onehot must be one-hot: each row of 4 holds one 1 and three 0s, or four 0s (N or padding); "
            f"{bad.sum()} row(s) do not, the first at {place}: {array[where].tolist()}"
        )
    return array, symbols


def _is_integer(value) -> bool:
    """Whether ``value`` is a Python or numpy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _checked_count(n) -> int:
    """``n`` as a positive ``int``; else ``ValueError``."""
    if not _is_integer(n) or n < 1:
        raise ValueError(f"n (the number of shuffles per sequence) must be a positive integer; got {n!r}")
    return int(n)


def _base_seed(seed) -> int:
    """A non-negative integer from ``seed``: itself, a draw from a ``Generator``, or fresh entropy for ``None``."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(2, np.uint64)[0])
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63))
    if not _is_integer(seed) or seed < 0:
        raise ValueError(f"seed must be None, a non-negative integer or a numpy Generator; got {seed!r}")
    return int(seed)


def _sequence_rng(base: int, tokens: np.ndarray) -> np.random.Generator:
    """A generator seeded by ``base`` and the sequence itself, so a sequence's shuffles do not depend on its batch."""
    digest = hashlib.blake2b(tokens.astype(np.uint8).tobytes(), digest_size=16).digest()
    return np.random.default_rng([base, *np.frombuffer(digest, np.uint32).tolist()])


@functools.cache
def _arborescences() -> np.ndarray:
    """``(5, 125, 5)``: for each root ``r``, every parent map of the 5 symbols that is a tree directed to ``r``.

    ``parent[r] == r``; every other symbol reaches ``r`` by following parents (Cayley: 5³ trees per root).
    """
    trees = []
    for root in range(_SYMBOLS):
        others = [v for v in range(_SYMBOLS) if v != root]
        found = []
        for choice in itertools.product(range(_SYMBOLS), repeat=_SYMBOLS - 1):
            parent = np.full(_SYMBOLS, root)
            parent[others] = choice
            reach = np.arange(_SYMBOLS)
            for _ in range(_SYMBOLS):
                reach = parent[reach]
            if (reach == root).all():
                found.append(parent)
        trees.append(found)
    return np.array(trees)


def _last_exit_trees(counts: np.ndarray, roots: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """``(B, n, 5)`` last-exit trees, each drawn with probability ∝ ``Π_v counts[v, parent[v]]``.

    ``counts`` ``(B, 5, 5)`` are the dinucleotide counts, ``roots`` ``(B,)`` the last symbols,
    ``uniforms`` ``(B, n)`` in [0, 1). A symbol absent from a sequence (no outgoing pair) is
    attached to the root with weight 1, so it neither adds nor removes trees.
    """
    b = np.arange(len(counts))
    weight = counts.astype(np.float64)
    absent = weight.sum(axis=-1) == 0  # (B, 5); the root may be absent too (it then ends the only path)
    weight = np.where(absent[..., None], 0.0, weight)
    weight[absent.nonzero()[0], absent.nonzero()[1], roots[absent.nonzero()[0]]] = 1.0
    weight[b, roots, :] = 0.0
    weight[b, roots, roots] = 1.0
    trees = _arborescences()[roots]  # (B, 125, 5)
    factors = np.take_along_axis(weight[:, None, :, :], trees[..., None], axis=-1)[..., 0]  # (B, 125, 5)
    cumulative = np.cumsum(factors.prod(axis=-1), axis=-1)  # (B, 125); exact integers below 2**53
    total = cumulative[:, -1:]
    threshold = np.minimum(uniforms * total, np.nextafter(total, 0))  # (B, n), strictly below the total
    chosen = np.argmax(cumulative[:, None, :] > threshold[..., None], axis=-1)  # first tree past it: weight > 0
    return np.take_along_axis(trees, chosen[..., None], axis=1)


def _pair_counts_and_firsts(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(B, 5, 5)`` counts of each pair ``(src, dst)``, and ``(B, 25)`` each pair's first edge (``edges`` if none)."""
    count, edges = src.shape
    cell = (np.arange(count, dtype=np.intp)[:, None] * _SYMBOLS**2 + src * _SYMBOLS + dst).ravel()
    counts = np.bincount(cell, minlength=count * _SYMBOLS**2).reshape(count, _SYMBOLS, _SYMBOLS)
    firsts = np.full(count * _SYMBOLS**2, edges, np.intp)
    np.minimum.at(firsts, cell, np.tile(np.arange(edges, dtype=np.intp), count))
    return counts, firsts.reshape(count, _SYMBOLS**2)


def _walk(targets: np.ndarray, starts: np.ndarray, first: np.ndarray) -> np.ndarray:
    """``(R, edges + 1)`` symbols of the Eulerian paths: from ``first``, each symbol's next pair in ``targets`` order.

    ``targets`` ``(R, edges)`` are the pairs' second symbols grouped by first symbol in the
    order they are to be taken, ``starts`` ``(R, 5)`` where each group begins.
    """
    rows, edges = targets.shape
    flat = targets.ravel()
    cursor = (starts + (np.arange(rows, dtype=np.intp) * edges)[:, None]).ravel()  # next pair, per (row, symbol)
    base = np.arange(rows, dtype=np.intp) * _SYMBOLS
    out = np.empty((edges + 1, rows), targets.dtype)  # position-major: each step writes one contiguous row
    out[0] = first
    slot, index = np.empty(rows, np.intp), np.empty(rows, np.intp)
    for i in range(1, edges + 1):
        np.add(base, out[i - 1], out=slot)
        np.take(cursor, slot, out=index)
        np.take(flat, index, out=out[i])
        index += 1
        cursor[slot] = index
    return out.T


def _shuffle_block(tokens: np.ndarray, n: int, base: int) -> np.ndarray:
    """``(B, n, L)`` symbols: ``n`` uniform dinucleotide shuffles of each row of ``tokens`` ``(B, L)``."""
    count, length = tokens.shape
    if length < 3:  # one path only
        return np.repeat(tokens[:, None, :], n, axis=1)
    src, dst = tokens[:, :-1].astype(np.int8), tokens[:, 1:].astype(np.int8)
    edges = length - 1
    counts, firsts = _pair_counts_and_firsts(src, dst)
    # Self-pairs never leave a symbol, so they cannot be its last exit.
    exits = counts * (1 - np.eye(_SYMBOLS, dtype=counts.dtype))
    rngs = [_sequence_rng(base, row) for row in tokens]
    uniforms = np.stack([g.random(n) for g in rngs])  # (B, n)
    ranks = np.tile(np.arange(edges, dtype=np.intp), (n, 1))
    order = np.stack([g.permuted(ranks, axis=1) for g in rngs])  # (B, n, edges): a uniform order of the pairs
    # Each symbol but the last leaves for the last time along its tree edge: one pair (v, parent[v])
    # goes last among v's pairs (which copy does not matter; copies are the same pair).
    parent = _last_exit_trees(exits, tokens[:, -1], uniforms)  # (B, n, 5)
    last_edge = np.take_along_axis(firsts[:, None, :], np.arange(_SYMBOLS) * _SYMBOLS + parent, axis=-1)
    last_edge[parent == np.arange(_SYMBOLS)] = edges  # the root has no last exit (its self-pairs are ordinary)
    is_last = np.zeros((count, n, edges + 1), np.int8)
    np.put_along_axis(is_last, last_edge, 1, axis=-1)
    group = 2 * src[:, None, :] + is_last[..., :edges]  # (B, n, edges) int8: by first symbol, the last exit after
    # A stable sort by group keeps the random order inside each group (int8 keys: a radix sort).
    order = np.take_along_axis(order, np.argsort(np.take_along_axis(group, order, -1), axis=-1, kind="stable"), -1)
    targets = np.take_along_axis(np.broadcast_to(dst[:, None, :], order.shape), order, axis=-1)
    starts = np.concatenate([np.zeros((count, 1), np.intp), np.cumsum(counts.sum(-1), -1)[:, :-1]], -1)
    walked = _walk(targets.reshape(count * n, edges), np.repeat(starts, n, axis=0), np.repeat(src[:, 0], n))
    return walked.reshape(count, n, length)


def dinuc_shuffle(onehot, n: int, *, seed=None) -> np.ndarray:
    """``n`` uniformly drawn sequences with the dinucleotide counts and the first base of each input sequence.

    Each shuffle is an Eulerian path of the sequence's dinucleotide multigraph drawn uniformly
    among the distinct sequences it spells (Altschul and Erickson, 1985; Kandel et al., 1996):
    a last-exit tree is drawn with probability proportional to the number of paths it allows,
    then the other pairs leaving each base are put in a uniformly random order. Every
    dinucleotide count, the first base and the last base are kept exactly. The walk is one
    loop over positions, vectorised over all sequences and shuffles.

    An all-zero row (``N`` or padding) is a fifth symbol and is shuffled with the bases, so
    the counts of pairs with ``N`` are kept too (as deeplift's shuffle does). Because of that, a
    run of ``N`` at one end of a sequence with no other ``N`` stays where it is, and a single run
    stays one run; padding at both ends can trade length between the ends, so shuffle the
    unpadded part when the padding must stay put.

    The shuffles of a sequence depend only on the sequence, ``n`` and ``seed``: the same
    sequence gives the same shuffles alone, in any batch and at any position in it.

    Parameters
    ----------
    onehot : array_like
        One sequence ``(L, 4)`` or a batch ``(N, L, 4)``, one-hot on the last axis (``A, C, G, T``),
        numeric or boolean.
    n : int
        Shuffles per sequence, at least 1.
    seed : None, int or numpy.random.Generator
        ``None`` draws fresh entropy; an integer (>= 0) makes the result reproducible; a
        ``Generator`` is advanced by one draw.

    Returns
    -------
    numpy.ndarray
        ``(n, L, 4)`` for one sequence, ``(N, n, L, 4)`` for a batch, of ``onehot``'s dtype. The
        batched form is the ``(n, K, *input_shape)`` layout of per-sample references.

    Raises
    ------
    ValueError
        If ``onehot`` is not one-hot of shape ``(L, 4)`` or ``(N, L, 4)``, ``n`` is not a positive
        integer, or ``seed`` is none of the accepted kinds.
    """
    array, symbols = _checked_tokens(onehot)
    n = _checked_count(n)
    base = _base_seed(seed)
    tokens = symbols if array.ndim == 3 else symbols[None]
    block = max(1, _BLOCK_ELEMENTS // (n * tokens.shape[1]))
    shuffled = np.concatenate(
        [_shuffle_block(tokens[i : i + block], n, base) for i in range(0, len(tokens), block)]
        or [np.empty((0, n, tokens.shape[1]), np.int64)]
    )
    result = np.eye(_SYMBOLS, 4, dtype=array.dtype)[shuffled]
    return result if array.ndim == 3 else result[0]


def shuffled_references(n: int = 20, seed: int | None = 0, *, sequence_input: int = 0):
    """A per-sample reference function, in shap's ``data`` form, that returns ``n`` dinucleotide shuffles.

    ``tfshap.DeepExplainer(model, data=shuffled_references(20))`` explains each sequence against
    20 shuffles of itself, as ChromBPNet and BPNet do. The function takes a list with one array
    per model input for one sample (no batch axis) and returns a list of ``(n, *input_shape)``
    arrays: the shuffles of input ``sequence_input`` and ``n`` copies of every other input.
    Given one array instead of a list, it returns one array. The references of a sequence depend
    only on the sequence, ``n`` and ``seed`` (see :func:`dinuc_shuffle`), so they are the same
    whichever order or batch the samples come in; for many samples at once,
    ``dinuc_shuffle(x, n, seed=seed)`` gives the same references as ``(N, n, L, 4)``.

    Parameters
    ----------
    n : int
        References per sample, at least 1.
    seed : None or int
        As in :func:`dinuc_shuffle`; ``None`` draws new shuffles on every call.
    sequence_input : int
        Which model input is the one-hot sequence.

    Returns
    -------
    callable
        ``references(sample) -> list of (n, *input_shape) arrays`` (one array for one array). Its
        attribute ``batched(inputs)`` does the same for a batch, ``(N, *input_shape)`` →
        ``(N, n, *input_shape)`` per input, in one call; with a seed, it equals the per-sample
        results stacked.

    Raises
    ------
    ValueError
        Here, if ``n``, ``seed`` or ``sequence_input`` is invalid; from the function, if the sample
        has no input ``sequence_input`` or that input is not one-hot ``(L, 4)``.
    """
    n = _checked_count(n)
    if seed is not None:
        _base_seed(seed)
    if not _is_integer(sequence_input) or sequence_input < 0:
        raise ValueError(f"sequence_input must be a non-negative integer (an input index); got {sequence_input!r}")

    def references(sample):
        """``n`` dinucleotide shuffles of ``sample[sequence_input]``, other inputs repeated ``n`` times."""
        single = not isinstance(sample, (list, tuple))
        inputs = [sample] if single else list(sample)
        if sequence_input >= len(inputs):
            raise ValueError(
                f"the sample has {len(inputs)} input(s); the sequence is input {sequence_input} (sequence_input)"
            )
        sequence = np.asarray(inputs[sequence_input])
        if sequence.ndim != 2:
            raise ValueError(
                "the sequence input of one sample must be one-hot (L, 4), with no batch axis; "
                f"got shape {sequence.shape}"
            )
        out = [np.repeat(np.asarray(a)[None], n, axis=0) for a in inputs]
        out[sequence_input] = dinuc_shuffle(sequence, n, seed=seed)
        return out[0] if single else out

    def batched(inputs):
        """The references of many samples at once: one array or a list, ``(N, *shape)`` → ``(N, n, *shape)``."""
        single = not isinstance(inputs, (list, tuple))
        arrays = [np.asarray(a) for a in ([inputs] if single else inputs)]
        if sequence_input >= len(arrays):
            raise ValueError(f"got {len(arrays)} input(s); the sequence is input {sequence_input} (sequence_input)")
        out = [np.repeat(a[:, None], n, axis=1) for a in arrays]
        out[sequence_input] = dinuc_shuffle(arrays[sequence_input], n, seed=seed)
        return out[0] if single else out

    references.batched = batched
    references.n = n
    return references


# -- a ChromBPNet-shaped model ----------------------------------------------------------------
def chrombpnet_like(
    keras_module,
    length: int = 128,
    *,
    filters: int = 16,
    n_dilated: int = 3,
    conv1_kernel: int = 21,
    profile_kernel: int = 25,
    output_length: int = 40,
    dilated: bool = True,
    seed: int = 0,
):
    """A small untrained model with ChromBPNet's architecture, in either Keras (for tests, benchmarks, examples).

    As in ChromBPNet's ``bpnet_model.py``: one-hot input ``(length, 4)``; a ``Conv1D`` (``valid``,
    relu); ``n_dilated`` residual blocks, each a ``Conv1D`` of kernel 3 with dilation ``2**i``
    (``i = 1 … n_dilated``, relu) added to its input cropped to match; a profile head, a wide
    ``Conv1D`` to one channel cropped to ``output_length`` and flattened (per-position logits,
    output ``"logits_profile_predictions"``); and a counts head, global average pooling then
    ``Dense(1)`` (output ``"logcount_predictions"``). ChromBPNet itself takes 2,114 bases,
    512 filters, 8 dilated layers, kernels 21 and 75, and 1,000 output positions.

    Parameters
    ----------
    keras_module : module
        ``tf_keras`` (Keras 2) or ``keras`` (Keras 3).
    length : int
        Input length.
    filters : int
        Channels of every convolution but the profile head's.
    n_dilated : int
        Dilated residual layers (dilations 2, 4, 8, …).
    conv1_kernel : int
        Kernel size of the first convolution.
    profile_kernel : int
        Kernel size of the profile head's convolution.
    output_length : int
        Profile positions; the profile head's output is cropped symmetrically to it.
    dilated : bool
        ``False`` builds the same tower without dilation (each residual convolution then
        removes 2 positions, not ``2·2**i``), for explainers that cannot take dilated
        convolutions (shap 0.51: they lower to ``SpaceToBatchND``/``BatchToSpaceND``).
    seed : int
        Seeds the weight initialisers (the model is reproducible and untrained).

    Returns
    -------
    Keras model
        ``inputs``: ``"sequence"`` ``(None, length, 4)``; ``outputs``: profile logits
        ``(None, output_length)`` and log counts ``(None, 1)``.

    Raises
    ------
    ValueError
        If the layers leave fewer than ``output_length`` profile positions, or a crop would not be symmetric.
    """
    dilations = [2**i if dilated else 1 for i in range(1, n_dilated + 1)]
    shrink = conv1_kernel - 1 + 2 * sum(dilations) + profile_kernel - 1
    precrop = length - shrink
    if precrop < output_length or (precrop - output_length) % 2:
        raise ValueError(
            f"length {length} leaves {precrop} profile positions after the convolutions (they remove {shrink}); "
            f"need at least output_length={output_length}, with an even difference for a symmetric crop"
        )
    layers = keras_module.layers
    init = iter(range(seed * 1000, seed * 1000 + 1000))

    def conv(units, kernel, name, **options):
        return layers.Conv1D(
            units, kernel, padding="valid", name=name,
            kernel_initializer=keras_module.initializers.GlorotUniform(seed=next(init)),
            bias_initializer=keras_module.initializers.RandomNormal(stddev=0.1, seed=next(init)), **options,
        )

    sequence = keras_module.Input((length, 4), name="sequence")
    x = conv(filters, conv1_kernel, "bpnet_1st_conv", activation="relu")(sequence)
    for i, dilation in enumerate(dilations, start=1):
        conv_x = conv(filters, 3, f"bpnet_{i}conv", activation="relu", dilation_rate=dilation)(x)
        x = layers.Cropping1D(dilation, name=f"bpnet_{i}crop")(x)
        x = layers.Add(name=f"bpnet_{i}add")([conv_x, x])
    profile = conv(1, profile_kernel, "prof_out_precrop")(x)
    profile = layers.Cropping1D((precrop - output_length) // 2, name="logits_profile_predictions_preflatten")(profile)
    profile = layers.Flatten(name="logits_profile_predictions")(profile)
    pooled = layers.GlobalAveragePooling1D(name="gap")(x)
    counts = layers.Dense(
        1, name="logcount_predictions",
        kernel_initializer=keras_module.initializers.GlorotUniform(seed=next(init)),
    )(pooled)
    return keras_module.Model(sequence, [profile, counts], name="chrombpnet_like")


def _weighted_mean_normed_logits(logits):
    """``Σ_p stop_gradient(softmax(c))_p · c_p`` with ``c = logits − mean(logits)``, per row (TensorFlow ops)."""
    import tensorflow as tf

    centred = logits - tf.reduce_mean(logits, axis=1, keepdims=True)
    weights = tf.nn.softmax(tf.stop_gradient(centred), axis=1)
    return tf.reduce_sum(weights * centred, axis=1, keepdims=True)


def profile_target(model, profile_output: int = 0):
    """A model of ``model``'s input that outputs ChromBPNet's profile explanation target, ``(None, 1)``.

    ChromBPNet (``shap_utils.get_weightedsum_meannormed_logits``) and BPNet explain the profile
    head through ``Σ_p stop_gradient(softmax(c))_p · c_p`` with ``c = logits − mean(logits)``
    over the positions ``p``: the predicted probabilities weight the mean-normalised logits.
    ``tf.stop_gradient`` appears in the graph as a ``StopGradient`` op; see the documentation
    of how tfshap explains it.

    Parameters
    ----------
    model : Keras model (either Keras)
        With per-position profile logits ``(None, positions)`` as output ``profile_output``.
    profile_output : int
        Which output holds the profile logits (ChromBPNet: 0).

    Returns
    -------
    Keras model
        Same Keras and inputs as ``model``; one output, ``(None, 1)``.

    Raises
    ------
    ValueError
        If that output is not ``(None, positions)``.
    """
    import tf_keras

    keras_module = tf_keras
    if not isinstance(model, tf_keras.Model):
        import keras as keras_module
    logits = model.outputs[profile_output]
    if len(logits.shape) != 2:
        raise ValueError(
            f"output {profile_output} must be per-position profile logits (None, positions); got {tuple(logits.shape)}"
        )
    target = keras_module.layers.Lambda(
        _weighted_mean_normed_logits, output_shape=(1,), name="weighted_mean_normed_logits"
    )(logits)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras_module.Model(inputs, target, name=f"{model.name}_profile_target")


# -- TF-MoDISco ---------------------------------------------------------------------------------
def _hypothetical_array(hypothetical, shape: tuple) -> np.ndarray:
    """``hypothetical`` as a finite float32 ``shape`` array; a trailing axis of one output is dropped."""
    array = np.asarray(hypothetical)
    if array.shape == (*shape, 1):  # tfshap's layout for one explained output
        array = array[..., 0]
    if array.shape != shape:
        raise ValueError(
            f"hypothetical must have the shape of onehot, {shape} (or {(*shape, 1)}, one explained output); got "
            f"{array.shape}. For several outputs, pass one: values[..., j]"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"hypothetical must be numeric; got dtype {array.dtype}")
    finite = np.isfinite(array).all(axis=(1, 2))
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ValueError(
            f"hypothetical contains NaN or infinite values in {len(rows)} sequence(s): {rows[:10].tolist()}"
        )
    return array.astype(np.float32)


def write_modisco_inputs(directory, onehot, hypothetical) -> tuple[Path, Path]:
    """Write ``ohe.npz`` and ``shap.npz`` for ``modisco motifs -s ohe.npz -a shap.npz`` (modisco-lite).

    modisco-lite reads the array stored under ``arr_0`` of each file, with axes
    ``(N, 4, L)``; it then takes a window of ``-w`` positions (default 400) around the centre,
    so pass ``-w L`` for sequences shorter than 400.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing; the two files are written there.
    onehot : array_like
        ``(N, L, 4)`` one-hot sequences (``A, C, G, T``), as explained.
    hypothetical : array_like
        ``(N, L, 4)`` hypothetical contributions of every base at every position (or
        ``(N, L, 4, 1)``, tfshap's layout for one output). Not ``values · onehot``: modisco
        needs the contributions of the bases that are absent too.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The paths of ``ohe.npz`` (int8) and ``shap.npz`` (float32).

    Raises
    ------
    ValueError
        If ``onehot`` is not one-hot ``(N, L, 4)``, ``hypothetical`` has another shape or
        non-finite values, or it is zero at every absent base while not at the present ones
        (projected contributions, not hypothetical ones).
    """
    sequences, _ = _checked_tokens(onehot)
    if sequences.ndim != 3:
        raise ValueError(f"onehot must be a batch of sequences (N, L, 4); got shape {sequences.shape}")
    scores = _hypothetical_array(hypothetical, sequences.shape)
    present = sequences.astype(bool)
    if scores[present].any() and not scores[~present].any():
        raise ValueError(
            "hypothetical is zero at every base absent from the sequences: these look like projected contributions "
            "(values · onehot); modisco needs the hypothetical contributions of all four bases"
        )
    folder = Path(os.fspath(directory))
    folder.mkdir(parents=True, exist_ok=True)
    ohe, shap = folder / "ohe.npz", folder / "shap.npz"
    np.savez_compressed(ohe, sequences.astype(np.int8).transpose(0, 2, 1))
    np.savez(shap, scores.transpose(0, 2, 1))
    return ohe, shap


__all__ = [
    "one_hot",
    "dinuc_shuffle",
    "shuffled_references",
    "chrombpnet_like",
    "profile_target",
    "write_modisco_inputs",
]
