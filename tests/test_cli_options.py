"""The options derived from the configs' fields: each config field with an option is one, with the config's default
and shown in --help; every other option is listed here as no config field; and parsing builds the config back."""

from __future__ import annotations

import argparse
from dataclasses import MISSING

import pytest

from lens_steer.cli import config_from_args
from lens_steer.cli_parser import CONFIGS, build_parser
from lens_steer.compare import CompareConfig
from lens_steer.configs import ForcingConfig, IdentifyConfig, InspectConfig, LSSConfig, RecordConfig, SteerConfig
from lens_steer.evals import EvalConfig
from lens_steer.factors import PAPER_FACTORS
from lens_steer.models.load_config import LoadConfig
from lens_steer.options import cli_fields, positive_int

# The least each command needs to parse (its positionals and required options).
MINIMAL = {"identify": ["--out", "R"], "merge": ["S0", "--out", "R"], "neurons": ["R"], "lss": ["R"],
           "steer": ["R", "hello", "--to", "fr"], "forcing": ["R"], "eval": ["R", "--task", "xcopa"], "compare": ["R"],
           "inspect": ["R", "--layer", "0", "--neuron", "0"], "stability": ["R"], "report": ["R"], "figures": ["R"], "setup": []}
MINIMAL["harness"] = ["R", "--tasks", "xcopa_id"]  # lens-steer harness (issue 29)
# The options (by dest) that are no config field, per command: the only ones cli_parser writes by hand.
NOT_CONFIG = {"identify": {"out", "shard"}, "merge": {"shards", "out"},
              "neurons": {"run_dir", "export_pth", "per_layer"}, "lss": {"run_dir"}, "steer": {"run_dir", "prompt"},
              "forcing": {"run_dir"}, "eval": {"run_dir"}, "compare": {"run_dir"}, "inspect": {"run_dir"},
              "stability": {"run_dir"}, "report": {"run_dir", "out"}, "figures": {"run_dir", "out", "format", "compare"},
              "setup": {"skip_model"}}
MINIMAL["explore"], NOT_CONFIG["explore"] = ["R"], {"run_dir"}  # lens-steer explore
NOT_CONFIG["harness"] = {"run_dir"}  # lens-steer harness (issue 29)


