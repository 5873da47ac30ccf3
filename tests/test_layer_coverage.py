"""The layer coverage table's claims are tests: every row of tools/layer_coverage.json holds.

Supported rows are built side by side, one model per group of rows sharing their inputs,
with one output, the sum of the rows' heads, compiled and explained once: it must sum to
``f(x) − E[f(background)]``, and its explained outputs must be the model's inference outputs,
within the rows' tolerance. Where a group misses, each of its rows is explained alone, so that
only the rows at fault fail. Error rows must raise the error the
table names, with the same op types. The README section must be what the results render to.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from _tools import load_tool

import tfshap

cov = load_tool("layer_coverage")
RESULTS = cov.load_results()
ROWS = {keras_name: cov.rows(keras_name) for keras_name in cov.KERASES}


def _claims(status):
    return [(k, row) for k in cov.KERASES for row, result in RESULTS[k].items() if result["status"] == status]


SUPPORTED = _claims(cov.SUPPORTED)
ERRORS = _claims(cov.ERROR)


def _groups() -> dict:
    groups = defaultdict(dict)
    for keras_name, row in SUPPORTED:
        spec = ROWS[keras_name][row]
        groups[(keras_name, cov.group_key(row, spec))][row] = spec
    return groups


GROUPS = _groups()
_gaps: dict = {}


def _miss(keras_name: str, row: str) -> float:
    """The row's miss relative to its tolerance: its group's (built and explained once per group), or its own
    where the group misses."""
    spec = ROWS[keras_name][row]
    key = (keras_name, cov.group_key(row, spec))
    if key not in _gaps:
        _gaps[key] = cov.explain_rows(cov.keras_module(keras_name), GROUPS[key], summed=True)
    if _gaps[key][row] < 1:
        return _gaps[key][row]
    return cov.explain_rows(cov.keras_module(keras_name), {row: spec})[row]


def test_the_readme_table_is_what_the_results_render_to():
    text = cov.README.read_text(encoding="utf-8")
    assert cov.BEGIN in text and cov.END in text
    assert cov.updated_readme(text, cov.render(RESULTS)) == text, "run python tools/layer_coverage.py --write"


@pytest.mark.parametrize("keras_name", cov.KERASES)
def test_the_results_have_a_row_for_every_layer_class(keras_name):
    assert set(RESULTS[keras_name]) == set(ROWS[keras_name]), "run python tools/layer_coverage.py --write"
    for row, spec in ROWS[keras_name].items():
        if isinstance(spec, str):
            assert RESULTS[keras_name][row] == {"status": cov.NOT_APPLICABLE_STATUS, "reason": spec}


def test_the_classes_are_enumerated_from_the_kerases():
    # A few classes each Keras must have, so that the enumeration cannot silently go empty.
    for keras_name in cov.KERASES:
        assert {"Dense", "Conv2D", "Dot", "PReLU", "UpSampling2D", "Cropping2D", "Lambda"} <= set(ROWS[keras_name])
    assert len(SUPPORTED) > 150 and len(ERRORS) >= 6


@pytest.mark.parametrize("keras_name,row", SUPPORTED, ids=[f"{k}-{r}" for k, r in SUPPORTED])
def test_supported_rows_sum_to_the_change_of_the_output(keras_name, row):
    """Additive, and the outputs explained are the model's inference outputs, within the row's tolerance."""
    assert _miss(keras_name, row) < 1


@pytest.mark.parametrize("keras_name,row", ERRORS, ids=[f"{k}-{r}" for k, r in ERRORS])
def test_error_rows_raise_the_error_they_name(keras_name, row):
    claim = RESULTS[keras_name][row]
    K = cov.keras_module(keras_name)
    if "at_run_time" in claim:
        with pytest.raises(getattr(tfshap, claim["at_run_time"])):
            cov.explain_rows(K, {row: ROWS[keras_name][row]})
        return
    with pytest.raises(tfshap.UnsupportedOpError) as error:
        cov.explain_rows(K, {row: ROWS[keras_name][row]})
    assert error.value.op_types == claim["ops"]
