"""tfshap.sequence: the dinucleotide shuffle, per-sample reference functions, the ChromBPNet-shaped
model and its profile target, and the TF-MoDISco input files."""

from __future__ import annotations

import collections
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfshap
from tfshap.sequence import (
    chrombpnet_like,
    dinuc_shuffle,
    one_hot,
    profile_target,
    shuffled_references,
    write_modisco_inputs,
)

SYMBOLS = "ACGTN"


def decode(onehot: np.ndarray) -> str:
    """The string of a one-hot ``(L, 4)`` (``N`` for an all-zero row)."""
    tokens = np.where(onehot.any(-1), onehot.argmax(-1), 4)
    return "".join(SYMBOLS[t] for t in tokens)


def pair_counts(onehot: np.ndarray) -> np.ndarray:
    """``(..., 5, 5)`` dinucleotide counts (``N`` included) of one-hot sequences ``(..., L, 4)``."""
    padded = np.concatenate([onehot, 1 - onehot.sum(-1, keepdims=True)], -1).astype(np.int64)  # N as a fifth column
    return np.einsum("...ia,...ib->...ab", padded[..., :-1, :], padded[..., 1:, :])


def eulerian_sequences(s: str) -> list[str]:
    """Every distinct string with the first letter and the dinucleotide counts of ``s`` (depth-first)."""
    left = collections.Counter(itertools.pairwise(s))
    found = []

    def extend(prefix):
        if len(prefix) == len(s):
            found.append(prefix)
            return
        for (a, b), k in sorted(left.items()):
            if a == prefix[-1] and k:
                left[a, b] -= 1
                extend(prefix + b)
                left[a, b] += 1

    extend(s[0])
    return found


# -- one_hot ---------------------------------------------------------------------------------
def test_one_hot_encodes_bases_and_n():
    x = one_hot(["ACGTN", "tgcax"])
    assert x.shape == (2, 5, 4) and x.dtype == np.float32
    assert [decode(row) for row in x] == ["ACGTN", "TGCAN"]
    assert one_hot("GATC", dtype=np.int8).dtype == np.int8
    with pytest.raises(ValueError, match=r"strings of one length; got lengths \[2, 3\]"):
        one_hot(["AC", "ACG"])


# -- dinuc_shuffle: what it keeps --------------------------------------------------------------
@pytest.fixture(scope="module")
def batch():
    """Seven sequences of length 60, some with N (all-zero) rows, runs and a single repeated base."""
    rng = np.random.default_rng(7)
    strings = ["".join(rng.choice(list("ACGT"), 60)) for _ in range(4)]
    strings += ["NNNACGTTGCANNNAC" + "A" * 38 + "CGTACG", "A" * 59 + "C", "ACGT" * 14 + "NNNN"]
    return one_hot(strings)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.bool_])
def test_shuffles_keep_every_dinucleotide_count_and_both_ends(batch, dtype):
    x = batch.astype(dtype)

    shuffled = dinuc_shuffle(x, 25, seed=3)

    assert shuffled.shape == (7, 25, 60, 4) and shuffled.dtype == dtype
    assert set(np.unique(shuffled.astype(np.float64))) <= {0.0, 1.0} and (shuffled.sum(-1) <= 1).all()
    np.testing.assert_array_equal(pair_counts(shuffled), np.broadcast_to(pair_counts(x)[:, None], (7, 25, 5, 5)))
    np.testing.assert_array_equal(shuffled[:, :, 0], np.broadcast_to(x[:, None, 0], (7, 25, 4)))
    np.testing.assert_array_equal(shuffled[:, :, -1], np.broadcast_to(x[:, None, -1], (7, 25, 4)))
    distinct = [len({decode(s) for s in per_sequence}) for per_sequence in shuffled]
    assert min(distinct[:4]) == 25  # random 60-mers have far more than 25 shuffles: all differ
    assert distinct[5] == 1  # A…AC has one arrangement


def test_one_sequence_gives_n_by_l_by_4_and_short_sequences_are_copied():
    x = one_hot("GATTACA")
    assert dinuc_shuffle(x, 3, seed=0).shape == (3, 7, 4)
    for s in ("A", "GC"):
        np.testing.assert_array_equal(dinuc_shuffle(one_hot(s), 4, seed=0), np.broadcast_to(one_hot(s), (4, len(s), 4)))
    assert dinuc_shuffle(np.zeros((0, 9, 4)), 2, seed=0).shape == (0, 2, 9, 4)


