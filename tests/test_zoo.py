"""The real-architectures tables' claims are tests: tools/zoo_results.json renders to the README, has
a row for every keras-hub backbone class and every Keras Application, and a few cheap rows re-check.

The full run takes most of an hour (``python tools/zoo.py --write``, by hand); here a handful of
rows are rebuilt, compiled and explained in float32 and float64 (no timings): a supported row
must still add up, a refused one must still name the same op types. keras-hub rows skip
cleanly where keras-hub (the ``zoo`` extra) is not installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _tools import load_tool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfshap  # noqa: E402

zoo = load_tool("zoo")
RESULTS = zoo.load_results()

# Outputs are softmax probabilities (at most 1). A float64 sum over the graph's roundings stays
# within eps64 · 2**22 ≈ 9e-10 (millions of roundings); float32's within eps32 · 2**10 ≈ 1.2e-4
# (a thousand roundings of eps32 = 2**-23 each, on values at most 1). Rows whose float64 build
# computes parts in float32 (keras-hub's softmax and rotary embeddings) get float32's bound.
FLOAT64_BOUND = 2.0**-52 * 2**22
FLOAT32_BOUND = 2.0**-23 * 2**10

#: Cheap rows re-checked here (a few seconds each): supported backbones, one refused, one application.
#: Bart was the refused one (a GatherV2 of the decoder's positions beside the attributed layer) until the
#: integer-mask gather rule: now supported; DFine (a GatherV2 by varying indices inside a loop body) is refused.
HUB_SAMPLE = ("DistilBertBackbone", "DenseNetBackbone", "BartBackbone", "DFineBackbone")
APPLICATION_SAMPLE = (("keras3", "MobileNet"),)


def test_the_readme_tables_are_what_the_results_render_to():
    text = zoo.README.read_text(encoding="utf-8")
    for marker in (zoo.HUB_BEGIN, zoo.HUB_END, zoo.APPS_BEGIN, zoo.APPS_END):
        assert marker in text
    assert zoo.updated_readme(text, RESULTS) == text, "run python tools/zoo.py --readme (or --write)"


def test_a_changed_result_changes_the_tables():
    # The check can fail: one changed error must show in the README tables.
    text = zoo.README.read_text(encoding="utf-8")
    name = next(n for n, row in RESULTS["hub"].items() if row["status"] == zoo.SUPPORTED)
    changed = {**RESULTS, "hub": {**RESULTS["hub"], name: {**RESULTS["hub"][name], "float32": 0.5}}}
    assert zoo.updated_readme(text, changed) != text


def test_the_results_have_a_row_for_every_backbone_class():
    pytest.importorskip("keras_hub")
    classes = zoo.hub_classes()
    assert set(RESULTS["hub"]) == set(classes), "run python tools/zoo.py --write"
    assert len(classes) > 50
    assert {"BertBackbone", "GPT2Backbone", "ViTBackbone", "SwinTransformerBackbone"} <= set(classes)
    for name, spec in zoo.HUB.items():
        if isinstance(spec, str):
            assert RESULTS["hub"][name] == {"status": zoo.NOT_APPLICABLE, "reason": spec}


@pytest.mark.parametrize("keras_name", zoo.KERASES)
def test_the_results_have_a_row_for_every_application(keras_name):
    rows = RESULTS["applications"][keras_name]
    assert set(rows) == set(zoo.application_names(keras_name)), "run python tools/zoo.py --write"
    for name, row in rows.items():
        assert (row["status"] == zoo.NOT_RUN) == (name not in zoo.DEFAULT_APPLICATIONS), name


def test_swin_is_supported_now_that_roll_has_a_rule():
    row = RESULTS["hub"]["SwinTransformerBackbone"]
    assert row["status"] == zoo.SUPPORTED and row["float32"] < FLOAT32_BOUND


@pytest.mark.parametrize("name", ["MixtralBackbone", "GptOssBackbone", "CLIPBackbone", "Gemma3nBackbone"])
def test_rows_whose_batch_axis_moves_are_exact_now_that_it_is_tracked(name):
    """A mixture of experts (its experts on (experts, tokens, ·)), CLIP's head (rows along the columns of a
    matmul) and Gemma 3n's AltUp copies (stacked on axis 0) were refused, their reductions taken to run
    over the batch axis; the tracked batch axis makes them exact."""
    row = RESULTS["hub"][name]
    assert row["status"] == zoo.SUPPORTED and row["float32"] < FLOAT32_BOUND and row["float64"] < FLOAT32_BOUND


def test_qwen3_5_is_exact_now_that_the_rsqrt_rule_takes_no_unit_scale():
    """Its gated RMS norm in float32 took the slope for the secant of rsqrt at small variances (2.6e-4 off)."""
    row = RESULTS["hub"]["Qwen3_5Backbone"]
    assert row["status"] == zoo.SUPPORTED and row["float32"] < FLOAT32_BOUND and row["float64"] < FLOAT32_BOUND


def _assert_row_holds(claim: dict, fresh: dict):
    assert fresh["status"] == claim["status"], fresh
    if claim["status"] == zoo.REFUSED:
        assert fresh["ops"] == claim["ops"]
        return
    assert fresh["float32"] < FLOAT32_BOUND
    if "float64" in claim:
        in_float32 = "float32" in claim.get("float64_note", "")
        assert fresh["float64"] < (FLOAT32_BOUND if in_float32 else FLOAT64_BOUND)


@pytest.mark.parametrize("name", HUB_SAMPLE)
def test_backbone_rows_hold(name):
    pytest.importorskip("keras_hub")
    _assert_row_holds(RESULTS["hub"][name], zoo.hub_row(name, timed=False))


@pytest.mark.parametrize("keras_name,name", APPLICATION_SAMPLE)
def test_application_rows_hold(keras_name, name):
    _assert_row_holds(RESULTS["applications"][keras_name][name], zoo.application_row(keras_name, name, timed=False))


# ---------------------------------------------------------------------------------------
# token models padded differently from the background
#
# Today's behaviour (README, "Recurrent models, masks and token models"), until per-sample
# references with matching padding exist: where the padding mask reaches the attention through a
# tf.where that switches (GPT-2), the sums stay exact but the padded positions get credit (the
# sample's pad embeddings against the reference's real tokens); where it is cast to a float and
# multiplied in (Falcon), explaining stops with MaskMismatchError. Padded like the background,
# padded positions get exactly nothing.

PAD = 3


def _explainer(name: str, pad: int):
    """The zoo's backbone ``name`` (float64) compiled against a background whose last ``pad`` tokens are padding."""
    pytest.importorskip("keras_hub")
    model, spec = zoo.hub_model(name, "float64")
    background = _padded(model, spec, zoo.N_BACKGROUND, 0, pad)
    # An explicit batch_size: the workaround for inputs with a None dimension.
    return model, spec, tfshap.compile(model, background, inputs=spec.attributed, batch_size=2 * zoo.N_BACKGROUND)


