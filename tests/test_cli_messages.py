"""What the command line says: Ctrl-C per command, errors under an open progress bar, the LSS null and its two
means, empty self/cross evaluation means, --quiet everywhere, and the figure list of `figures --help`."""

from __future__ import annotations

import inspect
import json
import re
import sys

import pytest

from helpers import tiny_run
from lens_steer import cli
from lens_steer.cli import INTERRUPTED, main
from lens_steer.cli_parser import FIGURES
from lens_steer.errors import LensSteerError
from lens_steer.steer import parse_factors

# ---------------------------------------------------------------------------------------------------------------
# Ctrl-C: every command says what it really keeps
# ---------------------------------------------------------------------------------------------------------------
ARGV = {"identify": ["--out", "R"], "merge": ["S0", "S1", "--out", "R"], "neurons": ["R"], "lss": ["R"],
        "steer": ["R", "hello", "--to", "fr"], "forcing": ["R"], "eval": ["R", "--task", "xcopa"], "compare": ["R"],
        "inspect": ["R", "--layer", "0", "--neuron", "0"], "stability": ["R"], "report": ["R"], "figures": ["R"],
        "setup": []}
ARGV["explore"] = ["R"]  # lens-steer explore
# What each line must say, from the stage's own writes (see INTERRUPTED in lens_steer/cli.py).
KEEPS = {"identify": "finished languages are kept in R/partial; rerun the same command to resume",
         "merge": "nothing was written; a rerun starts over",
         "neurons": "nothing was written; a rerun starts over",
         "lss": "lss.csv and lss_summary.json only when every factor is done, so neither was written",
         "steer": "nothing was appended; a rerun starts over",
         "forcing": "forcing.csv and its generations only when every target is done, so nothing was written",
         "eval": "its xcopa table only when every language is done, so nothing was written",
         "compare": "compare.csv and compare_summary.json only after the last method, so nothing was written",
         "inspect": "writes no files; a rerun starts over",
         "stability": "only when every resample is done, so nothing was written",
         "report": "only when it is complete, so nothing was written",
         "figures": "every file listed as written is complete and kept; a rerun writes them all again",
         "setup": "each cached only once complete; a rerun redoes what was unfinished"}
KEEPS["explore"] = "only adds finished neuron pages to explore_cache.json"  # lens-steer explore
ARGV["harness"] = ["R", "--tasks", "xcopa_id"]  # lens-steer harness (issue 29)
KEEPS["harness"] = "eval_harness.csv and its cells' JSON only when every cell is done, so nothing was written"


def test_every_command_has_an_interrupt_line():
    assert set(INTERRUPTED) == set(cli.HANDLERS) == set(ARGV) == set(KEEPS)
    # only identify resumes: no other line may promise it
    assert [c for c, text in INTERRUPTED.items() if "resume" in text] == ["identify"]


@pytest.mark.parametrize("command", sorted(ARGV))
def test_interrupt_says_what_the_command_keeps(command, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.HANDLERS, command, interrupted)
    assert main([command, *ARGV[command]]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lens-steer: interrupted; ")
    assert KEEPS[command] in lines[0]


def test_interrupted_stages_leave_nothing_behind(tiny_dirs, tmp_path, monkeypatch, capsys):
    """lss, forcing, eval and compare stopped in their work: no result file appears, as their lines say."""
    import lens_steer.evals as evals
    import lens_steer.evals.data as eval_data
    import lens_steer.evals.run as eval_run
    import lens_steer.forcing as forcing
    import lens_steer.lss as lss

    run = tiny_run(tiny_dirs["llama"], tmp_path, ["en", "fr", "ru"])
    before = sorted(p.name for p in run.iterdir())

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lss, "run_lss", stop)
    monkeypatch.setattr(forcing, "run_forcing", stop)
    monkeypatch.setattr(eval_run, "load_task_data", lambda *a, **k: {})  # where eval_for_run looks them up
    monkeypatch.setattr(eval_run, "run_eval", stop)
    monkeypatch.setattr(eval_data, "load_udhr_eval", lambda *a, **k: {})
    monkeypatch.setattr(evals, "eval_ppl", stop)
    capsys.readouterr()
    for argv in (["lss", str(run), "--max-facts", "2", "--factors", "p_max", "--quiet"],
                 ["forcing", str(run), "--factors", "p_max", "--quiet"],
                 ["eval", str(run), "--task", "udhr-ppl", "--factor", "p_max", "--quiet"],
                 ["compare", str(run), "--methods", "p_max", "--max-facts", "2", "--quiet"]):
        assert main(argv) == 130, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("nothing was written" in err or "neither was written" in err), err
    assert sorted(p.name for p in run.iterdir()) == before