def subparser(command: str) -> argparse.ArgumentParser:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def test_every_command_is_listed():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(action.choices) == set(MINIMAL) == set(NOT_CONFIG)
    assert set(CONFIGS) < set(MINIMAL)
    # every command that loads a model takes the placement options; stability reads the run's files only
    assert all(LoadConfig in configs for command, configs in CONFIGS.items() if command != "stability")


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_each_config_field_is_an_option_with_the_config_default(command):
    parser = subparser(command)
    args = build_parser().parse_args([command, *MINIMAL[command]])
    for config in CONFIGS[command]:
        for f, spec in cli_fields(config):
            assert spec.flag_for(f.name) in parser._option_string_actions, (command, f.name)
            if f.default is not MISSING:  # a required option: MINIMAL gave it
                assert getattr(args, f.name) == f.default, (command, f.name)


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_every_option_is_a_config_field_or_listed_as_none(command):
    dests = {a.dest for a in subparser(command)._actions if not isinstance(a, argparse._HelpAction)}
    fields = {f.name for config in CONFIGS.get(command, ()) for f, _ in cli_fields(config)}
    assert not fields & NOT_CONFIG[command]
    assert dests == fields | NOT_CONFIG[command]


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_help_shows_each_default(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100000")  # one line per option: no default is wrapped apart
    text = subparser(command).format_help()
    for config in CONFIGS[command]:
        for f, spec in cli_fields(config):
            if "(default" in spec.help or f.default is None or isinstance(f.default, bool) or f.default is MISSING:
                continue  # said in words, nothing to show, a flag, or required
            assert f"(default: {f.default})" in text, (command, f.name)


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_positive_int_options_refuse_zero(command, capsys):
    for config in CONFIGS[command]:
        for f, spec in cli_fields(config):
            if spec.type is positive_int:
                with pytest.raises(SystemExit) as exc:
                    build_parser().parse_args([command, *MINIMAL[command], spec.flag_for(f.name), "0"])
                assert exc.value.code == 2
                assert "expected a positive integer, got '0'" in capsys.readouterr().err


def argv_for(config) -> list[str]:
    """The options that give ``config`` (its fields that differ from their defaults), as a user types them."""
    argv = []
    for f, spec in cli_fields(config):
        value = getattr(config, f.name)
        if value != f.default:
            argv += [spec.flag_for(f.name)] if isinstance(value, bool) else [spec.flag_for(f.name), str(value)]
    return argv


PLACED = LoadConfig(dtype="bfloat16", attention="sdpa")
ROUND_TRIPS = {
    "lss": ["R"], "forcing": ["R"], "compare": ["R"], "eval": ["R"], "inspect": ["R"], "steer": ["R", "hello"],
}
CONFIGURED = [
    ("lss", LSSConfig(cloze="mlama-dod", cloze_path="m", langs="en,fr", factors="p_max,zero", sweep="p_max", seeds=2,
                      join="reference", per_layer="p_max", max_facts=3, batch_size=4, damage_bound=5.5, forcing=True,
                      forcing_tokens=7, forcing_batch_size=2, progress=False)),
    ("lss", LSSConfig(per_layer="all")),  # --per-layer alone
    ("steer", SteerConfig(to="fr,ru", factor="p_median", layers="1-2", positions="last:2", deactivate="en",
                          max_new_tokens=5, chat_template=True, max_prompt_tokens=64, progress=False)),
    ("forcing", ForcingConfig(targets="fr", factors="p_max", max_new_tokens=4, batch_size=2, progress=False,
                              chat_template=True, forcing_prompts=2, forcing_bank="handwritten")),
    ("eval", EvalConfig(task="udhr-mt", factor="p_max*2", targets="fr", eval_langs="fr,ja", data="d", limit=3,
                        positions="prompt", max_new_tokens=9, prompt="untargeted", batch_size=3, progress=False)),
    ("eval", EvalConfig(task="xcopa", join="reference")),
    ("compare", CompareConfig(methods="p_max,diffmean*best", reference="diffmean*best", langs="en,fr", cloze_path="m",
                              max_facts=4, held_out=3, forcing_tokens=5, forcing_prompts=5, forcing_bank="handwritten",
                              seeds=2, ppl_articles=2,
                              damage_bound=3.0, join="reference", batch_size=8, progress=False)),
    ("inspect", InspectConfig(layer=1, neuron=7, top=3, langs="fr", corpus="files", corpus_path="c", split="all",
                              max_tokens=50, batch_size=2, progress=False)),
]


@pytest.mark.parametrize("command,config", CONFIGURED, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CONFIGURED)])
def test_config_from_args_round_trips(command, config):
    args = build_parser().parse_args([command, *ROUND_TRIPS[command], *argv_for(config), *argv_for(PLACED)])
    assert config_from_args(type(config), args) == config
    assert config_from_args(LoadConfig, args) == PLACED
    assert config_from_args(type(config), args, progress=True).progress is True  # overrides win


def test_identify_round_trips_with_its_record_config():
    record = RecordConfig(site="post", batch_size=3, padding_side="left", max_tokens=100, n_sentence_means=5,
                          reference_compat=True)
    config = IdentifyConfig(corpus="files", corpus_path="c", split="all", langs="en,fr", method="ap", top_rate=0.2,
                            filter_rate=0.5, activation_bar=0.9, record=record, progress=False)
    args = build_parser().parse_args(["identify", "--out", "R", *argv_for(config), *argv_for(record)])
    assert config_from_args(IdentifyConfig, args, record=config_from_args(RecordConfig, args)) == config
    assert args.out == "R" and args.shard is None  # the options that are no config field still parse


def test_defaults_are_written_once():
    assert LSSConfig().factors == ",".join(PAPER_FACTORS)
    assert config_from_args(LSSConfig, build_parser().parse_args(["lss", "R"])) == LSSConfig()
    defaults = config_from_args(LoadConfig, build_parser().parse_args(["lss", "R"]))
    assert defaults == LoadConfig() and defaults.device == "cpu" and defaults.dtype is None
