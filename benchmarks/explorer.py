"""P10: the explorer (`lens-steer explore`) answering: a neuron page without the model, through the app's own HTTP
callbacks (Flask's test client: routing, the page's layout and its top-token/logit callback, serialised as Dash
sends them), and a 20-token steered generation on the run's model (loaded first, and the server's first generation,
which pays one-time costs, timed apart as a detail).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import log, summary

PROMPT = "Once upon a time, in a small village"


def torch_threads() -> int:
    import torch  # deferred: as the other benchmarks, after the command line

    return torch.get_num_threads()


def _identify(ctx: dict[str, Any]) -> Path:
    """A fresh run of the benchmark's model and languages (the same corpus and token budget as P1)."""
    from lens_steer.cli import main

    args = ctx["args"]
    run = Path(tempfile.mkdtemp(prefix="lens-steer-bench-explore-")) / "run"
    argv = ["identify", "--model", ctx["model_path"], "--langs", args.langs, "--out", str(run), "--quiet"]
    if args.corpus:
        argv += ["--corpus", args.corpus] + (["--corpus-path", args.corpus_path] if args.corpus_path else [])
    if args.max_tokens:
        argv += ["--max-tokens", str(args.max_tokens)]
    with contextlib.redirect_stdout(io.StringIO()):
        if main(argv) != 0:
            raise RuntimeError(f"P10: identify failed: {' '.join(argv)}")
    return run


def _post(client: Any, output: str, outputs: Any, inputs: list[dict[str, Any]],
          state: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One Dash callback request, as the browser sends it; its JSON answer."""
    body = {"output": output, "outputs": outputs, "inputs": inputs, "state": state or [],
            "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"]}
    response = client.post("/_dash-update-component", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"P10: {output} answered {response.status_code}: {response.data[:300]!r}")
    return json.loads(response.data)


def neuron_page_seconds(app: Any, layer: int, neuron: int) -> float:
    """One neuron page: the routing callback (the page) and the callback filling its model views."""
    client = app.server.test_client()
    start = time.perf_counter()
    page = _post(client, "page.children", {"id": "page", "property": "children"},
                 [{"id": "url", "property": "pathname", "value": f"/neuron/{layer}/{neuron}"}],
                 [{"id": "url", "property": "search", "value": ""}])
    _post(client, "..neuron-examples.children...neuron-logits.children..",
          [{"id": "neuron-examples", "property": "children"}, {"id": "neuron-logits", "property": "children"}],
          [{"id": "neuron-key", "property": "data", "value": {"layer": layer, "neuron": neuron}}])
    seconds = time.perf_counter() - start
    if "neuron-title" not in json.dumps(page):
        raise RuntimeError("P10: the neuron page has no neuron-title")
    return seconds


def bench_explorer(ctx: dict[str, Any]) -> dict[str, Any]:
    """P10: neuron page without the model (s) and a 20-token steered generation (s), ``--repeats`` times each."""
    from lens_steer.configs import ExploreConfig
    from lens_steer.explorer import build_app
    from lens_steer.explorer.steering import playground

    args = ctx["args"]
    run = _identify(ctx)
    try:
        start = time.perf_counter()
        app, data = build_app(run, ExploreConfig(model=False))
        startup = time.perf_counter() - start
        target = [c for c in data.languages if data.neurons.totals()[c]][-1]  # not the prompt's English
        layer = next(lay for lay in range(data.neurons.n_layers) if data.neurons.neurons[target][lay])
        neuron = data.neurons.neurons[target][layer][0]
        pages = [neuron_page_seconds(app, layer, neuron) for _ in range(args.repeats)]
        _, steering = build_app(run, ExploreConfig())
        steering.holder.get()  # the model loads once per server, before the first generation: not timed
        start = time.perf_counter()  # the server's first generation pays one-time costs (probes, kernels): apart
        playground(steering, PROMPT, target, "p_max", max_new_tokens=20)
        first = time.perf_counter() - start
        generations, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            records, _ = playground(steering, PROMPT, target, "p_max", max_new_tokens=20)
            generations.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)  # every torch thread, their spin-waits under contention too
        log(f"P10: neuron page {summary(pages)['median']:.3f} s, 20-token steered generation"
            f" {summary(generations)['median']:.2f} s (app start {startup:.1f} s, first generation {first:.1f} s)")
        return {"P10_neuron_page_seconds": summary(pages), "P10_steer_20_tokens_seconds": summary(generations),
                "details": {"P10_app_start_seconds": round(startup, 2), "P10_neuron": [layer, neuron],
                            "P10_first_generation_seconds": round(first, 2),
                            "P10_steer_20_tokens_cpu_seconds": summary(cpu), "P10_torch_threads": torch_threads(),
                            "P10_steered_text": records[-1]["text"]}}
    finally:
        shutil.rmtree(run.parent, ignore_errors=True)
