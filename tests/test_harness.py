"""lens_steer inside lm-evaluation-harness: the ``lens_steer`` harness model against the plain ``hf`` model and
lens_steer's own scorer, batch-size invariance, hook removal, and ``lens-steer harness`` end to end.

The tasks are YAMLs written here that read small JSONL files written here (a choice task shaped like XCOPA and a
translation task with generation), so everything runs offline."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from helpers import tiny_run  # noqa: E402
from lens_steer.cli import main  # noqa: E402
from lens_steer.evals import EVAL_COLUMNS  # noqa: E402

LANGS = ("en", "fr", "ru", "zh")
COPA = [  # (premise, choice1, choice2, label): French, shaped like XCOPA
    ("Le petit chat dort sur le tapis", "il fait chaud", "la rivière passe", 0),
    ("Nous sommes rentrés après la soirée", "le pain est cuit", "il pleuvait", 1),
    ("Les enfants lisent des livres", "ils aiment les étoiles", "le moulin est vieux", 0),
    ("Le pain est cuit tôt le matin", "le chat dort", "le boulanger se lève tôt", 1),
    ("Une rivière passe près du moulin", "le moulin tourne", "les livres sont lus", 0),
]
MT = [("The small cat sleeps.", "Le petit chat dort."), ("Bread is baked early.", "Le pain est cuit tôt."),
      ("We walked home.", "Nous sommes rentrés.")]


def _yaml(name: str, data: Path, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\n{body}metadata:\n  version: 1.0\n")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("harness_tasks")
    copa = root / "copa_fr.jsonl"
    copa.write_text("".join(json.dumps(dict(premise=p, choice1=a, choice2=b, label=y), ensure_ascii=False) + "\n"
                            for p, a, b, y in COPA), encoding="utf-8")
    mt = root / "mt_en_fr.jsonl"
    mt.write_text("".join(json.dumps(dict(en=e, fr=f), ensure_ascii=False) + "\n" for e, f in MT), encoding="utf-8")
    (root / "lsx_copa_fr.yaml").write_text(_yaml("lsx_copa_fr", copa, (
        "output_type: multiple_choice\ndoc_to_text: \"{{premise}} donc\"\ndoc_to_choice: \"{{[choice1, choice2]}}\"\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")),
        encoding="utf-8")
    (root / "lsx_mt_en-fr.yaml").write_text(_yaml("lsx_mt_en-fr", mt, (
        "output_type: generate_until\ndoc_to_text: \"English: {{en}}\\nFrench:\"\ndoc_to_target: \"{{fr}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: chrf\n    aggregation: chrf\n    higher_is_better: true\n")), encoding="utf-8")
    (root / "lsx_ppl_fr.yaml").write_text(_yaml("lsx_ppl_fr", mt, (
        "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{fr}}\"\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")), encoding="utf-8")
    (root / "lsx_nolang.yaml").write_text(_yaml("lsx_nolang", copa, (
        "output_type: multiple_choice\ndoc_to_text: \"{{premise}}\"\ndoc_to_choice: \"{{[choice1, choice2]}}\"\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n")), encoding="utf-8")
    (root / "lsx_missing_fr.yaml").write_text(_yaml("lsx_missing_fr", root / "gone.jsonl", (
        "output_type: multiple_choice\ndoc_to_text: \"{{premise}}\"\ndoc_to_choice: \"{{[choice1, choice2]}}\"\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n")), encoding="utf-8")  # its data file is missing
    return root


@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory) -> Path:
    # Qwen2: no BOS, so the harness's default encoding and lens_steer's agree token for token
    return tiny_run(tiny_dirs["qwen2"], tmp_path_factory.mktemp("harness"), LANGS)


@pytest.fixture(scope="module")
def manager(tasks):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks), include_defaults=False)


def _evaluate(lm, manager, names, **kwargs):
    from lm_eval import simple_evaluate

    return simple_evaluate(model=lm, tasks=list(names), task_manager=manager, log_samples=True, **kwargs)


def _lm(run, batch_size=4, **kwargs):
    from lens_steer.harness import LensSteerLM

    return LensSteerLM(run=str(run), device="cpu", batch_size=batch_size, **kwargs)


def _resps(results, task):
    """Per document, the filtered responses: (log-likelihood, greedy) pairs, generations or rolling sums."""
    out = []
    for s in sorted(results["samples"][task], key=lambda s: s["doc_id"]):
        got = s["filtered_resps"] if isinstance(s["filtered_resps"], list) else [s["filtered_resps"]]
        out.append([tuple(r) if isinstance(r, (list, tuple)) else r for r in got])
    return out


def _no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_no_intervention_equals_the_plain_hf_model(run, tiny_dirs, manager):
    from lm_eval.models.huggingface import HFLM

    names = ("lsx_copa_fr", "lsx_mt_en-fr", "lsx_ppl_fr")  # log-likelihood, generation, rolling log-likelihood
    plain = _evaluate(HFLM(pretrained=str(tiny_dirs["qwen2"]), device="cpu", batch_size=4, dtype="float32"),
                      manager, names)
    ours = _evaluate(_lm(run), manager, names)  # pretrained: the run's own model
    for name in names:
        assert _resps(ours, name) == _resps(plain, name)
        assert {k: v for k, v in ours["results"][name].items()} == plain["results"][name]


def _own_logps(run, factor, keep_bos=False):
    """lens_steer's own scorer (the bridge) on the same requests: [docs, 2] summed log-probabilities."""
    from lens_steer.evals import choice_logps
    from lens_steer.evals.tasks import Choice
    from lens_steer.factors import Intervention
    from lens_steer.run import Run
    from lens_steer.steer import Steerer

    r = Run(run)
    model = r.model()
    if not keep_bos:
        model.bos = None  # the harness adds a BOS only where the tokenizer does (Gemma's; not the tiny one's)
    items = [Choice((f"{p} donc",) * 2, (f" {a}", f" {b}"), y) for p, a, b, y in COPA]
    steerer = Steerer(model, r.neurons(), r.stats())
    ivs = [Intervention("fr", factor) if factor else None for _ in items]
    return choice_logps(model, items, ivs, steerer if factor else None, batch_size=8)


