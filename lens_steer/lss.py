"""Language Steering Shift (Rahmanisa et al. 2025), batched, plus how much it shifts.

For facts i with a prompt in source language s and answers in every language:
``D_i(s, t) = logp(o_t | x_s) - logp(o_s | x_s)``. ``LSS(s, t)`` is the fraction of facts whose D is larger under
the intervention for t than without it (a sign test; ties, including "no effect", count as no shift). We also
report the mean shift of D with a bootstrap 95% interval over facts, which says how much, not only how often.

The baseline is scored once per source; every (fact, target) row of a factor is scored in the same batched
forwards with its own per-row intervention, all answers of a prompt sharing the prompt's KV cache.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from torch import Tensor

from lens_steer.choice import DAMAGE_BOUND, RULE, SKIPPED_NOTE, choose_factor, summarise, with_diagonal  # noqa: F401
from lens_steer.cloze import Fact, load_cloze, supported_languages
from lens_steer.configs import CONTROL_SEEDS, LSSConfig  # noqa: F401 - declared there, torch-free, for the CLI
from lens_steer.distributed import current, run_dealt
from lens_steer.errors import LensSteerError
from lens_steer.factors import Factor, Intervention
from lens_steer.forcing import NEUTRAL_PROMPTS, append_generations, check_before_loading, run_forcing, write_forcing
from lens_steer.prompts import forcing_prompts
from lens_steer.languages import parse_languages
from lens_steer.lid import get_detector
from lens_steer.intervals import N_BOOT, bootstrap_mean_ci, wilson_share  # noqa: F401 - re-exported
from lens_steer.models import LoadConfig, ModelLike
from lens_steer.neurons import NeuronSet
from lens_steer.run import LSS_CSV, LSS_SUMMARY, Run, writes
from lens_steer.scoring import score
from lens_steer.steer import Steerer
from lens_steer.stats import Stats

# Every share and mean has its 95% interval right after it (README: which interval each column uses): Wilson over
# n_facts for lss, target_wins and target_wins_base, over n_nontie for lss_nontie; the bootstrap over facts for
# mean_shift (ci_low, ci_high), target_gain, source_damage and specificity.
LSS_COLUMNS = ("factor", "factor_kind", "factor_value", "layers", "source", "target", "lss", "lss_low", "lss_high",
               "lss_nontie", "lss_nontie_low", "lss_nontie_high", "mean_shift", "ci_low", "ci_high", "target_gain",
               "target_gain_low", "target_gain_high", "source_damage", "source_damage_low", "source_damage_high",
               "target_wins", "target_wins_low", "target_wins_high", "target_wins_base", "target_wins_base_low",
               "target_wins_base_high", "chance", "specificity", "specificity_low", "specificity_high", "n_facts",
               "n_nontie", "n_ties", "n_seeds", "note")
_NUMERIC = ("lss", "lss_low", "lss_high", "lss_nontie", "lss_nontie_low", "lss_nontie_high", "mean_shift", "ci_low",
            "ci_high", "target_gain", "target_gain_low", "target_gain_high", "source_damage", "source_damage_low",
            "source_damage_high", "target_wins", "target_wins_low", "target_wins_high", "target_wins_base",
            "target_wins_base_low", "target_wins_base_high", "chance", "specificity", "specificity_low",
            "specificity_high")


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
    gain, damage = int_t - base_t, int_s - base_s
    g_lo, g_hi = bootstrap_mean_ci(gain)
    d_lo, d_hi = bootstrap_mean_ci(damage)
    mean = (lambda x: float(x.double().mean()) if x.numel() else float("nan"))  # noqa: E731
    n, n_nontie = int(shift.numel()), int(nontie.sum())
    lss, lss_lo, lss_hi = wilson_share(int(up.sum()), n)
    nt, nt_lo, nt_hi = wilson_share(int(up[nontie].sum()), n_nontie)
    return {
        "lss": lss, "lss_low": lss_lo, "lss_high": lss_hi,
        "lss_nontie": nt, "lss_nontie_low": nt_lo, "lss_nontie_high": nt_hi,
        "mean_shift": mean(shift),
        "ci_low": lo,
        "ci_high": hi,
        "target_gain": mean(gain), "target_gain_low": g_lo, "target_gain_high": g_hi,
        "source_damage": mean(damage), "source_damage_low": d_lo, "source_damage_high": d_hi,
        "n_facts": n,
        "n_nontie": n_nontie,
        "n_ties": int((shift == 0).sum()),
        # per fact, in the source's fact order: what `compare` pairs between methods (not a column of lss.csv)
        "per_fact": {"lss": up.double().tolist(), "target_gain": gain.double().tolist(),
                     "source_damage": damage.double().tolist()},
    }


def win_stats(base_norm: Tensor, int_norm: Tensor, base: Tensor, steered: Tensor, si: int, ti: int) -> dict[str, Any]:
    """Does the target answer win, and do other languages rise too? From ``[facts, K]`` tables of every language's
    answer: length-normalised (``*_norm``: mean log-prob per answer token) and summed log-probabilities.

    ``target_wins``: share of facts where the t answer has the highest normalised log-prob under the intervention
    (``target_wins_base``: the same without it; ``chance`` = 1/K). ``specificity``: over the other languages u (not
    s, not t), the share of (fact, u) whose D_u = logp(o_u) - logp(o_s) rises too: 0 means only t moved, 1 means the
    intervention lifts every language alike.

    >>> base = torch.tensor([[0.0, -1.0, -2.0]])
    >>> steered = torch.tensor([[-3.0, 0.0, -2.5]])
    >>> w = win_stats(base, steered, base, steered, si=0, ti=1)
    >>> (w["target_wins"], w["target_wins_base"], w["specificity"], round(w["chance"], 3))
    (1.0, 0.0, 1.0, 0.333)
    """
    k, n = base_norm.shape[1], base_norm.shape[0]
    others = [u for u in range(k) if u not in (si, ti)]
    rise = ((steered[:, others] - steered[:, [si]]) - (base[:, others] - base[:, [si]])) > 0
    wins, wins_lo, wins_hi = wilson_share(int((int_norm.argmax(dim=1) == ti).sum()), n)
    base_wins, base_lo, base_hi = wilson_share(int((base_norm.argmax(dim=1) == ti).sum()), n)
    # the (fact, u) cells of one fact are not independent: the bootstrap over facts of each fact's share
    spec_lo, spec_hi = bootstrap_mean_ci(rise.double().mean(dim=1)) if others else (float("nan"), float("nan"))
    return {
        "target_wins": wins, "target_wins_low": wins_lo, "target_wins_high": wins_hi,
        "target_wins_base": base_wins, "target_wins_base_low": base_lo, "target_wins_base_high": base_hi,
        "chance": 1.0 / k,
        "specificity": float(rise.double().mean()) if others else float("nan"),
        "specificity_low": spec_lo, "specificity_high": spec_hi,
    }


def run_lss(model: ModelLike, neurons: NeuronSet, stats: Stats | None, facts: dict[str, Sequence[Fact]],
            languages: Sequence[str], factors: Sequence[Factor], *, per_layer: bool | Sequence[str] = False,
            batch_size: int = 32, n_seeds: int = CONTROL_SEEDS, join: str = "auto",
            progress: bool = True, ranks_out: list[int] | None = None,
            baselines: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """LSS rows for every factor (and layer setting), source and target != source.

    Args:
        facts: per source language, its facts (each with answers in every language of ``languages``).
        languages: run languages; every one is a source (if it has facts) and a target.
        factors: parsed factors; each row's ``factor`` column is the factor's text verbatim.
        n_seeds: matched random draws per ``control:`` factor; its rows hold the mean over seeds.
        per_layer: also run single-layer interventions (``layers`` = the layer): ``True`` for every factor, or a
            list of factor texts to do it for those only (a per-layer sweep costs n_layers times one factor).
        join: how a prompt and its answers are joined (:func:`lens_steer.languages.separator`): ``auto`` (one
            space iff the prompt's language writes spaces, the same for every answer) or ``reference`` (one space).
        ranks_out: if given, filled with the number of rows each rank scored (one entry without torchrun).
        baselines: a dict kept between calls on the same facts (``lens-steer compare`` scores several factor lists
            on one fact set): each source's unintervened scores are computed once and reused while its facts,
            languages and targets are the same (the same numbers: a baseline does not depend on the factors).

    A target without neurons gets rows with an empty ``lss`` and a note: it is in no mean, interval or choice.
    """
    steerer = Steerer(model, neurons, stats)
    n_layers = steerer.site.n_layers
    layered = {f.text for f in factors} if per_layer is True else set(per_layer or [])

    def layer_settings(factor: Factor) -> list[str | int]:
        return ["all"] + (list(range(n_layers)) if factor.text in layered else [])

    empty = _without_neurons(neurons, languages)
    sources = [s for s in languages if facts.get(s)]
    targets = {s: [t for t in languages if t != s and t not in empty] for s in sources}
    # Under torchrun the baselines (each source's once) and then the sweep rows are dealt to the ranks, most costly
    # first; every unit runs on the shapes one process would use, so the rows are the same wherever they ran.
    src_of = _baselines(model, facts, languages, targets, join, batch_size,
                        baselines if baselines is not None else {})
    work = [(s, f, layers) for s in sources for f in factors for layers in layer_settings(f)]
    bar = tqdm(total=len(work), desc="LSS", disable=not progress)

    def unit(job: tuple[str, Factor, str | int]) -> list[dict[str, Any]]:
        s, factor, layers = job
        src = src_of[s]
        seeds = list(range(n_seeds)) if factor.control else [0]
        per_seed = [src.steered_rows(model, steerer, factor, layers, seed, batch_size) for seed in seeds]
        rows = [_row(factor, layers, s, t, _mean_rows([seed_rows[j] for seed_rows in per_seed]))
                for j, t in enumerate(src.targets)]
        bar.update(1)
        return rows + [_row(factor, layers, s, t, {"note": SKIPPED_NOTE}) for t in languages if t != s and t in empty]

    results, owners = run_dealt(work, [_sweep_cost(len(facts[s]), len(targets[s]), f, n_seeds) for s, f, _ in work],
                                unit)
    bar.close()
    if ranks_out is not None:
        ranks_out[:] = [sum(len(r) for r, o in zip(results, owners) if o == k) for k in range(current().size)]
    return [row for rows in results for row in rows]


def _baselines(model: ModelLike, facts: dict[str, Sequence[Fact]], languages: Sequence[str],
               targets: dict[str, list[str]], join: str, batch_size: int,
               known: dict[str, Any]) -> dict[str, _Source]:
    """Each source's unintervened scores (the sources are the keys of ``targets``), scored once: ``known`` keeps
    them between calls and one is reused while its facts, languages and targets are the same (a baseline does not
    depend on the factors); the others are dealt to the ranks, most facts first, and added to ``known``."""
    todo = [s for s in targets if not (s in known and known[s].items == list(facts[s])
                                       and known[s].languages == list(languages) and known[s].targets == targets[s])]
    scored, _ = run_dealt(todo, [len(facts[s]) * len(languages) for s in todo], lambda s: _Source.score(
        model, s, list(facts[s]), languages, targets[s], join, batch_size))
    known.update(zip(todo, scored))
    return {s: known[s] for s in targets}


def _sweep_cost(n_facts: int, n_targets: int, factor: Factor, n_seeds: int) -> int:
    """What one sweep unit (a source, a factor, a layer setting) costs, to deal the units evenly: facts x targets x
    seeds, doubled for test-time factors (a forward per prompt and answer)."""
    return n_facts * max(n_targets, 1) * (n_seeds if factor.control else 1) * (2 if factor.test_time else 1)


def _without_neurons(neurons: NeuronSet, languages: Sequence[str]) -> list[str]:
    """The targets without neurons, with a warning: their rows are kept, empty, with a note."""
    totals = neurons.totals()
    empty = [t for t in languages if totals.get(t, 0) == 0]
    if empty:
        warnings.warn(f"no neurons for {', '.join(empty)}: those targets are skipped", stacklevel=3)
    return empty


@dataclass
class _Source:
    """One source language's facts, their answers in every language, and the baseline scores ``[facts, K]``."""

    lang: str
    items: list[Fact]
    languages: list[str]
    targets: list[str]
    prompts: list[str]
    answers: list[list[str]]
    base: Tensor
    base_norm: Tensor

    @classmethod
    def score(cls, model: ModelLike, s: str, items: list[Fact], languages: Sequence[str], targets: list[str], join: str,
              batch_size: int) -> _Source:
        answers = [[item.continuation(s, u, join) for u in languages] for item in items]
        prompts = [item.prompt[s] for item in items]
        base = score(model, prompts, answers, batch_size=batch_size)  # the baseline, once per source
        return cls(s, items, list(languages), targets, prompts, answers, base.logp, base.normalised())

    def steered_rows(self, model: ModelLike, steerer: Steerer, factor: Factor, layers: str | int, seed: int,
                     batch_size: int) -> list[dict[str, Any]]:
        """Per target, the LSS columns of one factor / layer setting / control seed.

        Every language's answer is scored under I_t (target wins, specificity); they share the prompt's KV cache, so
        the extra answers cost only their own few tokens. A test-time factor scores each (prompt, answer) in a
        forward of its own, so only the source's and the target's answers are scored, as the reference's DOD_INT
        does: its target wins and specificity stay empty."""
        si = self.languages.index(self.lang)
        pair_only = factor.test_time
        ivs = [Intervention(t, factor, layers=layers, seed=seed) for _ in self.items for t in self.targets]
        rep_answers = [[a[si], a[self.languages.index(t)]] if pair_only else a
                       for a in self.answers for t in self.targets]
        got = score(model, [p for p in self.prompts for _ in self.targets], rep_answers, steerer=steerer,
                    interventions=ivs, batch_size=batch_size)
        logp = got.logp.view(len(self.items), len(self.targets), -1)
        norm = got.normalised().view(len(self.items), len(self.targets), -1)
        out = []
        for j, t in enumerate(self.targets):
            ti = self.languages.index(t)
            identical = torch.tensor([_same(it.answer[self.lang], it.answer[t]) for it in self.items])
            s_col, t_col = (0, 1) if pair_only else (si, ti)
            row = pair_stats(self.base[:, si], self.base[:, ti], logp[:, j, s_col], logp[:, j, t_col], identical)
            if pair_only:  # the baseline still says how often t wins without steering
                base = win_stats(self.base_norm, self.base_norm, self.base, self.base, si, ti)
                row.update({k: base[k] for k in ("target_wins_base", "target_wins_base_low", "target_wins_base_high",
                                                 "chance")})
            else:
                row.update(win_stats(self.base_norm, norm[:, j], self.base, logp[:, j], si, ti))
                row["per_fact"]["target_wins"] = (norm[:, j].argmax(dim=1) == ti).double().tolist()
            out.append(row)
        return out


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _mean_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several seeds' rows (numeric columns); counts from the first."""
    out = dict(rows[0])
    for key in _NUMERIC:
        vals = [r[key] for r in rows if key in r and r[key] == r[key]]
        if key in out:
            out[key] = sum(vals) / len(vals) if vals else float("nan")
    out["n_seeds"] = len(rows)
    if len(rows) > 1 and all("per_fact" in r for r in rows):  # per fact too: the mean over seeds
        out["per_fact"] = {k: [sum(v) / len(v) for v in zip(*(r["per_fact"][k] for r in rows))]
                           for k in rows[0]["per_fact"] if all(k in r["per_fact"] for r in rows)}
    if len(rows) > 1:
        out["seed_lss"] = [r["lss"] for r in rows]
    return out


def _row(factor: Factor, layers: str | int, s: str, t: str, values: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"factor": factor.text, "factor_kind": "control" if factor.control else factor.kind,
                           "factor_value": factor.value, "layers": layers, "source": s, "target": t}
    row.update({k: float("nan") for k in _NUMERIC})
    row.update({"n_facts": 0, "n_nontie": 0, "n_ties": 0, "n_seeds": 1, "note": ""})
    row.update(values)
    return row


def write_lss(run_dir: str | Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write ``lss.csv`` and ``lss_summary.json`` atomically."""
    run = Run(run_dir)
    run.write_csv(LSS_CSV, rows, LSS_COLUMNS)
    run.write_json(LSS_SUMMARY, summary)


# ---------------------------------------------------------------------------------------------------------------
# LSS of a run directory: what `lens-steer lss` does, as a config + function pair
# ---------------------------------------------------------------------------------------------------------------
def lss_languages(neurons: NeuronSet, spec: str | None, cloze: str) -> list[str]:
    """The LSS languages: those asked for (each must be in the run), else the run's languages the cloze covers."""
    if not spec:
        covered = supported_languages(cloze)
        langs = [c for c in neurons.languages if c in covered]
    else:
        langs = parse_languages(spec)
        missing = [c for c in langs if c not in neurons.languages]
        if missing:
            raise LensSteerError(f"{', '.join(missing)} not in the run (it has {', '.join(neurons.languages)});"
                                 " identify neurons for them first")
    if len(set(langs)) < 2:  # every LSS pair is a source and another language, the target
        which = f"--langs {spec}" if spec else f"the run's languages the {cloze} cloze covers"
        raise LensSteerError(f"LSS needs at least two languages (a source and a target), not {len(set(langs))}"
                             f" ({which}: {', '.join(dict.fromkeys(langs)) or 'none'}); give --langs two or more"
                             " of the run's languages, e.g. --langs en,fr")
    return langs


def cloze_facts(name: str, langs: Sequence[str], path: str | None = None,
                max_facts: int | None = None) -> tuple[Any, dict[str, list[Fact]]]:
    """The cloze ``name`` for ``langs`` and, per source language, its facts that have an answer in every one of
    ``langs`` (the fact set of ``lss`` and ``compare``): ``(cloze, {source: [Fact, ...]})``."""
    cloze = load_cloze(name, langs, path=path, max_facts=max_facts)
    return cloze, {s: [f for f in cloze.for_source(s) if all(u in f.answer for u in langs)] for s in langs}


@writes("lss")
def lss_for_run(run: Run, config: LSSConfig,
                load: LoadConfig | str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """LSS (and, with ``config.forcing``, language forcing) of a run directory; writes ``lss.csv``,
    ``lss_summary.json`` (and ``forcing.csv``, appending ``generations.jsonl``) and returns (rows, summary)."""
    factors = config.parsed_factors()
    detector = get_detector(config.detector) if config.forcing else None  # a bad detector fails before any work
    per_layer = config.layered(factors)
    neurons, stats = run.neurons(), run.stats()
    langs = lss_languages(neurons, config.langs, config.cloze)
    check_before_loading(run, factors)  # resid:L out of the recorded model's layers: before the model loads
    cloze, facts = cloze_facts(config.cloze, langs, config.cloze_path, config.max_facts)
    # --forcing-prompts N: N per scored language from the bank (a bank too small fails before the model loads);
    # None: run_forcing's 15 hand-written prompts
    prompts = (forcing_prompts(langs, config.forcing_prompts, config.forcing_bank)
               if detector is not None and config.forcing_prompts is not None else None)
    model = run.model(load)
    world, rows_per_rank = current(), []
    progress = config.progress and world.main
    rows = run_lss(model, neurons, stats, facts, langs, factors, per_layer=per_layer, batch_size=config.batch_size,
                   n_seeds=config.seeds, join=config.join, progress=progress, ranks_out=rows_per_rank)
    forcing_rows = None
    if detector is not None:
        # Deactivating factors (zero, p10) cannot make the model write t: forcing is measured for the amplifying
        # factors and the controls (the null line) only.
        forcing_rows, records = run_forcing(
            model, Steerer(model, neurons, stats), neurons.steerable(langs), [f for f in factors if f.amplifies or f.control],
            detector, prompts=prompts, max_new_tokens=config.forcing_tokens, batch_size=config.forcing_batch_size,
            progress=progress)
        write_forcing(run.path, forcing_rows)  # Run's writers: rank 0 writes, the others skip
        append_generations(run.path, records)
    summary = summarise(rows, factors, forcing=forcing_rows, damage_bound=config.damage_bound)
    summary.update(cloze=cloze.name, languages=langs, n_facts={s: len(v) for s, v in facts.items()}, join=config.join,
                   world_size=world.size, rows_per_rank=rows_per_rank, model=model.placement(),
                   stats_dtype=stats.manifest.get("dtype"))
    if detector is not None:  # which neutral prompts forcing continued
        summary["forcing_bank"] = "handwritten (15)" if prompts is None else config.forcing_bank
        summary["forcing_prompts"] = sum(map(len, (prompts or NEUTRAL_PROMPTS).values()))
    write_lss(run.path, rows, summary)  # every rank holds the same rows and summary; rank 0 writes them
    return rows, summary
