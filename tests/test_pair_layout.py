"""The paired layout: each chunk runs its reference rows once, shared by every sample paired with them.

The values must not depend on how the pairs fall into chunks: one pair per chunk (one
foreground row, one reference row), chunks with part of the background, and one chunk
holding every pair (each background row once, far fewer reference rows than pairs) all
give the same attributions, in float64, for models whose
rules read the reference halves in every way they do: elementwise, cross-max, softmax,
products of two varying operands, a loop body, and tf_keras's TimeDistributed and fused
layer normalization, whose batch axis holds several entries per row.

Nor may they depend on how the backward passes explain the outputs: one pass per output,
one pass over copies of the pairs, or one pass vectorized over the outputs (the default
for models with a loop).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import (
    assert_additive,
    assert_explains_inference,
    floatx,
    keras_module,
)

import tfshap
from tfshap.batching import References, run_tiles, tiles
from tfshap.pair import halves, on_foreground, paired_rows


def test_halves_pairs_each_foreground_row_with_its_reference_row():
    t = tf.constant(np.arange(5 * 3, dtype=np.float64).reshape(5, 3))  # 3 foreground rows, then 2 reference rows
    with paired_rows(3, 2, [1, 0, 1]):
        foreground, reference = halves(t)
        padded = on_foreground(foreground[:, 0])
    np.testing.assert_array_equal(foreground.numpy(), t.numpy()[:3])
    np.testing.assert_array_equal(reference.numpy(), t.numpy()[[4, 3, 4]])
    np.testing.assert_array_equal(padded.numpy(), [0, 3, 6, 0, 0])


def test_halves_move_each_rows_run_of_entries_together():
    # axis 0 holds 2 entries per row (a reshape folding time steps into the batch axis)
    t = tf.constant(np.arange(10 * 3, dtype=np.float64).reshape(10, 3))
    with paired_rows(3, 2, [1, 0, 1]):
        foreground, reference = halves(t)
        padded = on_foreground(foreground)
    np.testing.assert_array_equal(foreground.numpy(), t.numpy()[:6])
    np.testing.assert_array_equal(reference.numpy(), t.numpy()[6:].reshape(2, 2, 3)[[1, 0, 1]].reshape(6, 3))
    np.testing.assert_array_equal(padded.numpy(), np.concatenate([t.numpy()[:6], np.zeros((4, 3))]))


def _tile_cases(count: int = 400, seed: int = 0) -> list[tuple[int, int, int]]:
    """(samples, background rows, batch size) triples from 1 to thousands, with the corners."""
    rng = np.random.default_rng(seed)
    drawn = [
        tuple(int(v) for v in (rng.integers(1, 80), rng.integers(1, 3000), rng.integers(1, 5000)))
        for _ in range(count)
    ]
    return [(1, 1, 1), (1, 5000, 1), (5000, 1, 1), (100, 10000, 1024), (1000, 10000, 1024), (7, 100, 1024), *drawn]


def _shared_tiles(n: int, k: int, batch_size: int) -> list[tuple[slice, slice]]:
    """The (samples, background rows) blocks of a shared background of ``k`` rows."""
    return [(t.samples, t.rows) for t in tiles(n, References([np.zeros((k, 1))]), batch_size)]


def test_tiles_cover_every_pair_once_within_the_batch_size():
    for n, k, batch_size in _tile_cases():
        seen = np.zeros((n, k), int)
        for tile in tiles(n, References([np.zeros((k, 1))]), batch_size):
            assert len(tile.sample_index) <= batch_size, (n, k, batch_size)
            np.add.at(seen, (tile.samples.start + tile.sample_index, tile.rows.start + tile.reference_index), 1)
        assert np.all(seen == 1), (n, k, batch_size)


def test_tiles_are_full_and_run_few_background_rows():
    """What tiling is for: few chunks (every tile but the last of a row or column at least half
    full) and, where there are enough samples, few reference rows per chunk (at most 2·√batch_size,
    where one sample's tile would run batch_size of them)."""
    for n, k, batch_size in _tile_cases():
        blocks = _shared_tiles(n, k, batch_size)
        last_samples, last_rows = max(s.start for s, _ in blocks), max(r.start for _, r in blocks)
        for samples, rows in blocks:
            pairs = (samples.stop - samples.start) * (rows.stop - rows.start)
            if samples.start != last_samples and rows.start != last_rows:
                assert 2 * pairs >= batch_size, (n, k, batch_size, samples, rows)
            if n >= 2 * np.sqrt(batch_size):
                assert rows.stop - rows.start <= 2 * np.sqrt(batch_size), (n, k, batch_size, samples, rows)
        if n * k <= batch_size:
            assert len(blocks) == 1  # everything fits in one chunk


@pytest.mark.parametrize("counts, batch_size", [([3, 1, 4, 1, 5], 4), ([10], 3), ([1] * 9, 2), ([2, 30, 2], 8)])
def test_per_sample_tiles_pair_each_sample_with_its_own_rows_once(counts, batch_size):
    offsets = np.concatenate([[0], np.cumsum(counts)])
    seen = np.zeros(offsets[-1], int)
    for tile in tiles(len(counts), References([np.zeros((offsets[-1], 1))], offsets), batch_size):
        assert len(tile.sample_index) <= batch_size
        samples, rows = tile.samples.start + tile.sample_index, tile.rows.start + tile.reference_index
        assert np.all((offsets[samples] <= rows) & (rows < offsets[samples + 1])), "a sample paired with another's row"
        np.add.at(seen, rows, 1)
    np.testing.assert_array_equal(seen, 1)




def test_a_rule_outside_a_layout_is_an_error():
    with pytest.raises(RuntimeError, match="paired layout is unknown"):
        halves(tf.zeros([4, 2]))


def _feed_forward(K):
    inputs = K.Input((6, 6, 1))
    h = K.layers.Conv2D(3, 3, activation="relu")(inputs)
    h = K.layers.MaxPooling2D()(h)
    h = K.layers.Flatten()(h)
    gate = K.layers.Dense(8, activation="sigmoid")(h)
    h = K.layers.Multiply()([K.layers.Dense(8, activation="tanh")(h), gate])
    outputs = K.layers.Dense(3, activation="softmax")(h)
    return K.Model(inputs, outputs), (6, 6, 1)


def _many_outputs(K):
    """20 outputs: one backward pass over 20 copies of the pairs, rather than one pass per output."""
    inputs = K.Input((6,))
    h = K.layers.Dense(8, activation="elu")(inputs)
    outputs = K.layers.Dense(20, activation="softmax")(
        K.layers.Multiply()([h, K.layers.Dense(8, activation="sigmoid")(inputs)])
    )
    return K.Model(inputs, outputs), (6,)


def _recurrent(K):
    inputs = K.Input((5, 4))
    h = K.layers.LSTM(6, return_sequences=True)(inputs)
    h = K.layers.TimeDistributed(K.layers.Dense(6, activation="relu"))(h)  # tf_keras folds time into the batch axis
    h = K.layers.LayerNormalization()(h)  # fused in tf_keras: its batch axis holds 5 rows per sample
    h = K.layers.GRU(4)(h)
    outputs = K.layers.Dense(3)(h)
    return K.Model(inputs, outputs), (5, 4)


def _float64_case(K, build, data_seed: int, model_seed: int, n_background: int, n: int):
    """A float64 model from ``build``, with normal background rows and samples."""
    rng = np.random.default_rng(data_seed)
    with floatx(K, "float64"):
        K.utils.set_random_seed(model_seed)
        model, shape = build(K)
    return model, rng.normal(size=(n_background, *shape)), rng.normal(size=(n, *shape))


@pytest.mark.parametrize(
    "build", [_feed_forward, _many_outputs, _recurrent], ids=["feed_forward", "many_outputs", "recurrent"]
)
@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_values_do_not_depend_on_how_pairs_fall_into_chunks(build, keras_name):
    model, background, x = _float64_case(
        keras_module(keras_name), build, data_seed=7, model_seed=3, n_background=6, n=4
    )
    explainer = tfshap.compile(model, background)
    result = explainer.explain(x)
    assert_additive(result, 1e-10)
    assert_explains_inference(result, model, x, background)
    k = explainer.n_outputs
    chunk, outputs = explainer.program.chunk(k), np.tile(np.arange(k), (len(x), 1))
    # tiles of 1 pair; 2 samples × 2 background rows; 3 × 3; and one tile, 6 reference rows for 24 pairs
    for size in (1, 5, 9, 24):
        sums = run_tiles(chunk, [x], References([b.numpy() for b in explainer.background]), outputs, size)
        values = sums.values[0] / len(background)
        np.testing.assert_allclose(values, result.values, rtol=0, atol=1e-12, err_msg=f"batch_size={size}")


def _small_recurrent(K):
    inputs = K.Input((4, 3))
    return K.Model(inputs, K.layers.Dense(3, activation="softmax")(K.layers.LSTM(4)(inputs))), (4, 3)


def _recurrent_with_many_outputs(K):
    inputs = K.Input((4, 3))
    return K.Model(inputs, K.layers.Dense(20, activation="softmax")(K.layers.GRU(4)(inputs))), (4, 3)


@pytest.mark.parametrize(
    "build", [_feed_forward, _many_outputs, _small_recurrent, _recurrent_with_many_outputs],
    ids=["feed_forward", "many_outputs", "recurrent", "recurrent_20_outputs"],
)
@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_the_backward_vectorized_over_outputs_gives_the_values_of_separate_passes(build, keras_name):
    # One pass per output (20 outputs: one pass over copies of the pairs), or one pass vectorized
    # over the outputs: the same values.
    model, background, x = _float64_case(
        keras_module(keras_name), build, data_seed=11, model_seed=5, n_background=5, n=3
    )
    passes = tfshap.compile(model, background, vectorize_outputs=False)
    result = passes.explain(x)
    assert_additive(result, 1e-10)
    assert_explains_inference(result, model, x, background)
    vectorized = tfshap.compile(model, background, vectorize_outputs=True)
    assert vectorized._vectorizes(passes.n_outputs) and not passes._vectorizes(passes.n_outputs)
    np.testing.assert_allclose(vectorized.explain(x).values, result.values, rtol=0, atol=1e-12)


@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_a_loop_model_vectorizes_its_outputs_once_it_has_explained_enough_pairs(keras_name, monkeypatch):
    # vectorize_outputs=None: a pass per output while compiling and for the first calls (its compile
    # time is short); the vectorized backward once VECTORIZE_AFTER_PAIRS pairs were explained.
    model, background, x = _float64_case(keras_module(keras_name), _small_recurrent, data_seed=3, model_seed=2,
                                         n_background=5, n=3)
    explainer = tfshap.compile(model, background)
    monkeypatch.setattr(explainer, "VECTORIZE_AFTER_PAIRS", 2 * len(x) * len(background))
    k = explainer.n_outputs
    first = explainer.explain(x)
    # before: one pass over copies of the pairs (a pass per output would rebuild the loop's gradient k times)
    assert not explainer._vectorizes(k) and list(explainer.program._chunk_fns) == [(k, "contributions", "copies")]
    explainer.explain(x)
    assert explainer._vectorizes(k)
    later = explainer.explain(x)
    assert (k, "contributions", "vectorized") in explainer.program._chunk_fns
    np.testing.assert_allclose(later.values, first.values, rtol=0, atol=1e-12)
    feed_forward, shape = _feed_forward(keras_module(keras_name))
    plain = tfshap.compile(feed_forward, np.zeros((2, *shape)))
    plain.pairs_explained = 10**9
    assert not plain._vectorizes(plain.n_outputs)  # no loop: passes per output are faster (BENCHMARKS.md)


@pytest.mark.parametrize(
    "build, loops", [(_feed_forward, False), (_small_recurrent, True)], ids=["feed_forward", "recurrent"]
)
def test_has_loops_finds_the_rnn_while_loops(build, loops):
    model, shape = build(keras_module("keras3"))
    explainer = tfshap.compile(model, np.zeros((2, *shape), np.float32))
    assert explainer.program.has_loops is loops  # While ops in the traced graph
    assert explainer.traced.has_loops is loops  # what the explainer knows before tracing: an RNN layer


def test_xla_explains_a_loop_model_with_a_pass_per_output():
    # XLA cannot compile the vectorized loop gradient (no kernel for a TensorList of lists)
    model, background, x = _float64_case(
        keras_module("tf_keras"), _small_recurrent, data_seed=2, model_seed=1, n_background=4, n=2
    )
    with_xla = tfshap.compile(model, background, jit_compile=True)
    assert not with_xla._vectorizes(with_xla.n_outputs)
    result = with_xla.explain(x)
    assert_additive(result, 1e-10)
    assert_explains_inference(result, model, x, background)
    np.testing.assert_allclose(result.values, tfshap.compile(model, background).explain(x).values, rtol=0, atol=1e-12)