def _padded(model, spec, n: int, seed: int, pad: int) -> list[np.ndarray]:
    """``n`` rows of the model's inputs whose last ``pad`` tokens are padding (mask 0, token id 0)."""
    arrays = zoo.hub_data(model, spec, n, seed)
    names = [zoo._input_name(t) for t in model.inputs]
    for key in ("token_ids", "padding_mask"):
        arrays[names.index(key)][:, arrays[names.index(key)].shape[1] - pad :] = 0
    return arrays


@pytest.fixture(scope="module")
def gpt2():
    return _explainer("GPT2Backbone", 0)


def test_gpt2_padded_unlike_the_background_adds_up_but_credits_the_padding(gpt2):
    model, spec, explainer = gpt2
    result = explainer.explain(_padded(model, spec, 2, 1, PAD))
    assert result.values.shape == (2, zoo.SEQUENCE, 16, 3)
    np.testing.assert_allclose(result.values.sum(axis=(1, 2)) + result.base_values, result.outputs, atol=FLOAT64_BOUND)
    # the padded positions carry part of the change (softmax outputs move by about 1e-2 here)
    assert np.abs(result.per_token()[:, -PAD:]).max() > 1e-4


def test_gpt2_padded_like_the_background_gives_the_padding_nothing():
    model, spec, explainer = _explainer("GPT2Backbone", PAD)
    result = explainer.explain(_padded(model, spec, 2, 1, PAD))
    assert result.additivity_error < FLOAT64_BOUND
    assert np.all(result.per_token()[:, -PAD:] == 0.0)
    assert np.abs(result.per_token()[:, :-PAD]).max() > 1e-4


def test_falcon_padded_unlike_the_background_raises_mask_mismatch():
    model, spec, explainer = _explainer("FalconBackbone", 0)
    with pytest.raises(tfshap.MaskMismatchError, match="differs between a sample and a background row"):
        explainer.explain(_padded(model, spec, 2, 1, PAD))
    # padded like the background: the same model explains exactly
    _, _, padded_explainer = _explainer("FalconBackbone", PAD)
    assert padded_explainer.explain(_padded(model, spec, 2, 1, PAD)).additivity_error < FLOAT32_BOUND
