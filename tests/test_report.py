"""The HTML report, `lens-steer figures` and `lens-steer inspect` on a tiny model run; the report in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import SENTENCES, chromium
from lens_steer.cli import main
from lens_steer.run import Run

LANGS = ("en", "fr", "ru")
CHROME_ARGS = ["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
               "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
               "--disable-sync", "--disable-extensions", "--metrics-recording-only",
               "--disable-features=Translate,MediaRouter,OptimizationHints"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for code in LANGS:
        (d / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def identified(tiny_dirs, corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "identified"
    assert main(["identify", "--model", str(tiny_dirs["llama"]), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", ",".join(LANGS), "--out", str(run), "--quiet", "--top-rate", "0.2"]) == 0
    return run


@pytest.fixture(scope="module")
def full_run(identified, tmp_path_factory) -> Path:
    """identify + LSS over a factor sweep with per-layer rows + a steered generation."""
    run = tmp_path_factory.mktemp("runs") / "full"
    shutil.copytree(identified, run)
    assert main(["lss", str(run), "--max-facts", "3", "--factors", "p_max*0.5,p_max,p_max*2,zero",
                 "--per-layer", "p_max", "--quiet"]) == 0
    assert main(["steer", str(run), "--to", "fr,ru", "--max-new-tokens", "4", "Hello <world> & friends"]) == 0
    return run


def test_report_identify_only(identified, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(identified), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert '<script src="http' not in html  # self-contained
    for div in ("fig-layer_distribution", "fig-overlap_counts", "fig-overlap_jaccard", "fig-layer_inspector"):
        assert f'id="{div}"' in html
    assert "Language Steering Shift" not in html and "fig-lss_matrix" not in html
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_full_run(full_run):
    assert main(["report", str(full_run)]) == 0
    path = full_run / "report.html"
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 15 * 2**20
    for div in ("fig-lss_matrix", "fig-lss_vs_factor", "fig-target_wins_vs_factor", "fig-lss_per_layer",
                "fig-gain_vs_damage"):
        assert f'id="{div}"' in html
    assert "Chosen factor" in html and "Steered generations" in html
    assert "Hello &lt;world&gt; &amp; friends" in html  # generation text is escaped, never raw HTML
    assert "<world>" not in html


def test_report_bad_inputs(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "lens-steer identify" in err


def test_report_renders_in_chromium(full_run, tmp_path):
    """Every plot draws its SVG, controls work, no console errors and no network; a screenshot is kept."""
    executable = chromium()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    assert main(["report", str(full_run)]) == 0
    report = full_run / "report.html"
    errors: list[str] = []
    external: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:", "blob:"))
                       else (external.append(r.request.url), r.abort()))
            start = time.perf_counter()
            page.goto(report.as_uri())
            n_divs = page.locator(".plotly-graph-div").count()
            assert n_divs >= 7, n_divs
            page.wait_for_function("[...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d.querySelector('svg.main-svg'))", timeout=20_000)
            render_s = time.perf_counter() - start
            assert render_s < 20, f"the report took {render_s:.1f} s to render"
            # the layer inspector's slider: click the rail's right end -> the last layer
            insp = page.locator("#fig-layer_inspector")
            insp.locator("rect.slider-rail-touch-rect").scroll_into_view_if_needed()
            box = insp.locator("rect.slider-rail-touch-rect").bounding_box()
            page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
            page.wait_for_function("document.getElementById('fig-layer_inspector').layout.sliders[0].active"
                                   " === document.getElementById('fig-layer_inspector').layout.sliders[0].steps.length - 1")
            # The step's relayout lands after `active` moves: wait for the title (the tiny model has 2 layers).
            try:
                page.wait_for_function("document.getElementById('fig-layer_inspector').layout.title.text"
                                       ".startsWith('Layer 1:')", timeout=10_000)
            except PlaywrightTimeout:
                title = page.evaluate("document.getElementById('fig-layer_inspector').layout.title.text")
                raise AssertionError(f"the slider moved but the inspector still shows {title!r}") from None
            # the LSS matrix's factor dropdown
            lss = page.locator("#fig-lss_matrix")
            lss.locator("g.updatemenu-header-group").click()
            lss.locator("g.updatemenu-dropdown-button", has_text="zero").click()
            page.wait_for_function("document.getElementById('fig-lss_matrix').layout.title.text.includes('zero')")
            # the heatmap / stacked bars toggle
            page.locator("#fig-layer_distribution g.updatemenu-button", has_text="stacked bars").click()
            page.wait_for_function("document.getElementById('fig-layer_distribution').data[0].visible === false")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            artifacts = os.environ.get("LENS_STEER_TEST_ARTIFACTS")
            if artifacts:
                Path(artifacts).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(artifacts) / "report.png")
        finally:
            browser.close()
    assert errors == [], f"console errors: {errors}"
    assert external == [], f"network requests: {external}"


def test_figures_cli(full_run, tmp_path, capsys):
    chromium()
    out = tmp_path / "figs"
    assert main(["figures", str(full_run), "--out", str(out), "--format", "png,svg"]) == 0
    names = {p.name for p in out.iterdir()}
    for stem in ("layer_distribution", "overlap_counts", "overlap_jaccard", "layer_inspector", "lss_matrix",
                 "lss_vs_factor", "lss_per_layer"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    assert (out / "lss_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "overlap_counts.svg").read_bytes()[:400]
    assert not [n for n in names if n.endswith(".tmp")]
    # the numbers behind the figures: the run's own counts and LSS, no timings, the same file on a second call
    results = json.loads((out / "results.json").read_text())
    run = Run(full_run)
    assert results["run_fingerprint"] == run.fingerprint()
    assert results["neurons"] == dict(zip(run.neurons().languages, run.neurons().counts().tolist()))
    assert results["lss_summary"]["best_factor"] == run.summary()["best_factor"]
    assert len(results["lss"]) == len(run.table("lss.csv")) and "seconds" not in json.dumps(results)
    first = (out / "results.json").read_bytes()
    assert main(["figures", str(full_run), "--out", str(out), "--format", "png"]) == 0
    assert (out / "results.json").read_bytes() == first


def test_figures_html_and_bad_format(identified, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figures", str(identified), "--out", str(out), "--format", "html"]) == 0
    assert {p.name for p in out.iterdir()} == {"layer_distribution.html", "overlap_counts.html",
                                               "overlap_jaccard.html", "layer_inspector.html", "results.json"}
    capsys.readouterr()
    assert main(["figures", str(identified), "--out", str(out), "--format", "jpeg"]) == 2
    assert "png, svg or html" in capsys.readouterr().err


def test_figures_compare_two_sets(identified, tmp_path, corpus, tiny_dirs):
    other = tmp_path / "activated"
    shutil.copytree(identified, other)
    assert main(["identify", "--model", str(tiny_dirs["llama"]), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", ",".join(LANGS), "--out", str(other), "--quiet", "--method", "activated"]) == 0
    from lens_steer.report import run_figures

    fig = run_figures(identified, compare=other)["layer_distribution"]
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2 and heat[0].zmax == heat[1].zmax


def test_inspect_lists_top_tokens(identified, tiny_models, corpus, capsys):
    """The top value per language equals the neuron's max over the corpus, computed sentence by sentence."""
    from lens_steer.neurons import NeuronSet

    neurons = NeuronSet.load(identified)
    layer, code = next((lay, c) for c in LANGS for lay in range(neurons.n_layers) if neurons.neurons[c][lay])
    j = neurons.neurons[code][layer][0]
    assert main(["inspect", str(identified), "--layer", str(layer), "--neuron", str(j), "--top", "3",
                 "--langs", "en,fr"]) == 0
    out = capsys.readouterr().out
    assert f"assigned to {code}" in out.splitlines()[0] or f"{code}" in out.splitlines()[0]
    assert "en: top 3 tokens" in out and "fr: top 3 tokens" in out

    from lens_steer.top_tokens import top_activating_tokens

    bridge = tiny_models["llama"]
    hits = top_activating_tokens(bridge, {"en": SENTENCES["en"]}, layer, j, top_k=3)["en"]
    assert [h.value for h in hits] == sorted((h.value for h in hits), reverse=True)
    best = -float("inf")
    for text in SENTENCES["en"]:  # independent: one sentence at a time, no padding, full cache
        ids = [bridge.tokenizer.bos_token_id] + bridge.tokenizer(text, add_special_tokens=False)["input_ids"]
        _, cache = bridge.run_with_cache(torch.tensor([ids]), names_filter=f"blocks.{layer}.mlp.hook_pre")
        pre = cache[f"blocks.{layer}.mlp.hook_pre"][0, 1:, j]  # BOS excluded, as recorded
        best = max(best, float(torch.nn.functional.silu(pre).max()))
    assert hits[0].value == pytest.approx(best, rel=1e-4, abs=1e-5)


