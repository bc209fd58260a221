"""Methods compared on the same items (issue 27): every method of a ``compare`` paired with the reference method.

A method's numbers (LSS, target wins, gain, damage, forcing, the perplexity ratios) are means over items: facts,
neutral prompts, UDHR texts. The reference (``--reference``, default ``p_max``) was measured on the same items, so
the difference is taken item by item and its 95% interval comes from a paired bootstrap that resamples the items
once for both methods (:func:`lens_steer.intervals.paired_bootstrap`); ``verdict`` says whether it excludes 0.

>>> items = {"ref": {"lss": {("en", "fr"): {0: 0.0, 1: 1.0}}}, "new": {"lss": {("en", "fr"): {0: 1.0, 1: 1.0}}}}
>>> item_values(items["new"]["lss"])
([0, 1], [1.0, 1.0], [0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lens_steer.errors import LensSteerError

PAIRED: dict[str, bool] = {"lss": True, "target_wins": True, "target_gain": True, "source_damage": True,
                           "forcing": True, "udhr_ppl_self": False, "udhr_ppl_cross": False}
"""The metrics each method is paired with the reference on, and whether higher is better (``source_damage`` is
``logp(o_s)`` steered minus unsteered, negative nats: higher is less damage; a perplexity ratio: lower is better)."""
PAIRED_COLUMNS = (*(c for m in PAIRED for c in (f"diff_{m}", f"diff_{m}_low", f"diff_{m}_high", f"verdict_{m}")),
                  "rank_first", "lss_seed_min", "lss_seed_max", "target_wins_seed_min", "target_wins_seed_max")
"""``compare.csv``'s paired columns (method minus reference on the same items, a paired-bootstrap 95% interval, the
verdict), ``rank_first`` (share of resamples of the prompts where the method forces best) and the spread across
``--seeds``: a method's LSS and target wins over the fact splits (:func:`split_spread`), a control's LSS over its
random draws (:func:`seed_spread`); placed before ``seconds``."""


def check_reference(reference: str, methods: Sequence[str]) -> None:
    """Refuse a ``--reference`` that is not among the methods as typed (one line, saying how to fix it).

    >>> check_reference("p_max", ["diffmean*best", "prompt:en"])
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: --reference p_max is not among --methods (diffmean*best, prompt:en); add it to --methods or pass --reference with one of them
    """
    texts = list(methods)
    if reference.strip() not in texts:
        raise LensSteerError(f"--reference {reference} is not among --methods ({', '.join(texts)}); add it to"
                             " --methods or pass --reference with one of them")


def method_items(factor: str, lss_rows: Sequence[dict[str, Any]], forcing_rows: Sequence[dict[str, Any]],
                 ppl_rows: Sequence[dict[str, Any]]) -> dict[str, dict[Any, dict[Any, float]]]:
    """One factor's per-item values, as cells (what a reported mean averages: a (source, target) pair, a target, an
    (intervened, evaluated) language cell) of items (a fact ``(source, i)``, a prompt ``i``, a text
    ``(language, j)``). The metric's mean is the mean over cells of the mean over the cell's items; for the
    perplexity ratios the items hold the NLL change (the ratio is exp of its mean).

    >>> lss = [dict(factor="f", layers="all", lss=0.5, source="en", target="fr",
    ...             per_fact=dict(lss=[1.0, 0.0], target_gain=[1.0, 2.0], source_damage=[0.0, -1.0]))]
    >>> forcing = [dict(factor="f", target="fr", n=2, per_prompt={0: 1.0, 1: 0.0})]
    >>> ppl = [dict(intervened=i, eval_lang="fr", metric="nll_macro", per_text=[v]) for i, v in (("none", 2.0),
    ...        ("fr", 2.5))]
    >>> got = method_items("f", lss, forcing, ppl)
    >>> got["lss"], got["forcing"], got["udhr_ppl_self"], got["target_wins"]
    ({('en', 'fr'): {('en', 0): 1.0, ('en', 1): 0.0}}, {'fr': {0: 1.0, 1: 0.0}}, {('fr', 'fr'): {('fr', 0): 0.5}}, {})
    """
    out: dict[str, dict[Any, dict[Any, float]]] = {m: {} for m in PAIRED}
    for r in lss_rows:
        if r["factor"] == factor and r["layers"] == "all" and r["lss"] == r["lss"] and "per_fact" in r:
            for metric, values in r["per_fact"].items():
                if metric in out:
                    out[metric][(r["source"], r["target"])] = {(r["source"], i): v for i, v in enumerate(values)}
    for r in forcing_rows:
        if r["factor"] == factor and r["n"] and "per_prompt" in r:
            out["forcing"][r["target"]] = dict(r["per_prompt"])
    nll = [r for r in ppl_rows if r["metric"] == "nll_macro" and "per_text" in r]
    base = {r["eval_lang"]: r["per_text"] for r in nll if r["intervened"] == "none"}
    for r in nll:
        lang = r["eval_lang"]
        if r["intervened"] != "none" and lang in base:
            metric = "udhr_ppl_self" if lang == r["intervened"] else "udhr_ppl_cross"
            out[metric][(r["intervened"], lang)] = {(lang, j): v - b for j, (v, b) in
                                                    enumerate(zip(r["per_text"], base[lang]))}
    return out


def item_values(cells: dict[Any, dict[Any, float]]) -> tuple[list[Any], list[float], list[float]]:
    """Cells of items as one value and one weight per item (its cells' values averaged): the weighted mean of the
    items is the mean over cells of the mean over each cell's items, the number a row reports. NaN values and empty
    cells are left out.

    >>> keys, values, weights = item_values({"a": {0: 1.0, 1: 0.0}, "b": {0: 1.0}})
    >>> keys, values, weights  # (1 + 0) / 2 and 1, averaged: 0.75
    ([0, 1], [1.0, 0.0], [0.75, 0.25])
    """
    cells = {c: {k: v for k, v in items.items() if v == v} for c, items in cells.items()}
    cells = {c: items for c, items in cells.items() if items}
    total: dict[Any, float] = {}
    weight: dict[Any, float] = {}
    for items in cells.values():
        w = 1.0 / (len(cells) * len(items))
        for k, v in items.items():
            total[k] = total.get(k, 0.0) + w * v
            weight[k] = weight.get(k, 0.0) + w
    keys = list(weight)
    return keys, [total[k] / weight[k] for k in keys], [weight[k] for k in keys]


def paired_columns(items: dict[str, dict[str, dict[Any, dict[Any, float]]]], reference: str,
                   n_boot: int | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per method (the keys of ``items``, each :func:`method_items`), its paired columns against ``reference``:
    ``diff_<m>`` (method minus reference on the same items), ``diff_<m>_low/_high`` (paired-bootstrap 95%, the
    same resampled items for both, fixed seed), ``verdict_<m>`` (``reference`` on the reference's own row), and
    ``rank_first``: the share of resamples of the prompts in which the method has the highest forcing. A metric
    whose items differ between the two (a test-time factor has no target wins) is left empty.
    """
    import torch  # deferred: compare (and so this module) stays torch-free at import for the CLI

    from lens_steer.intervals import N_BOOT, paired_bootstrap, rank_first, verdict  # deferred: imports torch

    n_boot = n_boot or N_BOOT
    out: dict[str, dict[str, Any]] = {m: {} for m in items}
    for metric, higher in PAIRED.items():
        ref_keys, ref_values, weights = item_values(items[reference][metric])
        transform = torch.exp if metric.startswith("udhr_ppl") else None
        for method in items:
            keys, values, _ = item_values(items[method][metric])
            if keys == ref_keys and keys:
                diff, low, high = paired_bootstrap(torch.tensor(values), torch.tensor(ref_values), n_boot, seed,
                                                   weights=torch.tensor(weights), transform=transform)
                call = "reference" if method == reference else verdict(low, high, higher)
            else:
                diff = low = high = float("nan")
                call = ""
            out[method].update({f"diff_{metric}": diff, f"diff_{metric}_low": low, f"diff_{metric}_high": high,
                                f"verdict_{metric}": call})
    ref_keys, _, weights = item_values(items[reference]["forcing"])
    ranked = [m for m in items if ref_keys and item_values(items[m]["forcing"])[0] == ref_keys]
    if ranked:
        values = torch.tensor([item_values(items[m]["forcing"])[1] for m in ranked])
        for m, share in zip(ranked, rank_first(values, torch.tensor(weights), n_boot, seed).tolist()):
            out[m]["rank_first"] = share
    for m in items:
        out[m].setdefault("rank_first", float("nan"))
    return out


def add_paired(rows: list[dict[str, Any]], summary: dict[str, Any], items: dict[str, dict[str, Any]],
               reference: str) -> None:
    """Fill the method rows' paired columns (:func:`paired_columns`; controls and ``none`` stay empty), and add to
    ``compare_summary.json`` the ``reference`` and, per method (``summary["methods"][m]``), its ``paired`` dict:
    ``rank_first`` and per metric ``diff``, ``low``, ``high``, ``verdict``."""
    paired = paired_columns(items, reference)
    for row in rows:
        row.update(paired.get(row["method"], {}))
    summary["reference"] = reference
    for m, cols in paired.items():
        summary["methods"].setdefault(m, {})["paired"] = {"rank_first": cols["rank_first"], **{
            metric: {k: cols[f"{pre}{metric}{post}"] for k, pre, post in (
                ("diff", "diff_", ""), ("low", "diff_", "_low"), ("high", "diff_", "_high"),
                ("verdict", "verdict_", ""))} for metric in PAIRED}}


def seed_spread(entry: dict[str, Any]) -> dict[str, float]:
    """A control's spread of mean LSS across its ``--seeds`` random draws (the lowest and highest seed's mean), next
    to the within-run interval (``lss_low``/``lss_high``); one draw gives its own LSS for both.

    >>> seed_spread({"mean_lss": 0.5, "seed_min": 0.4, "seed_max": 0.6}), seed_spread({"mean_lss": 0.5})
    ({'lss_seed_min': 0.4, 'lss_seed_max': 0.6}, {'lss_seed_min': 0.5, 'lss_seed_max': 0.5})
    """
    lss = entry.get("mean_lss", float("nan"))
    return {"lss_seed_min": entry.get("seed_min", lss), "lss_seed_max": entry.get("seed_max", lss)}


def split_spread(per_seed: Sequence[dict[str, Any]]) -> dict[str, float]:
    """A method's spread across the fact splits of ``--seeds`` (``per_seed``: one ``{"lss", "target_wins"}`` per
    split, seed 0 first): the lowest and highest split's mean LSS and target wins, next to the within-run intervals.
    NaN values (a split without scored pairs) are left out.

    >>> split_spread([{"lss": 0.5, "target_wins": 0.2}, {"lss": 0.7, "target_wins": 0.1}])
    {'lss_seed_min': 0.5, 'lss_seed_max': 0.7, 'target_wins_seed_min': 0.1, 'target_wins_seed_max': 0.2}
    """
    out: dict[str, float] = {}
    for key in ("lss", "target_wins"):
        values = [s[key] for s in per_seed if s.get(key, float("nan")) == s.get(key, float("nan"))]
        out[f"{key}_seed_min"] = min(values) if values else float("nan")
        out[f"{key}_seed_max"] = max(values) if values else float("nan")
    return out