def test_padding_at_one_end_stays_in_place():
    # N rows are a fifth symbol and every pair count with N is kept: a run of N at one end, with no
    # other N, cannot move (the path starts there, or can only arrive there at the end).
    leading = one_hot("NNNNN" + "ACGGTACCATGCA" * 3)
    trailing = one_hot("ACGGTACCATGCA" * 3 + "NNNNNN")
    for x, rows in ((leading, slice(0, 5)), (trailing, slice(-6, None))):
        shuffled = dinuc_shuffle(x, 30, seed=1)
        assert not shuffled[:, rows].any()
        assert (shuffled.sum(-1).sum(-1) == x.sum()).all()  # no other row became N


# -- dinuc_shuffle: the distribution -------------------------------------------------------------
@pytest.mark.parametrize(
    "sequence",
    [
        "GATTACAGAT",  # 12 sequences
        "CANNACGTNCA",  # 20, with N rows
        "CCACGTGAAACGTT",  # 72
    ],
)
def test_each_arrangement_comes_with_equal_frequency(sequence):
    """Uniform over the sequences with the same first base and dinucleotide counts (Eulerian paths).

    A shuffle that keeps each base's last successor (deeplift's ``dinuc_shuffle``) reaches 6 of
    the 12 arrangements of GATTACAGAT; this test fails for it.
    """
    from scipy import stats

    expected = eulerian_sequences(sequence)
    draws = 150 * len(expected)

    counts = collections.Counter(decode(s) for s in dinuc_shuffle(one_hot(sequence), draws, seed=2024))

    assert set(counts) == set(expected)
    observed = np.array([counts[s] for s in expected])
    p = 1 / len(expected)
    # Each count is Binomial(draws, p): five standard deviations bound all of them together with
    # probability > 1 − 72 · 6e-7 for a uniform sampler; the chi-square test looks at them jointly.
    assert np.abs(observed - draws * p).max() < 5 * np.sqrt(draws * p * (1 - p)), observed
    chi2 = ((observed - draws * p) ** 2 / (draws * p)).sum()
    assert stats.chi2.sf(chi2, len(expected) - 1) > 1e-4, (chi2, observed)


# -- dinuc_shuffle: seeds ------------------------------------------------------------------------
def test_seed_reproduces_and_a_sequence_shuffles_alike_in_any_batch(batch):
    first = dinuc_shuffle(batch, 6, seed=11)

    np.testing.assert_array_equal(first, dinuc_shuffle(batch, 6, seed=11))
    assert not np.array_equal(first[:4], dinuc_shuffle(batch, 6, seed=12)[:4])
    np.testing.assert_array_equal(first[2], dinuc_shuffle(batch[2], 6, seed=11))
    np.testing.assert_array_equal(first[[3, 0]], dinuc_shuffle(batch[[3, 0]], 6, seed=11))


def test_a_generator_or_none_draws_new_shuffles(batch):
    generator = np.random.default_rng(5)
    a, b = dinuc_shuffle(batch[:4], 4, seed=generator), dinuc_shuffle(batch[:4], 4, seed=generator)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, dinuc_shuffle(batch[:4], 4, seed=np.random.default_rng(5)))
    assert not np.array_equal(dinuc_shuffle(batch[:4], 4), dinuc_shuffle(batch[:4], 4))


# -- dinuc_shuffle: bad input --------------------------------------------------------------------
@pytest.mark.parametrize(
    "onehot, n, seed, message",
    [
        (np.zeros(10), 2, 0, r"shape \(L, 4\) or \(N, L, 4\).*got shape \(10,\)"),
        (np.zeros((10, 5)), 2, 0, r"shape \(L, 4\) or \(N, L, 4\).*got shape \(10, 5\)"),
        (np.zeros((2, 10, 4, 1)), 2, 0, r"got shape \(2, 10, 4, 1\)"),
        (np.zeros((0, 4)), 2, 0, r"L >= 1"),
        (np.full((10, 4), 0.25), 2, 0, r"one 1 and three 0s.*10 row\(s\) do not, the first at position 0: \[0.25"),
        (np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]), 2, 0, r"2 row\(s\) do not, the first at position 0"),
        (np.eye(4)[None, [0, 1]].repeat(2, 0) * [[[1]], [[2]]], 2, 0, r"the first at sequence 1, position 0: \[2"),
        (np.where(np.eye(4)[[0, 1]] == 1, np.nan, 0), 2, 0, r"one-hot"),
        (np.array([["A", "C", "G", "T"]]), 2, 0, r"numeric or boolean array; got dtype <U1"),
        (np.eye(4), 0, 0, r"n \(the number of shuffles per sequence\) must be a positive integer; got 0"),
        (np.eye(4), 2.5, 0, r"positive integer; got 2.5"),
        (np.eye(4), True, 0, r"positive integer; got True"),
        (np.eye(4), 2, -1, r"seed must be None, a non-negative integer or a numpy Generator; got -1"),
        (np.eye(4), 2, "x", r"seed must be .*; got 'x'"),
    ],
)
def test_bad_input_is_a_value_error_saying_what_was_expected(onehot, n, seed, message):
    with pytest.raises(ValueError, match=message):
        dinuc_shuffle(onehot, n, seed=seed)