@pytest.fixture(scope="module")
def family_runs(tiny_dirs, tmp_path_factory) -> dict[str, Path]:
    """Runs of the non-gated GPT-2 and the Gemma-2 MLP (gelu_tanh), besides the module's Qwen2 one."""
    return {arch: tiny_run(tiny_dirs[arch], tmp_path_factory.mktemp(f"harness_{arch}"), LANGS)
            for arch in ("gpt2", "gemma2")}


@pytest.mark.parametrize("factor", ["p_max*4", "resid:1*8", "gpt2:p_max*4", "gemma2:p_max*4"])
def test_under_a_factor_the_harness_equals_lens_steers_own_scorer(run, family_runs, manager, factor):
    import torch

    arch, _, factor = factor.rpartition(":") if factor.startswith(("gpt2:", "gemma2:")) else ("", "", factor)
    run = family_runs[arch] if arch else run
    lm = _lm(run, batch_size=8, target="fr", factor=factor)
    got = _evaluate(lm, manager, ["lsx_copa_fr"])
    harness = torch.tensor([[ll for ll, _ in doc] for doc in _resps(got, "lsx_copa_fr")], dtype=torch.float64)
    own = _own_logps(run, factor).double()
    plain = _own_logps(run, None).double()
    assert (own - plain).abs().max() > 1e-3  # the factor changes the scores: the comparison below can fail
    assert torch.allclose(harness, own, atol=1e-4, rtol=0)
    acc = float((own.argmax(1) == torch.tensor([y for *_, y in COPA])).double().mean())
    assert got["results"]["lsx_copa_fr"]["acc,none"] == pytest.approx(acc)
    assert _no_hooks(lm.model)
    # rolling log-likelihoods are steered too (generation: test_hooks_are_removed_after_every_call...)
    steered = _evaluate(lm, manager, ["lsx_ppl_fr"])
    lm.intervention = None
    plain = _evaluate(lm, manager, ["lsx_ppl_fr"])
    assert max(abs(x[0] - y[0]) for x, y in zip(_resps(plain, "lsx_ppl_fr"), _resps(steered, "lsx_ppl_fr"))) > 1e-3


