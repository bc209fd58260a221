"""Language Steering Shift (Rahmanisa et al. 2025), batched, plus how much it shifts.

For facts i with a prompt in source language s and answers in every language:
``D_i(s, t) = logp(o_t | x_s) - logp(o_s | x_s)``. ``LSS(s, t)`` is the fraction of facts whose D is larger under
the intervention for t than without it (a sign test; ties, including "no effect", count as no shift). We also
report the mean shift of D with a bootstrap 95% interval over facts, which says how much, not only how often.

The baseline is scored once per source; every (fact, target) row of a factor is scored in the same batched
forwards with its own per-row intervention, all answers of a prompt sharing the prompt's KV cache.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.paths import atomic_path, write_json
from lens_steer.scoring import score
from lens_steer.steer import Factor, Intervention, Steerer
from lens_steer.stats import Stats

LSS_COLUMNS = ("factor", "factor_kind", "factor_value", "layers", "source", "target", "lss", "lss_nontie",
               "mean_shift", "ci_low", "ci_high", "n_facts", "n_ties", "note")
N_BOOT = 2000


@dataclass(frozen=True)
class ClozeItem:
    """One fact as LSS needs it: a prompt per language and an answer per language."""

    id: str
    prompt: dict[str, str]
    answer: dict[str, str]


def bootstrap_mean_ci(values: Tensor, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (fixed seed: the same numbers every run).

    >>> lo, hi = bootstrap_mean_ci(torch.tensor([1.0, 1.0, 1.0]))
    >>> (lo, hi)
    (1.0, 1.0)
    """
    if values.numel() == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (n_boot, values.numel()), generator=g)
    means = values.double()[idx].mean(dim=1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


def pair_stats(base_s: Tensor, base_t: Tensor, int_s: Tensor, int_t: Tensor, identical: Tensor) -> dict[str, Any]:
    """LSS columns for one (source, target) pair from per-fact log-probabilities.

    >>> z = torch.zeros(3)
    >>> pair_stats(z, z, z, torch.tensor([1.0, 0.0, -1.0]), torch.tensor([False, True, False]))["lss"]
    0.3333333333333333
    """
    shift = (int_t - int_s) - (base_t - base_s)
    up = shift > 0  # ties (shift == 0) count as no shift, as in the paper
    nontie = ~identical
    lo, hi = bootstrap_mean_ci(shift)
    return {
        "lss": float(up.double().mean()) if shift.numel() else float("nan"),
        "lss_nontie": float(up[nontie].double().mean()) if bool(nontie.any()) else float("nan"),
        "mean_shift": float(shift.double().mean()) if shift.numel() else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "n_facts": int(shift.numel()),
        "n_ties": int((shift == 0).sum()),
    }


def run_lss(model: Any, neurons: NeuronSet, stats: Stats | None, facts: dict[str, Sequence[ClozeItem]],
            languages: Sequence[str], factors: Sequence[Factor], *, per_layer: bool | Sequence[str] = False,
            batch_size: int = 32,
            progress: bool = True) -> list[dict[str, Any]]:
    """LSS rows for every factor (and layer setting), source and target != source.

    Args:
        facts: per source language, its facts (each with answers in every language of ``languages``).
        languages: run languages; every one is a source (if it has facts) and a target.
        factors: parsed factors; each row's ``factor`` column is the factor's text verbatim.
        per_layer: also run single-layer interventions (``layers`` = the layer): ``True`` for every factor, or a
            list of factor texts to do it for those only (a per-layer sweep costs n_layers times one factor).
    """
    from tqdm.auto import tqdm

    steerer = Steerer(model, neurons, stats)
    n_layers = steerer.site.n_layers
    layered = {f.text for f in factors} if per_layer is True else set(per_layer or [])

    def layer_settings(factor: Factor) -> list[str | int]:
        return ["all"] + (list(range(n_layers)) if factor.text in layered else [])

    totals = neurons.totals()
    empty = [t for t in languages if totals.get(t, 0) == 0]
    if empty:
        import warnings

        warnings.warn(f"no neurons for {', '.join(empty)}: those targets are skipped", stacklevel=2)
    rows: list[dict[str, Any]] = []
    work = [(s, f, layers) for s in languages if facts.get(s) for f in factors for layers in layer_settings(f)]
    bar = tqdm(total=len(work), desc="LSS", disable=not progress)
    for s in languages:
        items = list(facts.get(s, []))
        if not items:
            continue
        answers = [[item.answer[u] for u in languages] for item in items]
        prompts = [item.prompt[s] for item in items]
        base = score(model, prompts, answers, batch_size=batch_size).logp  # [F, K]
        si = languages.index(s)
        targets = [t for t in languages if t != s and t not in empty]
        for factor in factors:
            for layers in layer_settings(factor):
                # Under I_t only o_s and o_t are needed; scoring every language's answer would cost K/2 times more.
                ivs = [Intervention(t, factor, layers=layers) for _ in items for t in targets]
                rep_prompts = [p for p in prompts for _ in targets]
                rep_answers = [[it.answer[s], it.answer[t]] for it in items for t in targets]
                got = score(model, rep_prompts, rep_answers, steerer=steerer, interventions=ivs,
                            batch_size=batch_size).logp.view(len(items), len(targets), 2)
                for j, t in enumerate(targets):
                    ti = languages.index(t)
                    identical = torch.tensor([it.answer[s].strip().casefold() == it.answer[t].strip().casefold()
                                              for it in items])
                    row = pair_stats(base[:, si], base[:, ti], got[:, j, 0], got[:, j, 1], identical)
                    rows.append(_row(factor, layers, s, t, row))
                for t in languages:
                    if t != s and t in empty:
                        rows.append(_row(factor, layers, s, t, {"lss": 0.0, "note": "skipped: target has no neurons"}))
                bar.update(1)
    bar.close()
    return rows


def _row(factor: Factor, layers: str | int, s: str, t: str, values: dict[str, Any]) -> dict[str, Any]:
    row = {"factor": factor.text, "factor_kind": factor.kind, "factor_value": factor.value, "layers": layers,
           "source": s, "target": t, "lss": float("nan"), "lss_nontie": float("nan"), "mean_shift": float("nan"),
           "ci_low": float("nan"), "ci_high": float("nan"), "n_facts": 0, "n_ties": 0, "note": ""}
    row.update(values)
    return row


def summarise(rows: Sequence[dict[str, Any]], factors: Sequence[Factor]) -> dict[str, Any]:
    """Per factor (all-layer rows): mean LSS over pairs with a bootstrap interval; the best factor.

    The best factor has the highest mean LSS; a factor listed earlier wins when its mean lies inside the best
    one's interval (a tie within the noise goes to the first listed).
    """
    per: dict[str, dict[str, Any]] = {}
    for factor in factors:
        vals = torch.tensor([r["lss"] for r in rows if r["factor"] == factor.text and r["layers"] == "all"
                             and r["lss"] == r["lss"]], dtype=torch.float64)
        lo, hi = bootstrap_mean_ci(vals)
        shifts = torch.tensor([r["mean_shift"] for r in rows if r["factor"] == factor.text and r["layers"] == "all"
                               and r["mean_shift"] == r["mean_shift"]], dtype=torch.float64)
        per[factor.text] = {"mean_lss": float(vals.mean()) if vals.numel() else float("nan"), "ci_low": lo,
                            "ci_high": hi, "n_pairs": int(vals.numel()),
                            "mean_shift": float(shifts.mean()) if shifts.numel() else float("nan")}
    valid = [f.text for f in factors if per[f.text]["n_pairs"]]
    if not valid:
        raise LensSteerError("no LSS values were computed: no source language had facts and a target with neurons")
    top = max(valid, key=lambda f: per[f]["mean_lss"])
    best = next(f for f in valid if per[f]["mean_lss"] >= per[top]["ci_low"])
    return {"factors": per, "best_factor": best, "rule": "highest mean LSS over (source, target) pairs; a factor"
            " listed earlier wins when its mean lies within the best one's bootstrap 95% interval"}


def write_lss(run_dir: str | Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write ``lss.csv`` and ``lss_summary.json`` atomically."""
    run_dir = Path(run_dir)
    with atomic_path(run_dir / "lss.csv") as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=LSS_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(row[k]) for k in LSS_COLUMNS})
    write_json(run_dir / "lss_summary.json", summary)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return value
