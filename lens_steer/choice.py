"""Which factor to use: the per-factor summary of LSS rows and the rule that chooses among factors.

:func:`summarise` reduces ``lss.csv`` rows (and ``forcing.csv`` rows) to one entry per factor; :func:`choose_factor`
applies :data:`RULE` to those entries. Pure functions of the rows: ``lss`` and ``compare`` both call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lens_steer.configs import DAMAGE_BOUND  # the default of --damage-bound
from lens_steer.errors import LensSteerError
from lens_steer.intervals import bootstrap_mean_ci, wilson_ci
from lens_steer.factors import Factor

SKIPPED_NOTE = "skipped: target has no neurons"


RULE = ("among amplifying factors (not controls, not zero, not a low percentile such as p10) whose mean LSS beats"
        " the null (the control's mean LSS, or"
        " 0.5 without a control) and whose mean source damage stays within {bound:g} nats, the highest language-forcing"
        " success (strict) when forcing was measured, else the highest target-wins rate; within 0.01 the factor with"
        " less source damage wins")


def summarise(rows: Sequence[dict[str, Any]], factors: Sequence[Factor],
              forcing: Sequence[dict[str, Any]] | None = None, damage_bound: float = DAMAGE_BOUND) -> dict[str, Any]:
    """Per factor (all-layer rows): mean LSS over the scored (source != target) pairs with a bootstrap interval, the
    mean with the diagonal counted as 0 (:func:`with_diagonal`), gain, damage, target wins, specificity, the
    control's seed spread and (if given ``forcing.csv`` rows) forcing success and degeneration; and the chosen
    factor by :data:`RULE`, with the reason. ``best_lss_factor`` is the paper's choice: the highest mean LSS.
    ``n_pairs`` counts scored pairs only; targets skipped for having no neurons are listed in ``skipped_targets``
    and enter no mean.
    """
    per: dict[str, dict[str, Any]] = {}
    for factor in factors:
        mine = [r for r in rows if r["factor"] == factor.text and r["layers"] == "all" and r["lss"] == r["lss"]]
        vals = torch.tensor([r["lss"] for r in mine], dtype=torch.float64)
        lo, hi = bootstrap_mean_ci(vals)

        def mean(key: str) -> float:
            xs = [r[key] for r in mine if key in r and r[key] == r[key]]
            return sum(xs) / len(xs) if xs else float("nan")

        entry = {"mean_lss": float(vals.mean()) if vals.numel() else float("nan"),
                 "mean_lss_with_diagonal": with_diagonal(mine), "ci_low": lo, "ci_high": hi,
                 "n_pairs": int(vals.numel()), "mean_shift": mean("mean_shift"), "target_gain": mean("target_gain"),
                 "source_damage": mean("source_damage"), "target_wins": mean("target_wins"),
                 "target_wins_base": mean("target_wins_base"), "chance": mean("chance"),
                 "specificity": mean("specificity"), "control": factor.control}
        entry.update(_intervals(mine, entry))
        seeds = [r["seed_lss"] for r in mine if "seed_lss" in r]
        if seeds:
            per_seed = [sum(x[k] for x in seeds) / len(seeds) for k in range(len(seeds[0]))]
            entry.update(seed_mean_lss=per_seed, seed_min=min(per_seed), seed_max=max(per_seed))
        if forcing:
            f_rows = [r for r in forcing if r["factor"] == factor.text and r["n"]]
            if f_rows:
                entry["forcing"] = sum(r["forcing_strict"] for r in f_rows) / len(f_rows)
                entry["repetition"] = sum(r["repetition"] for r in f_rows) / len(f_rows)
                entry["distinct2"] = sum(r["distinct2"] for r in f_rows) / len(f_rows)
                # every target has as many generations: the mean share is the pooled share of all of them
                entry["n_generations"] = n_gen = sum(int(r["n"]) for r in f_rows)
                entry["forcing_low"], entry["forcing_high"] = wilson_ci(entry["forcing"] * n_gen, n_gen)
        per[factor.text] = entry
    valid = [f.text for f in factors if per[f.text]["n_pairs"]]
    if not valid:
        raise LensSteerError("no LSS values were computed: no source language had facts and a target with neurons")
    best_lss = max(valid, key=lambda f: per[f]["mean_lss"])  # the paper's choice; ties: the first listed
    best, reason = choose_factor(per, [f for f in factors if f.text in valid], damage_bound)
    skipped = sorted({r["target"] for r in rows if r.get("note") == SKIPPED_NOTE})
    return {"factors": per, "best_factor": best, "reason": reason, "rule": RULE.format(bound=damage_bound),
            "best_lss_factor": best_lss, "best_lss_rule": "the highest mean LSS over scored pairs (the paper's)",
            "skipped_targets": skipped, "damage_bound": damage_bound}


def _intervals(rows: Sequence[dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any]:
    """The 95% intervals of a factor's means over pairs: Wilson for the target-wins shares, their trials the facts of
    every pair that measured them (``n_facts``), and the bootstrap over pairs for gain, damage and specificity.

    >>> rows = [dict(target_wins=0.5, target_wins_base=0.0, n_facts=10, target_gain=1.0, source_damage=0.0,
    ...              specificity=0.5)] * 2
    >>> got = _intervals(rows, dict(target_wins=0.5, target_wins_base=0.0))
    >>> round(got["target_wins_low"], 3), got["n_facts"], got["target_gain_low"]
    (0.299, 20, 1.0)
    """
    out: dict[str, Any] = {"n_facts": sum(int(r.get("n_facts", 0) or 0) for r in rows)}
    for key in ("target_wins", "target_wins_base"):
        n = sum(int(r.get("n_facts", 0) or 0) for r in rows if r.get(key) == r.get(key) and key in r)
        out[f"{key}_low"], out[f"{key}_high"] = wilson_ci(entry[key] * n, n)
    for key in ("target_gain", "source_damage", "specificity"):
        values = torch.tensor([float(r[key]) for r in rows if key in r], dtype=torch.float64)
        out[f"{key}_low"], out[f"{key}_high"] = bootstrap_mean_ci(values)
    return out


def with_diagonal(rows: Sequence[dict[str, Any]]) -> float:
    """Mean LSS over the whole source x target matrix of ``rows`` (one factor's scored pairs), each diagonal cell
    (s = t, a source that is also a target) counted as 0: the authors' result CSVs hold LSS(s, s) = 0, so a mean
    over their matrix is this one. It is ``mean_lss`` x pairs / (pairs + diagonal cells), e.g. x (K-1)/K for K
    languages that are all sources and targets.

    >>> rows = [dict(source=s, target=t, lss=1.0) for s in "ab" for t in "ab" if s != t]
    >>> with_diagonal(rows)  # 2 pairs at 1.0, 2 diagonal cells at 0
    0.5
    """
    if not rows or not all("source" in r and "target" in r for r in rows):
        return float("nan")  # no matrix to place the rows in (hand-made rows without source and target)
    n_diagonal = len({r["source"] for r in rows} & {r["target"] for r in rows})
    return sum(r["lss"] for r in rows) / (len(rows) + n_diagonal)


def choose_factor(per: dict[str, dict[str, Any]], factors: Sequence[Factor],
                  damage_bound: float = DAMAGE_BOUND) -> tuple[str, str]:
    """The factor :data:`RULE` picks from per-factor summaries, and why (one sentence).

    >>> from lens_steer.factors import parse_factor
    >>> per = {"p_max": dict(mean_lss=.99, source_damage=-9., target_wins=.3, control=False),
    ...        "p_max*2": dict(mean_lss=.98, source_damage=-15., target_wins=.5, control=False),
    ...        "control:p_max": dict(mean_lss=.6, source_damage=0., target_wins=0., control=True)}
    >>> choose_factor(per, [parse_factor(f) for f in per])[0]
    'p_max'
    """
    controls = {f.text: per[f.text]["mean_lss"] for f in factors if f.control}
    control = max(controls, key=controls.get) if controls else None
    null = controls[control] if control else 0.5
    # Without a control the null is a coin flip: D rising in half of the facts. Say so; never "chance (0.5) 0.500".
    null_text = (f"{control}'s LSS {null:.3f}" if control else
                 "0.5 (a coin flip: no control among the factors)")
    amp = [f.text for f in factors if f.amplifies]
    use_forcing = any("forcing" in per[f] for f in amp)
    key = "forcing" if use_forcing else "target_wins"
    label = "forcing success" if use_forcing else "target wins"
    eligible = [f for f in amp if per[f]["mean_lss"] > null and per[f]["source_damage"] >= -damage_bound
                and per[f].get(key, float("nan")) == per[f].get(key, float("nan"))]
    if not eligible:
        pool = amp or [f.text for f in factors]
        best = max(pool, key=lambda f: (per[f].get("target_wins", 0) or 0))
        return best, (f"no factor's LSS beat {null_text} within {damage_bound:g} nats of source damage;"
                      f" {best} has the highest target wins ({per[best].get('target_wins', float('nan')):.2f})")
    top = max(per[f][key] for f in eligible)
    close = [f for f in eligible if per[f][key] >= top - 0.01]
    best = max(close, key=lambda f: per[f]["source_damage"])
    return best, (f"{best}: {label} {per[best][key]:.2f} (the highest within 0.01 among eligible factors, least"
                  f" damage {per[best]['source_damage']:.1f} nats), LSS {per[best]['mean_lss']:.3f} above"
                  f" {null_text}, source damage within {damage_bound:g} nats")