@pytest.mark.parametrize("factor", ["p_max*4", "testmax", "p_max*4@last:2"])
def test_batch_size_1_equals_batch_size_8(run, manager, factor):
    factor, _, positions = factor.partition("@")
    names = ["lsx_copa_fr", "lsx_mt_en-fr", "lsx_ppl_fr"]
    one = _evaluate(_lm(run, 1, target="fr", factor=factor, positions=positions or "all"), manager, names)
    eight = _evaluate(_lm(run, 8, target="fr", factor=factor, positions=positions or "all"), manager, names)
    a, b = _resps(one, "lsx_copa_fr"), _resps(eight, "lsx_copa_fr")
    assert [[g for _, g in doc] for doc in a] == [[g for _, g in doc] for doc in b]
    assert max(abs(x - y) for da, db in zip(a, b) for (x, _), (y, _) in zip(da, db)) < 1e-5
    assert _resps(one, "lsx_mt_en-fr") == _resps(eight, "lsx_mt_en-fr")
    rolled = [(x[0], y[0]) for x, y in zip(_resps(one, "lsx_ppl_fr"), _resps(eight, "lsx_ppl_fr"))]
    assert max(abs(x - y) for x, y in rolled) < 1e-4


def test_test_time_factor_reads_real_positions_only(run):
    """A right-padded row's statistic must not see its pads: the lookup tells them from the requests."""
    import torch

    lm = _lm(run, target="fr", factor="testmax")
    lm._spans = {(5, 6, 7): 2, (5, 6, 7, 8, 9): 3}
    valid, ends = lm._row_spans(torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]))
    assert valid.tolist() == [[True] * 3 + [False] * 2, [True] * 5] and ends.tolist() == [2, 3]


def test_hooks_are_removed_after_every_call_even_on_an_exception(run, monkeypatch):
    import torch
    from lm_eval.models.huggingface import HFLM

    lm = _lm(run, target="fr", factor="p_max")
    seen = []

    def boom(self, inps, attn_mask=None, labels=None):
        seen.append(not _no_hooks(self.model))  # inside the call the hooks are there
        raise RuntimeError("boom")

    monkeypatch.setattr(HFLM, "_model_call", boom)
    with pytest.raises(RuntimeError, match="boom"):
        lm._model_call(torch.tensor([[5, 6, 7]]))
    assert seen == [True] and _no_hooks(lm.model)
    monkeypatch.setattr(HFLM, "_model_generate", lambda self, context, max_length, stop, **kw: boom(self, context))
    with pytest.raises(RuntimeError, match="boom"):
        lm._model_generate(torch.tensor([[5, 6, 7]]), 8, ["\n"])
    assert seen == [True, True] and _no_hooks(lm.model)