# ---------------------------------------------------------------------------------------------------------------
# An error or an interrupt under an open progress bar starts its own line
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raised,code", [(LensSteerError("no facts: pass --langs"), 2), (KeyboardInterrupt(), 130)])
def test_error_line_never_lands_on_a_progress_bar(raised, code, monkeypatch, capsys):
    import lens_steer.lss as lss
    from tqdm.auto import tqdm

    def failing_stage(run, config, load=None):
        outer = tqdm(total=4, desc="LSS", file=sys.stderr)
        inner = tqdm(total=3, desc="batches", file=sys.stderr, leave=False)
        outer.update(1)
        inner.update(2)
        raise raised

    monkeypatch.setattr(lss, "lss_for_run", failing_stage)
    assert main(["lss", "RUN"]) == code
    err = capsys.readouterr().err
    assert "LSS" in err  # the bar was drawn: the test shows what it claims
    last = err.split("\n")[-2]  # the line the message is on: it ends the output and nothing was drawn over it
    assert err.endswith("\n") and last.startswith("lens-steer: ") and "\r" not in last, repr(err)
    import gc

    gc.collect()  # a bar the garbage collector closes later must not redraw below the message
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------------------------
# LSS: the null it was compared with, and both means
# ---------------------------------------------------------------------------------------------------------------
def _rows(factor: str, lss: float, langs=("en", "fr", "ru"), targets=("en", "fr", "ru")) -> list[dict]:
    return [dict(factor=factor, layers="all", source=s, target=t, lss=lss, mean_shift=1.0, target_gain=1.0,
                 source_damage=-1.0, target_wins=0.5, target_wins_base=0.0, chance=1 / 3, specificity=0.2, n_facts=4)
            for s in langs for t in targets if s != t]


def test_lss_without_a_control_says_its_null_is_a_coin_flip():
    from lens_steer.lss import summarise
    from lens_steer.tables import format_lss_result

    rows = _rows("p_max", 1.0)
    summary = summarise(rows, parse_factors("p_max"))
    text = format_lss_result(summary, rows)
    assert "chance (0.5)" not in text and "0.500" not in summary["reason"]
    assert "LSS 1.000 above 0.5 (a coin flip: no control among the factors)" in summary["reason"]
    assert "add control:p_max to --factors" in text


def test_lss_with_a_control_names_it():
    from lens_steer.lss import summarise
    from lens_steer.tables import format_lss_result

    rows = _rows("p_max", 1.0) + _rows("control:p_max", 0.625)
    summary = summarise(rows, parse_factors("p_max,control:p_max"))
    assert "LSS 1.000 above control:p_max's LSS 0.625," in summary["reason"]
    assert "add control:p_max" not in format_lss_result(summary, rows)


def test_mean_lss_with_the_diagonal():
    from lens_steer.lss import summarise
    from lens_steer.tables import format_factor_table

    summary = summarise(_rows("p_max", 0.9), parse_factors("p_max"))
    entry = summary["factors"]["p_max"]
    assert entry["mean_lss"] == pytest.approx(0.9)
    assert entry["mean_lss_with_diagonal"] == pytest.approx(0.9 * 6 / 9)  # 3 x 3 matrix, 3 zeros on the diagonal
    table = format_factor_table(summary)
    assert "w/diag" in table and " 0.600 " in table.splitlines()[2]
    # ru has no neurons (not a target): a 3 x 2 matrix with 2 diagonal cells (en, fr), ru's row has none
    skipped = summarise(_rows("p_max", 0.9, targets=("en", "fr")), parse_factors("p_max"))["factors"]["p_max"]
    assert skipped["mean_lss_with_diagonal"] == pytest.approx(0.9 * 4 / 6)