def test_inspect_bad_inputs(identified, capsys):
    assert main(["inspect", str(identified), "--layer", "99", "--neuron", "0"]) == 2
    assert "outside" in capsys.readouterr().err
    assert main(["inspect", str(identified), "--layer", "0", "--neuron", "100000"]) == 2
    assert "outside" in capsys.readouterr().err


def test_intervals_in_results_and_report_tables(full_run, tmp_path):
    """results.json carries every interval column; the page's tables show "value [low, high]"; a table written
    before the interval columns gets its Wilson intervals from the counts."""
    from lens_steer.intervals import wilson_ci
    from lens_steer.report import build_report, fill_intervals, run_results, with_intervals

    results = run_results(full_run)
    for r in results["lss"]:
        if r["lss"] is not None:
            assert r["lss_low"] <= r["lss"] <= r["lss_high"] and r["n_facts"] == 3
            assert r["target_wins_low"] <= r["target_wins"] <= r["target_wins_high"]
    table = with_intervals(pd.DataFrame(results["lss"]))
    assert "lss_low" not in table and "ci_low" not in table and " [" in str(table["lss"].iloc[0])
    html = build_report(full_run, tmp_path / "page.html").read_text(encoding="utf-8")
    assert re.search(r"<td>\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]</td>", html)
    old = pd.DataFrame(dict(factor=["p_max"], n=[12], forcing_strict=[0.25]))
    filled = fill_intervals(old)
    assert list(filled.columns) == ["factor", "n", "forcing_strict", "forcing_strict_low", "forcing_strict_high"]
    assert (filled["forcing_strict_low"][0], filled["forcing_strict_high"][0]) == pytest.approx(wilson_ci(3, 12))