def test_cli_writes_eval_harness_csv_cells_and_feeds_the_report(run, tasks, capsys):
    from lens_steer.report import run_figures
    from lens_steer.run import Run

    assert main(["harness", str(run), "--tasks", "lsx_copa_fr,lsx_mt_en-fr", "--include-path", str(tasks),
                 "--factor", "p_max", "--targets", "fr,ru", "--limit", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "lsx_copa_fr" in out and "self" in out and "cross" in out
    with (run / "eval_harness.csv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == (*EVAL_COLUMNS, "run_fingerprint")
        rows = list(reader)
    assert {(r["task"], r["intervened"], r["metric"]) for r in rows} >= {
        ("lsx_copa_fr", "none", "acc"), ("lsx_copa_fr", "fr", "acc"), ("lsx_copa_fr", "ru", "acc"),
        ("lsx_mt_en-fr", "fr", "exact_match"), ("lsx_mt_en-fr", "fr", "chrf")}
    assert {r["eval_lang"] for r in rows} == {"fr"} and {r["n"] for r in rows} == {"3"}
    acc = [r for r in rows if r["metric"] == "acc"]
    assert all(r["interval"] == "wilson" and float(r["low"]) <= float(r["value"]) <= float(r["high"]) for r in acc)
    cell = json.loads((run / "harness" / "lsx_copa_fr" / "fr.json").read_text(encoding="utf-8"))
    assert "acc,none" in cell["results"]["lsx_copa_fr"] and cell["run_fingerprint"]
    # a later run of another task keeps these rows
    assert main(["harness", str(run), "--tasks", "lsx_nolang", "--include-path", str(tasks), "--factor", "p_max",
                 "--task-langs", "lsx_nolang=fr", "--limit", "2", "--quiet"]) == 0
    with (run / "eval_harness.csv").open(encoding="utf-8") as fh:
        assert {r["task"] for r in csv.DictReader(fh)} == {"lsx_copa_fr", "lsx_mt_en-fr", "lsx_nolang"}
    figures = run_figures(Run(run))
    assert {"downstream_lsx_copa_fr", "downstream_lsx_mt_en_fr", "downstream_lsx_nolang"} <= set(figures)


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "lsx_copa_frr"], "unknown harness task 'lsx_copa_frr' (did you mean lsx_copa_fr"),
    (["--tasks", "lsx_nolang"], "--task-langs lsx_nolang=LANG"),
    (["--tasks", "lsx_copa_fr", "--factor", "prompt:en"], "the harness builds its own prompts"),
    (["--tasks", "lsx_copa_fr", "--targets", "xx"], "unknown language 'xx'"),
    (["--tasks", "lsx_missing_fr"], "the harness cannot load task 'lsx_missing_fr'"),
    (["--tasks", "xcopa_id", "--include-path", "/nonexistent/tasks"], "is not a folder"),
])
def test_bad_inputs_are_one_line(run, tasks, capsys, argv, message):
    capsys.readouterr()
    before = sorted(p.name for p in run.iterdir())
    assert main(["harness", str(run), "--include-path", str(tasks), "--factor", "p_max", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lens-steer: error:") and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in run.iterdir()) == before


def test_without_the_extra_one_line_says_how_to_install(run, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "lens_steer.harness" or m.startswith("lens_steer.harness.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    assert main(["harness", str(run), "--tasks", "xcopa_id", "--factor", "p_max", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'lens-steer[harness]'" in err


def test_import_lens_steer_does_not_import_lm_eval():
    code = "import lens_steer, sys; lens_steer.Run; assert 'lm_eval' not in sys.modules, 'lm_eval imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_embedded_model_plain_and_steered(tmp_path, tasks, manager):
    """Gemma-3-270M (the harness adds its BOS, as lens_steer does): plain equals hf, p_max equals our scorer."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from lens_steer.harness.model import make_intervention, run_pretrained
    from lens_steer.run import Run

    run = tiny_run_embedded(tmp_path)
    plain = _evaluate(HFLM(pretrained=run_pretrained(Run(run)), device="cpu", batch_size=4, dtype="float32"),
                      manager, ["lsx_copa_fr"], limit=3)
    lm = _lm(run)
    ours = _evaluate(lm, manager, ["lsx_copa_fr"], limit=3)
    assert _resps(ours, "lsx_copa_fr") == _resps(plain, "lsx_copa_fr")
    lm.intervention = make_intervention(Run(run), "fr", "p_max")  # the same loaded model, now steered
    steered = _evaluate(lm, manager, ["lsx_copa_fr"], limit=3)
    harness = torch.tensor([[ll for ll, _ in doc] for doc in _resps(steered, "lsx_copa_fr")], dtype=torch.float64)
    own = _own_logps(run, "p_max", keep_bos=True).double()[:3]
    # Without any intervention the two paths (HF sdpa, one forward; the bridge, eager, a KV-cached continuation)
    # already differ by about 1.2e-4 on these sums of about -27 nats (float32 over 18 layers), and by the same under
    # p_max (1.4e-4 measured): so 1e-4 plus 1e-5 of the value here, exactly 1e-4 on the tiny models.
    assert torch.allclose(harness, own, atol=1e-4, rtol=1e-5)


def tiny_run_embedded(root: Path) -> Path:
    from helpers import SENTENCES

    corpus = root / "corpus"
    corpus.mkdir()
    for code in ("en", "fr"):
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    out = root / "run"
    assert main(["identify", "--corpus", "files", "--corpus-path", str(corpus), "--langs", "en,fr", "--out", str(out),
                 "--quiet", "--top-rate", "0.01", "--no-resid-cov"]) == 0
    return out


def test_a_new_neuron_set_retires_the_harness_results(tmp_path):
    """eval_harness.csv and harness/ are derived files: set aside (not mixed) when the neuron set changes."""
    from lens_steer.run import Run

    (tmp_path / "harness" / "xcopa_id").mkdir(parents=True)
    (tmp_path / "harness" / "xcopa_id" / "none.json").write_text("{}", encoding="utf-8")
    (tmp_path / "eval_harness.csv").write_text("task\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="eval_harness.csv"):
        _, dest = Run(tmp_path).retire_derived("0123456789abcdef")
    assert (dest / "harness" / "xcopa_id" / "none.json").is_file() and (dest / "eval_harness.csv").is_file()
    assert not (tmp_path / "harness").exists() and not (tmp_path / "eval_harness.csv").exists()
