"""The plain-text tables the command line prints: pure functions of artifacts (a neuron set, an LSS summary, an
evaluation's rows), so library users and notebooks can print the same thing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lens_steer.languages import LANGUAGES


def format_counts(neurons, stats=None, per_layer: bool = False) -> str:
    """A plain-text table: language, name, tokens, neurons, and the three layers holding most of them."""
    counts = neurons.counts()
    header = f"{'lang':<5} {'name':<16} {'tokens':>7} {'neurons':>7}  top layers (count)"
    lines = [header, "-" * len(header)]
    for i, code in enumerate(neurons.languages):
        name = LANGUAGES[code].name if code in LANGUAGES else ""
        tokens = f"{int(stats.n_tokens[i]):>7}" if stats is not None else f"{'':>7}"
        row = counts[i]
        top = [f"{int(layer)}({int(row[layer])})" for layer in row.argsort(descending=True, stable=True)[:3]
               if int(row[layer]) > 0]
        lines.append(f"{code:<5} {name[:16]:<16} {tokens} {int(row.sum()):>7}  {' '.join(top) or '-'}")
        if per_layer:
            lines.append("      " + " ".join(f"{int(c):>3}" for c in row))
    return "\n".join(lines)


def format_factor_table(summary: dict) -> str:
    """One line per factor: LSS with its interval and with the diagonal counted (``w/diag``), target wins
    (baseline, chance), gain, damage, specificity and, when measured, forcing success and repetition of the steered
    text; then what each column means.

    >>> entry = dict(mean_lss=1.0, mean_lss_with_diagonal=0.5, ci_low=1.0, ci_high=1.0, target_wins=0.5,
    ...              target_wins_base=0.0, chance=0.5, target_gain=2.0, source_damage=-1.0, specificity=float("nan"))
    >>> lines = format_factor_table({"factors": {"p_max": entry}}).splitlines()
    >>> print(lines[2])
    p_max             1.000 [1.00, 1.00]  0.500  0.50  0.00   +2.0    -1.0     -
    >>> "chance 1/K = 0.50" in lines[3]
    True
    """
    per = summary["factors"]
    has_forcing = any("forcing" in v for v in per.values())
    head = (f"{'factor':<16} {'LSS':>6} {'95% CI':>12} {'w/diag':>6} {'wins':>5} {'base':>5} {'gain':>6}"
            f" {'damage':>7} {'spec':>5}" + (f" {'forcing':>7} {'repeat':>6}" if has_forcing else ""))
    lines = [head, "-" * len(head)]
    chance = next((v["chance"] for v in per.values() if v.get("chance") == v.get("chance")), float("nan"))
    for text, v in per.items():
        cells = [_cell(v.get(key), spec) for key, spec in (("mean_lss_with_diagonal", ">6.3f"),
                                                           ("target_wins", ">5.2f"), ("target_wins_base", ">5.2f"),
                                                           ("target_gain", ">+6.1f"), ("source_damage", ">+7.1f"),
                                                           ("specificity", ">5.2f"))]
        line = f"{text:<16} {v['mean_lss']:>6.3f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}] " + " ".join(cells)
        if has_forcing:
            line += (f" {v['forcing']:>7.2f} {v['repetition']:>6.2f}" if "forcing" in v else f" {'-':>7} {'-':>6}")
        if "seed_min" in v:
            line += f"  (seeds {v['seed_min']:.2f}..{v['seed_max']:.2f})"
        lines.append(line)
    chance_text = f"; chance 1/K = {chance:.2f}" if chance == chance else ""
    lines.append(f"LSS: share of facts whose D = logp(o_t) - logp(o_s) rose, mean over source != target pairs;"
                 " w/diag: the same mean over the whole source x target matrix, each s = t cell counted as 0 (the"
                 " authors' matrices); wins: target answer ranked first among the K languages' answers (base:"
                 f" without steering{chance_text}); gain/damage: mean change of logp(o_t)/logp(o_s) in nats; spec:"
                 " share of other languages' answers that rose too (lower = more specific)"
                 + ("; forcing: greedy outputs detected as the target; repeat: repeated trigrams" if has_forcing else ""))
    return "\n".join(lines)


def _ci(row: dict[str, Any], key: str, spec: str = ".2f") -> str:
    """``[low, high]`` of ``key``'s 95% interval in ``row`` (``<key>_low``, ``<key>_high``), or "" without one.

    >>> _ci(dict(lss_low=0.25, lss_high=0.5), "lss"), _ci(dict(lss=0.5), "lss")
    ('[0.25, 0.50]', '')
    """
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if low is None or high is None or low != low or high != high:
        return ""
    return f"[{low:{spec}}, {high:{spec}}]"


def _cell(value: float | None, spec: str) -> str:
    """A table number, or "-" in its width when it was not measured (a test-time factor's target wins).

    >>> _cell(0.5, ">5.2f"), _cell(float("nan"), ">+6.1f")
    (' 0.50', '     -')
    """
    if value is None or value != value:
        return format("-", ">" + spec.split(".")[0].lstrip(">+"))
    return format(value, spec)


def format_eval(label: str, factor: str, rows: Sequence[dict[str, Any]], self_cross: Sequence[dict[str, Any]]) -> str:
    """The e x t table of an evaluation's first metric and the mean self- and cross-language changes.

    Each cell is the value and, where the table has one, its 95% interval (``low``, ``high``).

    >>> rows = [dict(intervened="none", eval_lang="fr", metric="acc", value=0.5),
    ...         dict(intervened="fr", eval_lang="fr", metric="acc", value=0.75, low=0.5, high=0.9)]
    >>> print(format_eval("xcopa", "p_max", rows, []).splitlines()[2])
    fr                       0.5       0.75 [0.5, 0.9]
    """
    metric = rows[0]["metric"]
    lines = [f"{label}, factor {factor}: {metric} per evaluation language (rows) and intervened language"
             + (" (95% intervals)" if any(_ci({"v_low": r.get("low"), "v_high": r.get("high")}, "v") for r in rows)
                else "")]
    intervened = list(dict.fromkeys(r["intervened"] for r in rows))
    lines.append(f"{'eval':<6}" + "".join(f"{t:>22}" for t in intervened))
    for lang in dict.fromkeys(r["eval_lang"] for r in rows):
        got = {r["intervened"]: r for r in rows if r["eval_lang"] == lang and r["metric"] == metric}
        cells = []
        for t in intervened:
            r = got.get(t, {})
            value = r.get("value", float("nan"))
            ci = _ci({"v_low": r.get("low"), "v_high": r.get("high")}, "v", ".3g")
            cells.append(f"{(format(value, '.4g') + (' ' + ci if ci else '')):>22}")
        lines.append(f"{lang:<6}" + "".join(cells))
    lines.append("\nmean change against no intervention (self: eval = intervened language; cross: eval != intervened)")
    notes: dict[str, None] = {}  # why a mean is missing, once each (the same for every metric of a task)
    for s in self_cross:
        better = "lower is better" if s["lower_is_better"] else "higher is better"
        cells = []
        for kind in ("self", "cross"):
            if s[f"n_{kind}"]:
                cells.append(f"{kind} {s[kind]:+.4g} (n={s[f'n_{kind}']})")
            else:
                cells.append(f"{kind} none")
                notes[_no_pairs(kind, rows, s["metric"])] = None
        lines.append(f"  {s['metric']:<10} {'  '.join(cells)}  [{better}]")
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)


def _no_pairs(kind: str, rows: Sequence[dict[str, Any]], metric: str) -> str:
    """Why an evaluation has no self- or cross-language change to average, and what to pass to get one.

    >>> rows = [dict(intervened=t, eval_lang="fr", metric="acc", value=0.5) for t in ("none", "fr")]
    >>> print(_no_pairs("cross", rows, "acc")[:69])
    cross-language: none (fr is the only evaluation language and the only
    """
    mine = [r for r in rows if r["metric"] == metric and r["intervened"] != "none"]
    evals = list(dict.fromkeys(r["eval_lang"] for r in rows if r["metric"] == metric))
    targets = list(dict.fromkeys(r["intervened"] for r in mine))
    label = "self-language" if kind == "self" else "cross-language"
    if not any((r["eval_lang"] == r["intervened"]) == (kind == "self") for r in mine):
        if kind == "cross":
            return (f"{label}: none ({', '.join(evals)} is the only evaluation language and the only intervened one;"
                    " add --targets or --eval-langs with other languages)")
        return (f"{label}: none (no intervened language ({', '.join(targets)}) is an evaluation language"
                f" ({', '.join(evals)}); add one of them to --targets)")
    return f"{label}: none (every {metric} value of those cells or of their baseline is missing: nan)"


def format_lss_result(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The factor table, skipped targets, the chosen factor with its reason, the paper's choice and the hardest
    pairs of the chosen factor: what ``lens-steer lss`` prints."""
    best = summary["best_factor"]
    hardest = sorted((r for r in rows if r["factor"] == best and r["layers"] == "all" and r["n_facts"]),
                     key=lambda r: r["lss"])[:3]
    lines = [format_factor_table(summary)]
    if summary["skipped_targets"]:
        lines.append(f"skipped targets (no neurons; in no mean): {', '.join(summary['skipped_targets'])}")
    lines.append(f"\nchosen factor: {summary['reason']}")
    if not any(v.get("control") for v in summary["factors"].values()):
        lines.append("null: 0.5, a coin flip, as no control factor was run; matched random neurons often score above"
                     " it (README: Beyond LSS): add control:p_max to --factors to compare with them")
    lines.append(f"(by LSS alone, the paper's choice (highest mean LSS), it would be {summary['best_lss_factor']});"
                 f" hardest pairs for {best}: " + ", ".join(f"{r['source']}->{r['target']} {r['lss']:.2f}"
                                                          + (f" {_ci(r, 'lss')}" if _ci(r, "lss") else "")
                                                          for r in hardest))
    return "\n".join(lines)


def format_forcing(rows: Sequence[dict[str, Any]], factors: Sequence[str]) -> str:
    """The forcing table (one line per factor and target: strict success with its Wilson 95% interval over the n
    generations) and the mean strict success of each factor.

    >>> row = dict(factor="p_max", target="fr", n=10, forcing_strict=0.8, forcing_strict_low=0.4902,
    ...            forcing_strict_high=0.9433, forcing_lenient=0.8, baseline_strict=0.0, empty=0)
    >>> print(format_forcing([row], ["p_max"]).splitlines()[1])
    p_max        fr      10    0.80 [0.49, 0.94]     0.80     0.00     0
    """
    lines = [f"{'factor':<12} {'target':<6} {'n':>3} {'strict':>7} {'95% CI':<12} {'lenient':>8} {'baseline':>8}"
             f" {'empty':>5}"]
    for r in rows:
        lines.append(f"{r['factor']:<12} {r['target']:<6} {r['n']:>3} {r['forcing_strict']:>7.2f}"
                     f" {_ci(r, 'forcing_strict'):<12} {r['forcing_lenient']:>8.2f} {r['baseline_strict']:>8.2f}"
                     f" {r['empty']:>5}")
    for factor in factors:
        mine = [r["forcing_strict"] for r in rows if r["factor"] == factor and r["n"]]
        lines.append(f"mean forcing success ({factor}, strict): {sum(mine) / max(len(mine), 1):.2f}")
    return "\n".join(lines)


def format_steer(prompt: str, records: Sequence[dict[str, Any]]) -> str:
    """The prompt, then one line per continuation: its label, detected language, text and whether it hit."""
    lines = [f"prompt: {prompt}"]
    for r in records:
        label = f"{r['target']} {r['factor']}" if r["steered"] else "baseline"
        hit = "" if not r["steered"] else ("  [target]" if r["match_strict"] else
                                           "  [target, lenient]" if r["match_lenient"] else "  [miss]")
        hit += "  [empty]" if r["empty"] else ""  # only whitespace: a miss because nothing was written
        lines.append(f"{label:>16} ({r['detected'] or '??'}): {r['text']!r}{hit}")
    return "\n".join(lines)


def format_neuron(layer: int, neuron: int, owners: Sequence[str], method: str, table: Any) -> str:
    """One neuron's languages and its per-language probability, p_max and p_median (``*``: assigned)."""
    selection = "selection" in table  # lens-steer stability ran: the share of resamples choosing it, per language
    lines = [f"layer {layer}, neuron {neuron}: assigned to {', '.join(owners) or 'no language'} ({method})",
             f"{'lang':<5} {'name':<16} {'p':>6} {'p_max':>8} {'p_median':>8}" + (f" {'chosen':>7}" if selection else "")]
    for r in table.itertuples():
        name = LANGUAGES[r.language].name if r.language in LANGUAGES else ""
        mark = " *" if r.assigned else ""
        chosen = f" {r.selection:>7.0%}" if selection else ""
        lines.append(f"{r.language:<5} {name[:16]:<16} {r.probability:>6.3f} {r.p_max:>8.3f} {r.p_median:>8.3f}"
                     f"{chosen}{mark}")
    if selection:
        lines.append("chosen: share of bootstrap resamples of the folds that assign the neuron to the language"
                     " (lens-steer stability)")
    return "\n".join(lines)


def format_top_tokens(hits: dict[str, Sequence[Any]], site: str) -> str:
    """Per language, the tokens with the highest neuron value, each with a little context."""
    value = "act_fn(gate)" if site == "act" else "hook_post"
    lines = []
    for code, items in hits.items():
        lines.append(f"\n{code}: top {len(items)} tokens by {value}")
        lines += [f"  {h.value:>8.3f}  {h.left[-30:]!s:>30}[{h.token}]{h.right[:30]}".replace("\n", " ")
                  for h in items]
    return "\n".join(lines)


def format_stability(rows: Sequence[dict[str, Any]]) -> str:
    """``stability.csv`` as a table: per language the set's size, its Jaccard with resampled sets (95% interval),
    the split-half Jaccard and the share of stable neurons."""
    lines = [f"{'lang':<5} {'neurons':>7} {'jaccard':>8} {'95% interval':>15} {'split-half':>10} {'stable':>7}"]
    for r in rows:
        lines.append(f"{r['lang']:<5} {r['n_neurons']:>7} {r['jaccard_mean']:>8.3f} "
                     f"{'[' + format(r['jaccard_low'], '.3f') + ', ' + format(r['jaccard_high'], '.3f') + ']':>15}"
                     f" {r['split_half_jaccard']:>10.3f} {r['share_stable']:>7.1%}")
    if rows:
        lines.append(f"{rows[0]['resamples']} bootstrap resamples of {rows[0]['folds']} folds of sentences; stable ="
                     " chosen in >= 90% of resamples; split-half = even folds vs odd folds")
    return "\n".join(lines)


def format_compare(rows: Sequence[dict[str, Any]]) -> str:
    """``compare.csv`` as a table: one line per method and control, what it used and every metric.

    LSS and forcing carry their 95% intervals (bootstrap over pairs; Wilson over the generations).

    >>> print(format_compare([dict(method="none", alpha=float("nan"), layer="-", lss=float("nan"), target_wins=0.2,
    ...       target_gain=0.0, source_damage=0.0, specificity=float("nan"), forcing=0.1, forcing_low=0.02,
    ...       forcing_high=0.4, repetition=0.3, udhr_ppl_self=1.0, udhr_ppl_cross=1.0,
    ...       seconds=float("nan"))]).splitlines()[2])
    ... # doctest: +NORMALIZE_WHITESPACE
    none - - - 0.20 +0.0 +0.0 - 0.10 [0.02, 0.40] 0.30 1 1 -
    """
    head = (f"{'method':<22} {'alpha':>5} {'layer':>5} {'LSS':>5} {'95% CI':<12} {'wins':>5} {'gain':>6}"
            f" {'damage':>7} {'spec':>5} {'forcing':>7} {'95% CI':<12} {'repeat':>6} {'ppl_s':>7} {'ppl_x':>7}"
            f" {'sec':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [_cell(r.get(k), spec) if spec else f"{_ci(r, k):<12}" for k, spec in (
            ("lss", ">5.2f"), ("lss", ""), ("target_wins", ">5.2f"), ("target_gain", ">+6.1f"),
            ("source_damage", ">+7.1f"), ("specificity", ">5.2f"), ("forcing", ">7.2f"), ("forcing", ""),
            ("repetition", ">6.2f"), ("udhr_ppl_self", ">7.3g"), ("udhr_ppl_cross", ">7.3g"),
            ("seconds", ">5.0f"))]  # a broken model's ratios run to 1e10: 3 digits
        lines.append(f"{str(r['method'])[:22]:<22} {_cell(r.get('alpha'), '>5.3g')} {str(r.get('layer', '')):>5} "
                     + " ".join(cells))
    lines.append("LSS, wins, gain, damage, spec: on the reported cloze facts (as `lss`), LSS's 95% CI the bootstrap"
                 " over pairs; forcing: greedy outputs of the"
                 " neutral prompts detected as the target (95% CI: Wilson over the generations); repeat: repeated"
                 " trigrams; ppl_s / ppl_x: UDHR perplexity"
                 " ratio against no intervention, evaluated in the steered language / in the others; sec: the method"
                 " with its choice and its control")
    return "\n".join(lines + paired_lines(rows))


_VERDICT_MARK = {"better": "+", "worse": "-", "indistinguishable": "=", "reference": "R"}
_PAIRED_SHORT = (("lss", "L"), ("target_wins", "W"), ("target_gain", "G"), ("source_damage", "D"), ("forcing", "F"),
                 ("udhr_ppl_self", "S"), ("udhr_ppl_cross", "X"))


def paired_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The methods against the reference (``compare.csv``'s paired columns): forcing's difference with its paired
    95% interval, one verdict mark per metric and ``rank_first``; nothing for rows written without them.

    >>> rows = [dict(method="p_max", diff_forcing=0.0, diff_forcing_low=0.0, diff_forcing_high=0.0, rank_first=0.25,
    ...              **{f"verdict_{m}": "reference" for m, _ in _PAIRED_SHORT}),
    ...         dict(method="diffmean*best", diff_forcing=0.12, diff_forcing_low=0.03, diff_forcing_high=0.2,
    ...              rank_first=0.75, **{f"verdict_{m}": v for (m, _), v in zip(_PAIRED_SHORT, ["better", "worse",
    ...              "indistinguishable", "worse", "better", "", "better"])}),
    ...         dict(method="control:p_max", verdict_lss="")]
    >>> for line in paired_lines(rows)[1:4]:
    ...     print(line)
    vs p_max               forcing (paired 95%)    L W G D F S X  first
    p_max                  +0.00 [+0.00, +0.00]    R R R R R R R   0.25
    diffmean*best          +0.12 [+0.03, +0.20]    + - = - + . +   0.75
    """
    paired = [r for r in rows if any(isinstance(r.get(f"verdict_{m}"), str) and r[f"verdict_{m}"]
                                     for m, _ in _PAIRED_SHORT)]  # a CSV read back holds NaN where empty
    reference = next((r["method"] for r in paired if "reference" in (r.get(f"verdict_{m}") for m, _ in _PAIRED_SHORT)),
                     None)
    if not paired or reference is None:
        return []
    head = f"{'vs ' + str(reference):<22} {'forcing (paired 95%)':<23} {' '.join(c for _, c in _PAIRED_SHORT)}  first"
    lines = ["", head]
    for r in paired:
        d, lo, hi = (r.get(f"diff_forcing{k}") for k in ("", "_low", "_high"))
        forcing = f"{_cell(d, '+.2f')} [{_cell(lo, '+.2f')}, {_cell(hi, '+.2f')}]"
        marks = " ".join(_VERDICT_MARK.get(r.get(f"verdict_{m}"), ".") for m, _ in _PAIRED_SHORT)
        lines.append(f"{str(r['method'])[:22]:<22} {forcing:<23} {marks} {_cell(r.get('rank_first'), '>6.2f')}")
    lines.append("method minus reference on the same facts, prompts and texts (paired bootstrap, 95%): + better,"
                 " - worse, = indistinguishable, R the reference, . not measured; L LSS, W target wins, G gain,"
                 " D source damage (less is better), F forcing, S / X perplexity ratio self / cross (lower is"
                 " better); first: share of resamples of the prompts in which the method forces best")
    return lines