# -- shuffled_references: shap's per-sample data form -------------------------------------------
def test_reference_function_in_shaps_form(batch):
    references = shuffled_references(5, seed=9)

    one = references([batch[0]])
    two = references([batch[1], np.array([0.5, 2.0], np.float32)])
    bare = references(batch[2])

    assert isinstance(one, list) and len(one) == 1
    np.testing.assert_array_equal(one[0], dinuc_shuffle(batch, 5, seed=9)[0])
    assert two[0].shape == (5, 60, 4) and two[1].shape == (5, 2)
    np.testing.assert_array_equal(two[1], np.tile([0.5, 2.0], (5, 1)))
    np.testing.assert_array_equal(pair_counts(two[0]), np.broadcast_to(pair_counts(batch[1]), (5, 5, 5)))
    assert isinstance(bare, np.ndarray) and bare.shape == (5, 60, 4)
    second = shuffled_references(3, seed=0, sequence_input=1)([np.zeros(2), batch[3]])
    assert second[0].shape == (3, 2) and second[1].shape == (3, 60, 4)


def test_reference_function_batched_equals_the_per_sample_calls(batch):
    references = shuffled_references(4, seed=2, sequence_input=1)
    other = np.arange(14, dtype=np.float32).reshape(7, 2)

    together = references.batched([other, batch])

    apart = [references([other[i], batch[i]]) for i in range(7)]
    assert together[0].shape == (7, 4, 2) and together[1].shape == (7, 4, 60, 4)
    for j in (0, 1):
        np.testing.assert_array_equal(together[j], np.stack([sample[j] for sample in apart]))
    np.testing.assert_array_equal(shuffled_references(4, seed=2).batched(batch), together[1])
    assert tfshap.sequence.shuffled_references is shuffled_references  # import tfshap is enough


def test_reference_function_bad_input():
    with pytest.raises(ValueError, match=r"positive integer; got 0"):
        shuffled_references(0)
    with pytest.raises(ValueError, match=r"sequence_input must be a non-negative integer"):
        shuffled_references(2, sequence_input=-1)
    with pytest.raises(ValueError, match=r"seed must be"):
        shuffled_references(2, seed=-3)
    references = shuffled_references(2, sequence_input=1)
    with pytest.raises(ValueError, match=r"the sample has 1 input\(s\); the sequence is input 1"):
        references([np.eye(4)])
    with pytest.raises(ValueError, match=r"one-hot \(L, 4\), with no batch axis; got shape \(1, 4, 4\)"):
        shuffled_references(2)([np.eye(4)[None]])


# -- the ChromBPNet-shaped model ------------------------------------------------------------------
def _conv1d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dilation: int = 1) -> np.ndarray:
    """A valid 1-D convolution in float64: ``out[t] = Σ_j x[t + j·d] @ kernel[j] + bias``."""
    width = x.shape[1] - dilation * (len(kernel) - 1)
    return sum(x[:, j * dilation : j * dilation + width] @ kernel[j] for j in range(len(kernel))) + bias


