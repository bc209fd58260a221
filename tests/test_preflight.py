"""Bad input is one line and exit code 2, found before the model loads wherever the run's manifest, its tokenizer
files or the command line can tell (issue 25): devices, one-language LSS, layers out of range, --chat-template
without a template, model names that cannot load, negative doses, empty and over-long prompts, special tokens."""

from __future__ import annotations

import json
import time
import warnings

import pytest
import torch

from helpers import SENTENCES, save_tiny_hf, tiny_run
from lens_steer import distributed, generation
from lens_steer.cli import main
from lens_steer.cli_parser import build_parser
from lens_steer.errors import LensSteerError
from lens_steer.models import LoadConfig, check_model_spec, has_chat_template, load_model
from lens_steer.neurons import NeuronSet
from lens_steer.steer import check_layers, parse_factor

PROMPT = "The cat"


@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory):
    """A 2-layer gemma2 run of en, fr, ru with fixed neuron sets (every language has some)."""
    out = tiny_run(tiny_dirs["gemma2"], tmp_path_factory.mktemp("preflight"), ("en", "fr", "ru"))
    neurons = NeuronSet.load(out)
    neurons.neurons.update(en=[[0, 2]] * 2, fr=[[1, 3]] * 2, ru=[[4, 5]] * 2)
    neurons.save(out)
    return out


