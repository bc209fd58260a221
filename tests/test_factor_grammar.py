"""One factor grammar (lens_steer.factors, no torch): plots' dose axis and every control check ask the parsed factor;
interventions check themselves; residual shifts and instructions have types of their own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lens_steer.errors import LensSteerError
from lens_steer.plots import factor_multiple
from lens_steer.report import _control_mean
from lens_steer.factors import (SWEEPS, Factor, Intervention, PromptInstruction, ResidualShift, factor_or_none,
                                is_control, parse_factor)


@pytest.mark.parametrize("text, family, multiple", [
    ("p_max", "p_max", 1.0),
    ("p_median*0.5", "p_median", 0.5),
    ("mean*4", "mean", 4.0),
    ("scale:3", "scale", 3.0),
    ("add:-1", "add", -1.0),
    ("control:p_max*2", "control:p_max", 2.0),
    ("control:p_max", "control:p_max", None),  # the null line, not a point of the dose curve
    ("zero", None, None),
    ("set:2", None, None),
    ("testmax*2", None, None),
    ("p10", None, None),
])
def test_family_and_multiple(text, family, multiple):
    factor = parse_factor(text)
    assert (factor.family, factor.multiple) == (family, multiple)
    assert factor_multiple(text) == (None if multiple is None else (family, multiple))


def test_every_sweep_is_one_family_of_distinct_multiples():
    for name, texts in SWEEPS.items():
        doses = [factor_multiple(t) for t in texts]
        assert {d[0] for d in doses} == {name}
        assert len({d[1] for d in doses}) == len(texts)


@pytest.mark.parametrize("text, control", [
    ("control:p_max", True), ("control:p_median*2", True), (" control:p_max ", True),
    ("p_max", False), ("zero", False), ("control", False), ("control:zero", False), ("", False), (float("nan"), False),
])
def test_is_control_asks_the_parsed_factor(text, control):
    assert is_control(text) is control


def test_factor_or_none_tolerates_what_is_no_factor():
    assert factor_or_none("p_max*2") == parse_factor("p_max*2")
    assert [factor_or_none(t) for t in ("p_maximum", "scale:", None, 3.0)] == [None] * 4


def test_control_mean_of_a_hand_written_table():
    """A table written by hand (a factor cell that is no factor, an empty one) still gives the controls' mean."""
    frame = pd.DataFrame({"factor": ["p_max", "control:p_max", "control:p_max", "controls?", None],
                          "layers": ["all", "all", 3, "all", "all"], "lss": [0.9, 0.6, 0.1, 0.0, 0.0],
                          "forcing_strict": [0.5, 0.2, 0.0, 0.0, 0.0]})
    assert _control_mean(frame) == pytest.approx(0.6)
    assert _control_mean(frame, "forcing_strict") == pytest.approx(0.2)
    assert _control_mean(frame[frame["factor"] == "p_max"]) is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(factor="p_maximum"), "valid forms"),
    (dict(factor="scale:1e400"), "non-finite"),
    (dict(factor=None), "neither a Factor"),
    (dict(factor="p_max", positions="middle"), "unknown positions"),
    (dict(factor="p_max", positions="last:0"), "unknown positions"),
    (dict(factor="p_max", layers="3"), "cannot use layers"),
    (dict(factor="p_max", layers=[1, "2"]), "cannot use layers"),
    (dict(factor="p_max", layers=True), "cannot use layers"),
    (dict(factor="p_max", layers=1.5), "cannot use layers"),
])
def test_intervention_checks_itself_when_built(kwargs, match):
    with pytest.raises(LensSteerError, match=match):
        Intervention("fr", **kwargs)


@pytest.mark.parametrize("layers, expected", [("all", [0, 1, 2, 3]), (2, [2]), (np.int64(1), [1]), ([3, 1], [1, 3]),
                                              ((0,), [0]), (range(2), [0, 1]), ([], [])])
def test_valid_layers_are_kept(layers, expected):
    iv = Intervention("fr", parse_factor("p_max"), layers=layers, positions="last:2")
    assert iv.layer_list(4) == expected
    assert iv.position_rule() == ("last", 2)


@pytest.mark.parametrize("text, cls, on_neurons, has_control", [
    ("p_max", Factor, True, True), ("diffmean*2", Factor, True, True), ("scale:2", Factor, True, False),
    ("zero", Factor, True, False), ("testmax+", Factor, True, False),
    ("resid:6*4", ResidualShift, False, True), ("control:resid:6*-4", ResidualShift, False, True),
    ("control-iso:resid:6*4", ResidualShift, False, True), ("control-cov:resid:6", ResidualShift, False, True),
    ("prompt:en", PromptInstruction, False, True), ("control:prompt:native", PromptInstruction, False, True),
])
def test_residual_shifts_and_instructions_have_their_own_types(text, cls, on_neurons, has_control):
    factor = parse_factor(text)
    assert type(factor) is cls and factor.text == text.strip()
    assert (factor.on_neurons, factor.has_control) == (on_neurons, has_control)
    assert not (factor.on_neurons and factor.layer is not None)  # a neuron factor acts on its intervention's layers


def test_the_types_keep_what_the_kinds_said():
    """The kind, value, layer and form each text parsed to before the types existed (the lss table's factor_kind)."""
    shift = parse_factor(" resid: 2 * 8 ")
    assert (shift.text, shift.kind, shift.value, shift.layer, shift.control) == ("resid: 2 * 8", "resid", 8.0, 2, False)
    assert shift == ResidualShift("resid: 2 * 8", 8.0, layer=2) and shift.family == "resid:2"
    control = parse_factor("control:resid:3")
    assert (control.kind, control.value, control.layer, control.control, control.multiple) == ("resid", 1.0, 3, True, None)
    asked = parse_factor("prompt:native")
    assert (asked.kind, asked.value, asked.form, asked.family, asked.amplifies) == ("prompt", 1.0, "native", None, True)
    assert parse_factor("control:prompt:en") == PromptInstruction("control:prompt:en", control=True, form="en")
    assert {parse_factor("resid:1"), parse_factor("resid:1")} == {ResidualShift("resid:1", 1.0, layer=1)}
    assert Intervention("fr", ResidualShift("resid:1*2", 2.0, layer=1)).parsed_factor().layer == 1


def test_the_grammar_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, lens_steer.factors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