def _numpy_chrombpnet(model, x: np.ndarray, dilations, output_length: int) -> tuple[np.ndarray, np.ndarray]:
    """ChromBPNet's forward pass written out in numpy (bpnet_model.py): (profile logits, log counts)."""
    weights = {layer.name: [np.asarray(w, np.float64) for w in layer.get_weights()] for layer in model.layers}
    h = np.maximum(_conv1d(x, *weights["bpnet_1st_conv"]), 0)
    for i, d in enumerate(dilations, start=1):
        h = np.maximum(_conv1d(h, *weights[f"bpnet_{i}conv"], dilation=d), 0) + h[:, d:-d]
    profile = _conv1d(h, *weights["prof_out_precrop"])[..., 0]
    crop = (profile.shape[1] - output_length) // 2
    kernel, bias = weights["logcount_predictions"]
    return profile[:, crop : crop + output_length], h.mean(axis=1) @ kernel + bias


@pytest.mark.parametrize("dilated", [True, False])
def test_chrombpnet_like_computes_chrombpnets_forward_pass(K64, dilated):
    output_length = 40 if dilated else 60
    model = chrombpnet_like(K64, 128, filters=8, n_dilated=3, dilated=dilated, output_length=output_length)
    x = one_hot(["".join(np.random.default_rng(i).choice(list("ACGT"), 128)) for i in range(3)], np.float64)

    profile, counts = (np.asarray(o) for o in model(x))

    dilations = [2, 4, 8] if dilated else [1, 1, 1]
    want_profile, want_counts = _numpy_chrombpnet(model, x, dilations, output_length)
    assert profile.shape == (3, output_length) and counts.shape == (3, 1)
    assert [model.get_layer(f"bpnet_{i}conv").dilation_rate[0] for i in (1, 2, 3)] == dilations
    # float64 sums of a few hundred products of values below ~3: a few ulps (2**-52) each
    np.testing.assert_allclose(profile, want_profile, rtol=0, atol=1e-12)
    np.testing.assert_allclose(counts, want_counts, rtol=0, atol=1e-12)


def test_chrombpnet_like_refuses_a_length_its_layers_do_not_fit(K):
    with pytest.raises(ValueError, match=r"length 100 leaves 28 profile positions .* need at least output_length=40"):
        chrombpnet_like(K, 100)
    with pytest.raises(ValueError, match=r"even difference for a symmetric crop"):
        chrombpnet_like(K, 128, output_length=41)