def test_lss_command_prints_and_writes_both_means(tiny_dirs, tmp_path, capsys):
    run = tiny_run(tiny_dirs["llama"], tmp_path, ["en", "fr", "ru"])
    capsys.readouterr()
    assert main(["lss", str(run), "--max-facts", "2", "--factors", "p_max", "--quiet"]) == 0
    out = capsys.readouterr().out
    entry = json.loads((run / "lss_summary.json").read_text())["factors"]["p_max"]
    assert entry["mean_lss_with_diagonal"] == pytest.approx(entry["mean_lss"] * 6 / 9)
    assert "w/diag" in out and f"{entry['mean_lss_with_diagonal']:.3f}" in out
    assert "chance (0.5)" not in out and "as no control factor was run" in out


# ---------------------------------------------------------------------------------------------------------------
# eval: a missing self- or cross-language mean is said, with what to pass
# ---------------------------------------------------------------------------------------------------------------
def _eval_rows(evals, targets):
    rows = [dict(intervened="none", eval_lang=e, metric="acc", value=0.5) for e in evals]
    return rows + [dict(intervened=t, eval_lang=e, metric="acc", value=0.75) for t in targets for e in evals]


def test_eval_without_cross_pairs_says_why():
    from lens_steer.evals import self_cross
    from lens_steer.tables import format_eval

    rows = _eval_rows(["fr"], ["fr"])
    text = format_eval("xcopa", "p_max", rows, self_cross(rows))
    assert "nan" not in text and "n=0" not in text
    assert "self +0.25 (n=1)  cross none" in text
    assert "cross-language: none (fr is the only evaluation language and the only intervened one; add --targets" in text


def test_eval_without_self_pairs_says_why():
    from lens_steer.evals import self_cross
    from lens_steer.tables import format_eval

    rows = _eval_rows(["fr", "en"], ["ru"])
    text = format_eval("xcopa", "p_max", rows, self_cross(rows))
    assert "nan" not in text and "self none  cross +0.25 (n=2)" in text
    assert "self-language: none (no intervened language (ru) is an evaluation language (fr, en)" in text


def test_eval_with_only_missing_values_says_so():
    from lens_steer.evals import self_cross
    from lens_steer.tables import format_eval

    rows = _eval_rows(["fr", "en"], ["fr"])
    rows[-1]["value"] = float("nan")  # fr's neurons evaluated in en: no value
    text = format_eval("xcopa", "p_max", rows, self_cross(rows))
    assert "cross none" in text and "cross-language: none (every acc value of those cells" in text


# ---------------------------------------------------------------------------------------------------------------
# --quiet: steer, forcing and inspect take it too
# ---------------------------------------------------------------------------------------------------------------
def test_quiet_is_accepted_and_silences_the_bars(tiny_dirs, tmp_path, capsys):
    run = tiny_run(tiny_dirs["llama"], tmp_path, ["en", "fr", "ru"])
    capsys.readouterr()
    inspect_argv = ["inspect", str(run), "--layer", "1", "--neuron", "0", "--top", "2", "--langs", "fr"]
    assert main(inspect_argv) == 0
    loud = capsys.readouterr()
    assert "fr:" in loud.err  # the scan's bar, per language
    assert main([*inspect_argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "top 2 tokens" in quiet.out  # results still printed

    forcing_argv = ["forcing", str(run), "--targets", "fr", "--factors", "p_max", "--max-new-tokens", "2"]
    assert main(forcing_argv) == 0
    assert "forcing" in capsys.readouterr().err
    assert main([*forcing_argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "mean forcing success" in quiet.out

    assert main(["steer", str(run), "--to", "fr", "--max-new-tokens", "2", "--quiet", "Le"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "baseline" in quiet.out


# ---------------------------------------------------------------------------------------------------------------
# figures --help lists every figure run_figures can make
# ---------------------------------------------------------------------------------------------------------------
def test_figures_list_matches_run_figures():
    from lens_steer import report

    # run_figures and the helpers it calls for each artifact
    source = "".join(inspect.getsource(f) for f in (report.run_figures, report._lss_figures, report._stability_figure,
                                                     report._eval_figures))
    keys = set(re.findall(r'figs\["([^"]+)"\]', source))
    dynamic = [re.sub(r"\{[^}]*\}", "<task>", name) for name in re.findall(r'figs\[f"([^"]+)"\]', source)]
    assert keys and dynamic == ["downstream_<task>", "downstream_<task>_values"]  # the parse found what it looks for
    made = keys | set(dynamic)
    assert made == {name for name, _ in FIGURES}


def test_figures_help_lists_them(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["figures", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, what in FIGURES:
        assert f"  {name:<22} {what}" in out
    assert "gain_vs_damage" in out and "compare_methods" in out
