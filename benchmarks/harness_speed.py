"""P11: lm-evaluation-harness under a factor. The harness model ``lens_steer`` (p_max on the first non-English
language's neurons) against the harness's plain ``hf`` model, on the same log-likelihood requests of a
multiple-choice task built from the corpus (``--facts`` x 4 documents, two choices each), batch size 8,
interleaved repeats. Only the model's request handling is timed (``lm.loglikelihood``), not the task building both
share.

The neuron set comes from a quick ``lens-steer identify`` of the corpus (``--max-tokens`` per language) into a
temporary run directory: the cost of the intervention depends on how many neurons it touches, not on which.
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


def _run_dir(ctx: dict[str, Any], root: Path) -> Path:
    from lens_steer.cli import main

    args = ctx["args"]
    argv = ["identify", "--model", ctx["model_path"], "--langs", args.langs, "--out", str(root / "run"), "--quiet",
            "--corpus", args.corpus or "udhr", "--top-rate", str(args.top_rate)]
    argv += ["--corpus-path", args.corpus_path] if args.corpus_path else []
    argv += ["--max-tokens", str(args.max_tokens)] if args.max_tokens else []
    with contextlib.redirect_stdout(io.StringIO()):
        if main(argv) != 0:
            raise RuntimeError("P11: identify failed")
    return root / "run"


def _task(root: Path, texts: list[str], n_docs: int) -> Path:
    """A multiple-choice task YAML over ``n_docs`` documents cut from the corpus sentences."""
    docs = []
    for i in range(n_docs):
        words = texts[i % len(texts)].split()
        other = texts[(i + 1) % len(texts)].split()
        cut = max(2, len(words) // 2)
        docs.append({"premise": " ".join(words[:cut]), "choice1": " ".join(words[cut:cut + 6]) or "x",
                     "choice2": " ".join(other[:6]) or "y", "label": 0})
    data = root / "p9.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    (root / "p9_choice.yaml").write_text(
        f"task: p9_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"{{premise}}\"\ndoc_to_choice: \"{{[choice1, choice2]}}\"\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n", encoding="utf-8")
    return root


def bench_harness(ctx: dict[str, Any]) -> dict[str, Any]:
    """Seconds of ``loglikelihood`` on the same requests: lens_steer under p_max / the plain ``hf`` model."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lens_steer.harness import LensSteerLM
    from lens_steer.harness.model import run_pretrained
    from lens_steer.run import Run
    from benchmarks.workload import load_texts

    args = ctx["args"]
    root = Path(tempfile.mkdtemp(prefix="lens-steer-bench-p9-"))
    try:
        run = _run_dir(ctx, root)
        langs = args.langs.split(",")
        target = next((c for c in langs if c != "en"), langs[0])
        texts = load_texts(args)[target]
        tasks = _task(root, texts, 4 * args.facts)
        task = TaskManager(include_path=str(tasks)).load(["p9_choice"])["tasks"]["p9_choice"]
        task.build_all_requests(rank=0, world_size=1)
        requests = [inst for inst in task.instances]
        kwargs = dict(device=args.device, batch_size=8, dtype=args.dtype or "float32")
        plain = HFLM(pretrained=run_pretrained(Run(run)), **kwargs)
        steered = LensSteerLM(run=str(run), target=target, factor="p_max", **kwargs)
        seconds: dict[str, list[float]] = {"hf": [], "lens_steer": []}
        for r in range(args.repeats):
            for name in (("hf", "lens_steer") if r % 2 == 0 else ("lens_steer", "hf")):
                lm = plain if name == "hf" else steered
                start = time.perf_counter()
                lm.loglikelihood(requests, disable_tqdm=True)
                seconds[name].append(time.perf_counter() - start)
            log(f"P11 repeat {r + 1}/{args.repeats}: hf {seconds['hf'][-1]:.2f} s, lens_steer under p_max"
                f" {seconds['lens_steer'][-1]:.2f} s ({len(requests)} requests)")
        ratios = [b / a for a, b in zip(seconds["hf"], seconds["lens_steer"])]
        det = {"P11_requests": len(requests), "P11_target": target,
               **{f"P11_seconds_{k}": summary(v) for k, v in seconds.items()}}
        return {"P11_harness_over_hf": summary(ratios), "details": det}
    finally:
        shutil.rmtree(root, ignore_errors=True)