def test_profile_target_is_chrombpnets_weighted_sum_of_mean_normed_logits(K64):
    model = chrombpnet_like(K64, 128, filters=8, dilated=False, output_length=60)
    x = one_hot(["".join(np.random.default_rng(i).choice(list("ACGT"), 128)) for i in range(4)], np.float64)

    target = profile_target(model)

    logits = np.asarray(model(x)[0])
    centred = logits - logits.mean(axis=1, keepdims=True)
    softmax = np.exp(centred) / np.exp(centred).sum(axis=1, keepdims=True)
    assert target.output.shape[1:] == (1,)
    np.testing.assert_allclose(np.asarray(target(x))[:, 0], (softmax * centred).sum(axis=1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"output 1 must be per-position profile logits \(None, positions\)"):
        profile_target(K64.Model(model.inputs, [model.outputs[0], K64.layers.Reshape((1, 1))(model.outputs[1])]), 1)


def _explained(model, x, background):
    explainer = tfshap.compile(model, background)
    return explainer, explainer.explain(x)


def test_tfshap_explains_the_profile_target_of_the_undilated_model_and_it_adds_up(K64):
    # tfshap treats tf.stop_gradient as the identity today (rewrite_rules/linear.py), so the
    # target is explained as computed; in float64 the sums hold to rounding (outputs are ~0.1).
    model = profile_target(chrombpnet_like(K64, 128, filters=8, dilated=False, output_length=60))
    x = one_hot(["".join(np.random.default_rng(i).choice(list("ACGT"), 128)) for i in range(2)], np.float64)
    background = dinuc_shuffle(x[0], 8, seed=0)

    explainer, attributions = _explained(model, x, background)

    assert "StopGradient" in explainer.rules_used
    assert attributions.values.shape == (2, 128, 4, 1)
    assert attributions.additivity_error < 1e-12


def test_tfshap_explains_the_dilated_model(K64):
    model = chrombpnet_like(K64, 128, filters=8)
    x = one_hot("ACGT" * 32, np.float64)[None]
    explainer = tfshap.compile(model, dinuc_shuffle(x[0], 4, seed=0), output="logcount_predictions")
    assert explainer.explain(x).additivity_error < 1e-12


# -- TF-MoDISco ----------------------------------------------------------------------------------
def _modisco_loader():
    """modisco-lite's own reader of ``-s``/``-a`` files (the ``arr_0`` array of an .npz)."""
    cli = pytest.importorskip("modiscolite.cli")
    if hasattr(cli, "_load_input"):
        return lambda path: np.asarray(cli._load_input(Path(path)))
    return lambda path: np.load(path)["arr_0"]  # modisco-lite 2.x reads np.load(path)["arr_0"] inline


def test_modisco_inputs_are_what_modisco_lite_reads(batch, tmp_path):
    load = _modisco_loader()
    rng = np.random.default_rng(0)
    hypothetical = rng.normal(size=(7, 60, 4, 1)).astype(np.float32)

    ohe, shap = write_modisco_inputs(tmp_path / "modisco", batch, hypothetical)

    assert (ohe.name, shap.name) == ("ohe.npz", "shap.npz")
    sequences, scores = load(ohe), load(shap)
    assert sequences.shape == scores.shape == (7, 4, 60)
    np.testing.assert_array_equal(sequences.transpose(0, 2, 1), batch)
    np.testing.assert_array_equal(scores.transpose(0, 2, 1), hypothetical[..., 0])


@pytest.mark.parametrize(
    "onehot, hypothetical, message",
    [
        (np.eye(4)[None], np.zeros((1, 4, 5)), r"hypothetical must have the shape of onehot, \(1, 4, 4\)"),
        (np.eye(4)[None], np.zeros((1, 4, 4, 2)), r"For several outputs, pass one"),
        (np.eye(4), np.zeros((4, 4)), r"a batch of sequences \(N, L, 4\); got shape \(4, 4\)"),
        (np.full((1, 4, 4), 0.5), np.zeros((1, 4, 4)), r"one-hot"),
        (
            np.eye(4)[None].repeat(3, 0), np.where(np.arange(3)[:, None, None] == 1, np.nan, np.ones((3, 4, 4))),
            r"NaN or infinite values in 1 sequence\(s\): \[1\]",
        ),
        (np.eye(4)[None], 2 * np.eye(4)[None], r"look like projected contributions"),
    ],
)
def test_modisco_inputs_bad_input(onehot, hypothetical, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        write_modisco_inputs(tmp_path, onehot, hypothetical)


def _planted_motif_data(n: int, length: int, motif: str, seed: int = 0):
    """Random sequences with ``motif`` at a random place, and hypothetical contributions that score it.

    The contributions are those of a linear model reading the motif where it was planted,
    ``f(x) = ⟨W, x[p : p + m]⟩`` with ``W = 2·onehot(motif) − ½``, against uniform references
    (0.25 per base): ``h[p + i, b] = W[i, b] − mean_c W[i, c]``, scaled per sequence by
    U(0.5, 1.5) and with N(0, 0.1²) noise everywhere.
    """
    rng = np.random.default_rng(seed)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, length))]
    weights = 2 * one_hot(motif) - 0.5
    centred = weights - weights.mean(axis=1, keepdims=True)
    hypothetical = rng.normal(0, 0.1, (n, length, 4)).astype(np.float32)
    for i, place in enumerate(rng.integers(10, length - 10 - len(motif), n)):
        x[i, place : place + len(motif)] = one_hot(motif)
        hypothetical[i, place : place + len(motif)] += rng.uniform(0.5, 1.5) * centred
    return x, hypothetical


def test_modisco_motifs_finds_a_planted_motif(tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("modiscolite")
    motif = "GATAAGCT"
    x, hypothetical = _planted_motif_data(400, 100, motif)
    ohe, shap = write_modisco_inputs(tmp_path, x, hypothetical)
    command = [sys.executable, "-c", "import sys; from modiscolite.cli import cli; sys.exit(cli())"]

    run = subprocess.run(
        [*command, "motifs", "-s", ohe, "-a", shap, "-n", "2000", "-w", "100", "-o", tmp_path / "motifs.h5"],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )

    assert run.returncode == 0, run.stderr[-3000:]
    with h5py.File(tmp_path / "motifs.h5") as results:
        assert "neg_patterns" not in results or len(results["neg_patterns"]) == 0
        ppm = results["pos_patterns/pattern_0/sequence"][:]  # (width, 4) base frequencies
    consensus = "".join("ACGT"[i] if p.max() > 0.9 else "n" for i, p in zip(ppm.argmax(axis=1), ppm))
    assert motif in consensus, consensus