@pytest.fixture
def no_load(monkeypatch):
    """Every way a command loads a model raises (and is counted): the refusal must come before any of them."""
    calls: list[str] = []

    def refuse(name):
        def loader(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called: the model was loaded before the input was checked")
        return loader

    monkeypatch.setattr("lens_steer.models.load_model", refuse("load_model"))  # callers import it from the package
    monkeypatch.setattr("lens_steer.models.loading._boot", refuse("_boot"))  # load_model looks it up there
    monkeypatch.setattr("lens_steer.run.Run.model", refuse("Run.model"))
    return calls


@pytest.fixture
def no_boot(monkeypatch):
    """load_model itself runs (it checks the name), but booting a model or converting the embedded one raises."""
    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append("boot")
        raise AssertionError("the model was booted before its name was checked")

    monkeypatch.setattr("lens_steer.models.loading._boot", refuse)  # where load_model looks them up
    monkeypatch.setattr("lens_steer.models.loading.ensure_embedded_model", refuse)
    return calls


def refused(argv, capsys, calls) -> str:
    """Run the CLI: exit code 2, exactly one stderr line that is the error, and no loader called; the line."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("lens-steer: error: ")
    assert calls == []
    return err[0]


# ---- 1. devices ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["steer", "{run}", "--to", "fr", "--device", "tpu", PROMPT],
     "unknown device 'tpu'; use cpu, cuda, cuda:N (N a GPU index) or mps"),
    (["lss", "{run}", "--device", "cpu:1"], "unknown device 'cpu:1'"),
    (["lss", "{run}", "--device", "cuda"], "--device cuda: no CUDA device here; use --device cpu"),
    (["forcing", "{run}", "--device", "cuda:0"], "no CUDA device here; use --device cpu"),
    (["eval", "{run}", "--task", "udhr-ppl", "--factor", "p_max", "--device", "cuda"], "no CUDA device here"),
    (["compare", "{run}", "--device", "cuda"], "no CUDA device here"),
    (["inspect", "{run}", "--layer", "0", "--neuron", "1", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_a_device_this_machine_lacks_is_one_line(run, capsys, no_load, monkeypatch, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert message in refused([a.format(run=run) for a in argv], capsys, no_load)


def test_identify_on_a_missing_device_writes_nothing(tiny_dirs, corpus_dir, tmp_path, capsys, no_load, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    line = refused(["identify", "--model", tiny_dirs["gemma2"], "--corpus", "files", "--corpus-path", corpus_dir,
                    "--langs", "en,fr", "--out", out, "--quiet", "--device", "cuda"], capsys, no_load)
    assert "no CUDA device here" in line
    assert not (out / "stats.safetensors").exists() and not (out / "manifest.json").exists()


def test_cuda_index_beyond_the_gpus_is_one_line(run, capsys, no_load, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    line = refused(["steer", run, "--to", "fr", "--device", "cuda:2", PROMPT], capsys, no_load)
    assert "this machine has 2 CUDA device(s), cuda:0..cuda:1" in line
    assert LoadConfig(device="cuda:1").device == "cuda:1"  # an index it has is fine


def test_torchrun_device_for_still_gives_each_rank_its_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed, "current", lambda: distributed.World(1, 2))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert LoadConfig(device=distributed.device_for("cuda")).device == "cuda:1"
    monkeypatch.setenv("LOCAL_RANK", "2")  # a rank without a GPU of its own: one line, not a CUDA traceback
    with pytest.raises(LensSteerError, match="this machine has 2 CUDA device"):
        LoadConfig(device=distributed.device_for("cuda"))


# ---- 2. one-language LSS / compare -----------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["lss", "{run}", "--langs", "en"], ["compare", "{run}", "--langs", "fr"]])
def test_lss_and_compare_need_two_languages(run, capsys, no_load, argv):
    line = refused([a.format(run=run) for a in argv], capsys, no_load)
    assert "LSS needs at least two languages (a source and a target)" in line and "--langs en,fr" in line


# ---- 3. layers the manifest knows are out of range --------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["lss", "{run}", "--factors", "p_max,resid:5*2"], "resid:5 is out of range: this model has layers 0..1"),
    (["lss", "{run}", "--factors", "control:resid:2"], "resid:2 is out of range"),
    (["steer", "{run}", "--to", "fr", "--factor", "resid:9", PROMPT], "resid:9 is out of range"),
    (["steer", "{run}", "--to", "fr", "--layers", "1-4", PROMPT],
     "layers [2, 3, 4] out of range: this model has layers 0..1"),
    (["steer", "{run}", "--to", "fr", "--layers", "7", PROMPT], "layers [7] out of range"),
    (["forcing", "{run}", "--factors", "p_max,resid:2*4"], "resid:2 is out of range"),
    (["eval", "{run}", "--task", "udhr-ppl", "--factor", "resid:7*2"], "resid:7 is out of range"),
    (["compare", "{run}", "--methods", "p_max,resid:3*best"], "resid:3*best: layer 3 is out of range"),
])
def test_layers_out_of_range_are_refused_before_loading(run, capsys, no_load, argv, message):
    assert message in refused([a.format(run=run) for a in argv], capsys, no_load)


def test_check_layers_without_a_recorded_count_leaves_it_to_the_load():
    check_layers(None, [parse_factor("resid:99")], [99])  # an old manifest: the check after loading decides
    check_layers(2, [parse_factor("resid:1*-4"), parse_factor("p_max")], [0, 1])
    with pytest.raises(LensSteerError, match=r"layers \[2\] out of range"):
        check_layers(2, layers=2)


# ---- 4. --chat-template without a template ---------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["steer", "{run}", "--to", "fr", "--chat-template", PROMPT],
                                  ["forcing", "{run}", "--chat-template"]])
def test_chat_template_is_checked_from_the_tokenizer_files(run, capsys, no_load, argv):
    line = refused([a.format(run=run) for a in argv], capsys, no_load)
    assert "has no chat template (a base model); drop --chat-template" in line


def test_has_chat_template_reads_local_dirs_and_the_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    def tokenizer_dir(path, config, files=()):
        path.mkdir(parents=True)
        (path / "tokenizer_config.json").write_text(json.dumps(config))
        for name in files:
            (path / name).write_text("{{ messages }}")
        return path

    assert has_chat_template(str(tokenizer_dir(tmp_path / "base", {"bos_token": "<s>"}))) is False
    assert has_chat_template(str(tokenizer_dir(tmp_path / "key", {"chat_template": "{{ messages }}"}))) is True
    assert has_chat_template(str(tokenizer_dir(tmp_path / "jinja", {}, ["chat_template.jinja"]))) is True
    assert has_chat_template(str(tmp_path / "missing")) is None
    (tmp_path / "bare").mkdir()
    assert has_chat_template(str(tmp_path / "bare")) is None  # no tokenizer files: decided after loading
    # A hub id is looked up in the HF cache (the layout huggingface_hub writes: refs/main -> snapshots/<commit>)
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--someone--instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    tokenizer_dir(repo / "snapshots" / "abc123", {}, ["chat_template.jinja"])
    assert has_chat_template("someone/instruct") is True
    assert has_chat_template("someone/not-cached") is None


# ---- 5. model names that cannot load ---------------------------------------------------------------------------
@pytest.mark.parametrize("model,message", [
    ("./nope", "unknown model './nope': not a local directory (no such path) and not a hub id"),
    ("/x/y", "unknown model '/x/y': not a local directory"),
    ("my model", "unknown model 'my model'"),
    ("a/b/c", "unknown model 'a/b/c'"),
    ("nobody-here/no-such-model", "is not a local directory and not in the HF cache, and the hub is offline"),
])
def test_a_model_that_cannot_load_fails_at_once(corpus_dir, tmp_path, capsys, no_boot, monkeypatch, model, message):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    start = time.perf_counter()
    line = refused(["identify", "--model", model, "--corpus", "files", "--corpus-path", corpus_dir, "--langs", "en,fr",
                    "--out", out, "--quiet"], capsys, no_boot)
    assert message in line
    assert time.perf_counter() - start < 10  # no hub retries (they took 28 s)
    assert not (out / "stats.safetensors").exists() and not (out / "manifest.json").exists()


def test_a_hub_id_in_the_cache_passes_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    check_model_spec("someone/model")
    with pytest.raises(LensSteerError, match="not in the HF cache"):
        check_model_spec("someone/other")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    check_model_spec("someone/other")  # online: the hub may have it


# ---- 6. negative doses of a statistic ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["p_max*-1", "p_median*-0.5", "mean*-2", "testmax*-1", "control:p_max*-1"])
def test_a_negative_statistic_dose_is_refused(text):
    with pytest.raises(LensSteerError, match=r"sets the neurons below zero, a value no statistic of the language"
                                             r" takes; .*zero to silence them, or scale:-1 for a deliberate flip"):
        parse_factor(text)


@pytest.mark.parametrize("text,kind", [("add:-1", "add"), ("add:mean*-1", "addmean"), ("diffmean*-2", "diffmean"),
                                       ("resid:1*-4", "resid"), ("testmax+*-1", "test"), ("scale:-1", "scale"),
                                       ("set:-1", "set"), ("p_max*0", "stat")])
def test_steering_away_flips_and_set_values_stay_allowed(text, kind):
    assert parse_factor(text).kind == kind


@pytest.mark.parametrize("argv", [["steer", "{run}", "--to", "fr", "--factor", "p_max*-1", PROMPT],
                                  ["lss", "{run}", "--factors", "p_max,p_median*-0.5"],
                                  ["forcing", "{run}", "--factors", "testmax*-1"]])
def test_a_negative_dose_on_the_command_line_is_one_line(run, capsys, no_load, argv):
    assert "sets the neurons below zero" in refused([a.format(run=run) for a in argv], capsys, no_load)


# ---- 7. prompts: empty, over-long, special tokens ---------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_an_empty_prompt_is_refused(run, capsys, no_load, prompt):
    line = refused(["steer", run, "--to", "fr", prompt], capsys, no_load)
    assert "the prompt is empty or only whitespace" in line


def test_max_prompt_tokens_option():
    assert build_parser().parse_args(["steer", "r", "--to", "fr", "x"]).max_prompt_tokens == 1024
    assert build_parser().parse_args(["steer", "r", "--to", "fr", "--max-prompt-tokens", "8", "x"]
                                     ).max_prompt_tokens == 8


@pytest.fixture
def prompt_rows(monkeypatch):
    """The token rows greedy_generate hands to the decoding loop."""
    seen: list[list[int]] = []
    real = generation._generate_batch

    def spy(model, rows_ids, *args, **kwargs):
        seen.extend(rows_ids)
        return real(model, rows_ids, *args, **kwargs)

    monkeypatch.setattr(generation, "_generate_batch", spy)
    return seen


LONG = " ".join(SENTENCES["en"] * 30) + " The end is here."


def test_a_prompt_longer_than_the_context_keeps_its_end(tiny_models, prompt_rows):
    model = tiny_models["gpt2"]  # n_ctx 128
    full = model.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert model.context == 128 and len(full) > 128
    with pytest.warns(UserWarning, match=r"cut to its last \d+ \(the model reads at most 128 tokens and 5 of them"):
        out = generation.greedy_generate(model, [LONG], max_new_tokens=5)
    assert isinstance(out[0], str)
    assert len(prompt_rows[0]) <= 128 - 5 and prompt_rows[0][-5:] == full[-5:]
    with pytest.raises(LensSteerError, match="--max-new-tokens 128 leaves no room for a prompt"):
        generation.greedy_generate(model, ["hi"], max_new_tokens=128)


def test_max_prompt_tokens_cuts_with_a_warning(tiny_models, prompt_rows):
    model = tiny_models["qwen2"]
    full = model.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    with pytest.warns(UserWarning, match=rf"a prompt of {len(full)} tokens was cut to its last 16"
                                         r" \(--max-prompt-tokens 16; raise it to keep more\)"):
        generation.greedy_generate(model, [LONG, "Short."], max_new_tokens=2, max_prompt_tokens=16)
    bos = [model.bos] if model.bos is not None else []
    assert max(map(len, prompt_rows)) <= 16 + len(bos)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt within the limit: no warning
        generation.greedy_generate(model, ["Short."], max_new_tokens=2, max_prompt_tokens=16)


def test_steer_cuts_a_long_prompt_to_max_prompt_tokens(run, prompt_rows):
    from lens_steer.forcing import SteerConfig, steer_for_run
    from lens_steer.run import Run

    with pytest.warns(UserWarning, match="cut to its last 12 \\(--max-prompt-tokens 12"):
        records, _ = steer_for_run(Run(run), LONG, SteerConfig(to="fr", max_new_tokens=2, max_prompt_tokens=12))
    assert [r["target"] for r in records] == [None, "fr"] and max(map(len, prompt_rows)) <= 13


def test_control_tokens_never_show_in_generated_text(tmp_path, monkeypatch):
    """An added token that is a control token by its form (<start_of_image> is not flagged special in the
    GGUF-derived Gemma-3 tokenizer) is dropped from shown text; added tokens that are text (<b>) stay."""
    from transformers import AutoTokenizer

    path = save_tiny_hf("llama", tmp_path / "llama")
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_tokens(["<start_of_image>", "[multimodal]", "<b>"])
    tok.save_pretrained(path)
    model = load_model(str(path))
    image, multimodal, bold = (tok.convert_tokens_to_ids(t) for t in ("<start_of_image>", "[multimodal]", "<b>"))
    hello = tok("Bread is", add_special_tokens=False)["input_ids"]
    assert tok.decode([image] + hello, skip_special_tokens=True).startswith("<start_of_image>")  # the old way
    assert model.decode([image, multimodal, *hello, tok.eos_token_id]) == tok.decode(hello)
    assert "<b>" in model.decode([bold, *hello])
    monkeypatch.setattr(generation, "_generate_batch", lambda m, rows, *a, **k: [[image, *hello] for _ in rows])
    assert generation.greedy_generate(model, ["The cat"], max_new_tokens=3) == [tok.decode(hello)]
