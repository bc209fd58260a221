"""`lens-steer explore` (the Dash explorer) driven in the system Chromium through Playwright, on a tiny model run; on
the embedded Gemma-3-270M (slow) its steered text against `lens-steer steer`'s and the README's screenshots."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import SENTENCES, chromium
from lens_steer.cli import main
from lens_steer.configs import ExploreConfig
from lens_steer.neurons import NeuronSet
from lens_steer.plots import order_languages
from lens_steer.run import EXPLORE_CACHE, Run

pytest.importorskip("dash")
LANGS = ("en", "fr", "ru")
ROOT = Path(__file__).resolve().parents[1]
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-extensions"]


@pytest.fixture(scope="module")
def tiny_run(tiny_dirs, tmp_path_factory) -> Path:
    """identify on the tiny Llama, then ru's neurons removed (a target without neurons)."""
    corpus = tmp_path_factory.mktemp("corpus")
    for code in LANGS:
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    run = tmp_path_factory.mktemp("runs") / "explore"
    assert main(["identify", "--model", str(tiny_dirs["llama"]), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", ",".join(LANGS), "--out", str(run), "--quiet", "--top-rate", "0.2"]) == 0
    neurons = NeuronSet.load(run)
    assert neurons.totals()["en"] and neurons.totals()["fr"]
    neurons.neurons["ru"] = [[] for _ in range(neurons.n_layers)]
    neurons.save(run)
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(run: Path, **config) -> Iterator[tuple[str, object]]:
    """The explorer of ``run`` on a free port, in a thread of this process (werkzeug's server), stopped on exit."""
    from werkzeug.serving import make_server

    from lens_steer.explorer import build_app

    app, data = build_app(run, ExploreConfig(**config))
    server = make_server("127.0.0.1", _free_port(), app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", data
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def browser_page(errors: list[str]) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            browser.close()


def _steer(page, *, prompt: str | None = None, target: str | None = None, factor: str | None = None,
           layers: str | None = None, tokens: int | None = None) -> str:
    """Fill the playground's fields that are given, press Generate and wait for this click's answer (the status
    line names the run); returns the status."""
    for element, value in (("#steer-prompt", prompt), ("#steer-target", target), ("#steer-factor", factor),
                           ("#steer-layers", layers), ("#steer-tokens", None if tokens is None else str(tokens))):
        if value is not None:
            page.fill(element, value)
    status = page.locator("#steer-status")
    n = int(re.match(r"run (\d+)", status.inner_text() or "run 0").group(1)) if status.inner_text() else 0
    page.click("#steer-run")
    page.wait_for_function(f"() => document.querySelector('#steer-status').innerText.startsWith('run {n + 1}:')")
    return status.inner_text()


def _click_cell(page, layer: int, row: int, n_layers: int, n_rows: int) -> None:
    """A real mouse click at the centre of heatmap cell (layer, row); rows top-down (the y axis is reversed)."""
    box = page.locator("#layer-heatmap .nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + (layer + 0.5) / n_layers * box["width"],
                     box["y"] + (row + 0.5) / n_rows * box["height"])


def _inspect_numbers(run: Path, layer: int, neuron: int, capsys) -> list[list[str]]:
    """`lens-steer inspect`'s per-language rows: [lang, p, p_max, p_median]."""
    assert main(["inspect", str(run), "--layer", str(layer), "--neuron", str(neuron), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:] if line[:3].strip() in LANGS and re.search(r"\d\.\d{3}", line)]
    return [[r[0], *[x for x in r if re.fullmatch(r"-?\d+\.\d{3}", x)]] for r in rows]


def test_explorer_in_chromium(tiny_run, capsys):
    """Overview -> heatmap click -> filtered layer table -> neuron page (inspect's numbers, top tokens, logit effect,
    cached) -> a steering generation equal to `lens-steer steer`'s -> every error as a message, server alive."""
    neurons = NeuronSet.load(tiny_run)
    layer = next(lay for lay in range(neurons.n_layers) if neurons.neurons["fr"][lay])
    j = neurons.neurons["fr"][layer][0]
    expected = _inspect_numbers(tiny_run, layer, j, capsys)
    assert len(expected) == 3
    errors: list[str] = []
    with serving(tiny_run) as (url, data), browser_page(errors) as page:
        page.goto(url + "/")
        page.wait_for_selector("#layer-heatmap .nsewdrag")
        assert page.locator("#overlap-heatmap .main-svg").count() >= 1
        order = order_languages(neurons.languages)
        _click_cell(page, layer, order.index("fr"), neurons.n_layers, len(order))
        page.wait_for_selector("#layer-table")
        assert page.url.endswith(f"/layer/{layer}?lang=fr")
        assert "filtered to fr" in page.inner_text("h2")
        cells = page.locator("#layer-table td[data-dash-column='languages']").all_inner_texts()
        assert cells and all("fr" in c for c in cells)

        page.goto(f"{url}/neuron/{layer}/{j}")
        assert "assigned to fr" in page.inner_text("#neuron-title")
        page.wait_for_selector("#neuron-promoted")
        columns = [page.locator(f"#neuron-probability td[data-dash-column='{c}']").all_inner_texts()
                   for c in ("language", "p", "p_max", "p_median")]
        assert [list(row) for row in zip(*columns)] == expected  # the neuron page's numbers are `lens-steer inspect`'s
        assert page.locator("#neuron-examples mark").count() >= 3  # every language's top tokens, highlighted
        assert Run(tiny_run).has(EXPLORE_CACHE) and f"{layer}/{j}" in json.loads(
            (tiny_run / EXPLORE_CACHE).read_text())["neurons"]

        prompt = "Hello <world> & friends"
        page.goto(url + "/steer")
        _steer(page, prompt=prompt, target="fr", factor="p_max", tokens=4)
        assert not page.inner_text("#steer-error").strip()
        steered = page.locator("#steer-steered .steer-text").all_text_contents()
        base = page.locator("#steer-base .steer-text").text_content()
        assert main(["steer", str(tiny_run), "--to", "fr", "--max-new-tokens", "4", prompt]) == 0
        records = [json.loads(line) for line in (tiny_run / "generations.jsonl").read_text().splitlines()[-2:]]
        assert [base, *steered] == [r["text"] for r in records]  # `lens-steer steer`'s texts, to the character
        _steer(page, factor="p_max, p_max*2, zero")  # three at once
        assert page.locator("#steer-steered .steer-text").count() == 3
        page.goto(url + "/steer?fact=en|weekday_next:0&target=fr&factor=p_max,zero&tokens=2")  # a cloze fact
        assert page.input_value("#steer-prompt") == "If today is Monday, tomorrow is"
        assert _steer(page).endswith("s") and not page.inner_text("#steer-error")
        page.wait_for_selector("#steer-answer-table td")
        assert page.locator("#steer-answer-table td[data-dash-column='setting']").all_inner_texts() == [
            "unsteered", "fr p_max", "fr zero"]

        for field, message in ((dict(factor="p_mux"), "factor"), (dict(factor="p_max", prompt="   "), "empty"),
                               (dict(prompt=prompt, target="ru"), "no neurons"), (dict(target="sw"), "not in the run"),
                               (dict(target="fr", layers="99"), "layer")):
            _steer(page, **field)
            assert message in page.inner_text("#steer-error"), (field, page.inner_text("#steer-error"))
            assert "Traceback" not in page.content()
        for path, message in ((f"/layer/{neurons.n_layers}", "outside"), (f"/neuron/0/{neurons.d_mlp}", "outside"),
                              ("/neuron/x/1", "not a number"), ("/nowhere", "no page")):
            page.goto(url + path)
            page.wait_for_selector("#page-error")
            assert message in page.inner_text("#page-error")
        page.goto(url + "/")  # still serving
        page.wait_for_selector("#layer-heatmap .nsewdrag")
    assert not errors


def test_answer_probabilities_are_the_scorers(tiny_run):
    """The playground's per-token probabilities of a cloze answer multiply to the LSS scorer's, steered or not."""
    import math

    from lens_steer.explorer import build_app
    from lens_steer.explorer.steering import answer_probabilities
    from lens_steer.factors import Intervention
    from lens_steer.scoring import score
    from lens_steer.steer import Steerer

    _, data = build_app(tiny_run)
    model = data.holder.get()
    steerer = Steerer(model, data.neurons, data.stats)
    prompt, answer = "If today is Monday, tomorrow is", " Tuesday and more"
    ivs = [None, Intervention("fr", "p_max*4"), Intervention("fr", "zero", positions="prompt")]
    got = answer_probabilities(model, steerer, prompt, answer, ivs)
    want = score(model, [prompt] * 3, [[answer]] * 3, steerer=steerer, interventions=ivs)
    assert [len(tokens) for tokens in got] == want.n_tokens[:, 0].tolist() and len(got[0]) > 1
    for tokens, logp in zip(got, want.logp[:, 0].tolist()):
        assert sum(math.log(p) for _, p in tokens) == pytest.approx(logp, abs=1e-4)
    assert got[0] != got[1]


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_logit_effect_against_the_hf_modules(tiny_models, arch):
    """The direct logit effect from the HF weights by hand: down_proj's column, times the post-MLP norm's scale (Gemma:
    1 + weight) and the final norm's, through lm_head, centred."""
    import torch

    from lens_steer.models import neuron_logit_effect

    model = tiny_models[arch]
    hf = model.bridge.original_model
    layer, neuron = model.site.n_layers - 1, 3
    column = hf.model.layers[layer].mlp.down_proj.weight[:, neuron].detach().float()
    final = hf.model.norm.weight.detach().float()
    if arch == "gemma2":
        column = column * (1 + hf.model.layers[layer].post_feedforward_layernorm.weight.detach().float())
        final = 1 + final
    want = hf.lm_head.weight.detach().float() @ (column * final)
    got = neuron_logit_effect(model, layer, neuron)
    torch.testing.assert_close(got, want - want.mean(), rtol=1e-4, atol=1e-4)


def test_explorer_without_model(tiny_run, tmp_path):
    """--no-model: cached neuron pages still show their tokens; uncached ones and the playground say why not."""
    errors: list[str] = []
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / EXPLORE_CACHE).unlink(missing_ok=True)
    from lens_steer.explorer import build_app

    cached = build_app(run)[1].model_views(1, 2)  # one page computed with the model, kept in explore_cache.json
    with serving(run, model=False) as (url, data), browser_page(errors) as page:
        page.goto(f"{url}/neuron/0/1")
        page.wait_for_selector("#neuron-model-error")
        assert "--no-model" in page.inner_text("#neuron-model-error")
        page.goto(f"{url}/neuron/1/2")
        page.wait_for_selector("#neuron-promoted")
        assert page.locator("#neuron-examples mark").all_text_contents() == [
            h["token"] for hits in cached["top"].values() for h in hits]
        page.goto(url + "/steer?target=fr&factor=p_max&prompt=Hi")
        _steer(page)
        assert "--no-model" in page.inner_text("#steer-error")
        _steer(page, factor="nonsense")  # settings are checked before the model is asked for
        assert "nonsense" in page.inner_text("#steer-error")
        assert not data.holder.loaded
    assert not errors


def test_explore_cli_serves_and_refuses(tiny_run, tmp_path, capsys, monkeypatch):
    """The command serves on the port asked (stopped by pid); a missing extra, a bad run and a far host are one line."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lens_steer.cli", "explore", str(tiny_run), "--no-model",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=2) as r:
                    assert r.status == 200 and b"page" in r.read()  # the app's layout, as the browser gets it
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"explore did not serve: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(10)
    assert main(["explore", str(tmp_path / "missing")]) == 2
    assert "lens-steer identify" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "dash", None)
    assert main(["explore", str(tiny_run)]) == 2
    assert "pip install 'lens-steer[explore]'" in capsys.readouterr().err
    lazy = subprocess.run([sys.executable, "-c", "import sys, lens_steer as ls; ls.explore, ls.ExploreConfig;"
                           " print(sorted({'dash', 'torch'} & set(sys.modules)))"], env=env, capture_output=True,
                          text=True, check=True)
    assert lazy.stdout.strip() == "[]"  # ls.explore is a lazy export: neither Dash nor torch until an app is built
    from lens_steer.explorer import check_host

    with pytest.warns(UserWarning, match="reachable from other machines"):
        check_host("0.0.0.0")


@pytest.mark.slow
@pytest.mark.udhr
def test_explorer_on_gemma_equals_steer_and_screenshots(tmp_path, capsys):
    """On the embedded Gemma-3-270M: a 12-token steered generation equals `lens-steer steer`'s; the four views are
    photographed (LENS_STEER_SCREENSHOTS=figures writes the README's PNGs, otherwise a temporary directory)."""
    shots = Path(os.environ.get("LENS_STEER_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    run = tmp_path / "run"
    # Latin and Cyrillic scripts: the system Chromium has no CJK font, and a screenshot of boxes shows nothing
    assert main(["identify", "--langs", "en,fr,ru", "--max-tokens", "250", "--out", str(run), "--quiet"]) == 0
    neurons = NeuronSet.load(run)
    layer = max(range(neurons.n_layers), key=lambda lay: len(neurons.neurons["ru"][lay]))
    j = neurons.neurons["ru"][layer][0]
    order = order_languages(neurons.languages)
    prompt = "Once upon a time, in a small village"
    errors: list[str] = []
    with serving(run) as (url, data), browser_page(errors) as page:
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(url + "/")
        page.wait_for_selector("#overlap-heatmap .main-svg")
        page.screenshot(path=str(shots / "explore_overview.png"), full_page=True)
        _click_cell(page, layer, order.index("ru"), neurons.n_layers, len(order))
        page.wait_for_selector("#layer-table")
        page.wait_for_selector(".js-plotly-plot .main-svg")
        page.screenshot(path=str(shots / "explore_layer.png"), full_page=True)
        page.goto(f"{url}/neuron/{layer}/{j}")
        page.wait_for_selector("#neuron-promoted")
        assert page.locator("#neuron-examples mark").count() >= 3
        page.screenshot(path=str(shots / "explore_neuron.png"), full_page=True)
        page.goto(url + "/steer")
        _steer(page, prompt=prompt, target="ru", factor="p_max", tokens=12)
        steered = page.locator("#steer-steered .steer-text").all_text_contents()
        base = page.locator("#steer-base .steer-text").text_content()
        page.goto(url + "/steer?fact=en|weekday_next:0&target=ru&factor=p_max,p_max*2,zero&tokens=10")
        _steer(page)
        assert page.locator("#steer-steered .steer-text").count() == 3
        page.wait_for_selector("#steer-answer-table td")
        page.screenshot(path=str(shots / "explore_steer.png"), full_page=True)
    assert not errors
    assert main(["steer", str(run), "--to", "ru", "--max-new-tokens", "12", prompt]) == 0
    records = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()[-2:]]
    assert [base, *steered] == [r["text"] for r in records] and steered[0] != base
    assert all((shots / f"explore_{v}.png").stat().st_size > 10_000 for v in ("overview", "layer", "neuron", "steer"))


def test_best_is_resolved_from_the_run(tiny_run, tmp_path):
    """best: the LSS rule's choice; diffmean*best: compare's held-out choice; each missing one is one line."""
    from lens_steer.errors import LensSteerError
    from lens_steer.explorer.steering import resolve_factor, split_factors
    from lens_steer.run import COMPARE_SUMMARY, LSS_SUMMARY

    run = Run(shutil.copytree(tiny_run, tmp_path / "run"))
    assert resolve_factor(run, " p_max*2 ") == "p_max*2"
    for text, message in (("best", "lens-steer lss"), ("diffmean*best", "lens-steer compare")):
        with pytest.raises(LensSteerError, match=message):
            resolve_factor(run, text)
    run.write_json(LSS_SUMMARY, {"best_factor": "p_median"})
    run.write_json(COMPARE_SUMMARY, {"methods": {"diffmean*best": {"factor": "diffmean*4"}}})
    assert resolve_factor(run, "best") == "p_median" and resolve_factor(run, "diffmean*best") == "diffmean*4"
    with pytest.raises(LensSteerError, match="no choice for this method"):
        resolve_factor(run, "resid:best")
    with pytest.raises(LensSteerError, match="at most 3"):
        split_factors("p_max,zero,p_median,p_max*2")


def test_unexpected_errors_are_a_short_message(capsys):
    """Anything but a LensSteerError: a short message for the page, the traceback on the server's stderr."""
    from lens_steer.errors import LensSteerError
    from lens_steer.explorer.app import _shown

    def broken(kind: str) -> None:
        raise LensSteerError("one line") if kind == "user" else ZeroDivisionError("division by zero")

    shown = _shown(broken, lambda message: f"[{message}]")
    assert shown("user") == "[one line]" and capsys.readouterr().err == ""
    assert shown("bug").startswith("[unexpected error (ZeroDivisionError: division by zero)")
    assert "Traceback" in capsys.readouterr().err


def test_layer_table_is_the_inspectors_in_wide_form(tiny_run):
    """One row per language neuron: p per language, LAPE's entropy of them, p_max/p_median of its first language."""
    import math

    from lens_steer.inspection import InspectorData, inspector_tables

    run = Run(tiny_run)
    stats, neurons = run.stats(), run.neurons()
    for layer in range(neurons.n_layers):
        wide = InspectorData(stats, neurons).neurons_table(layer)
        long = inspector_tables(stats, neurons, layer)
        assert sorted(wide["neuron"]) == sorted({j for c in neurons.languages for j in neurons.neurons[c][layer]})
        for row in wide.itertuples():
            mine = long[long["neuron"] == row.neuron]
            p = dict(zip(mine["language"], mine["probability"]))
            assert [getattr(row, f"p_{c}") for c in neurons.languages] == [p[c] for c in neurons.languages]
            q = [v / sum(p.values()) for v in p.values() if v > 0]
            assert row.entropy == pytest.approx(-sum(v * math.log(v) for v in q))
            first = mine[mine["assigned"]].iloc[0]
            assert row.languages.split(",")[0] == first["language"]
            assert (row.p_max, row.p_median) == (first["p_max"], first["p_median"])
