"""Prompt instructions: ``prompt:en`` / ``prompt:native`` (:class:`~lens_steer.factors.PromptInstruction`) touch no
activation; the prompt asks for the target language instead, on a line before it: an English instruction
(``Answer in French.``) or the target's own name in its own language from CLDR (``Français:``). Their control,
``control:prompt:en``, is the same instruction naming another run language, drawn per seed
(:func:`control_language`): the form of the intervention without its information about the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from babel import Locale

from lens_steer.errors import LensSteerError
from lens_steer.factors import Intervention, PromptInstruction
from lens_steer.languages import get_language


def instruction(target: str, which: str) -> str:
    r"""The line ``prompt:en`` / ``prompt:native`` puts before a prompt: an English instruction naming the target
    language, or the language's own name (CLDR, via babel) followed by a colon.

    >>> instruction("fr", "en"), instruction("fr", "native")
    ('Answer in French.\n', 'Français:\n')
    """
    if which == "en":
        return f"Answer in {get_language(target).name}.\n"
    try:
        name = Locale.parse(target).get_display_name(target) or get_language(target).name
    except Exception:  # noqa: BLE001 - babel without this locale: the English name still names it
        name = get_language(target).name
    return f"{name[:1].upper()}{name[1:]}:\n"


def control_language(target: str, seed: int, languages: Sequence[str]) -> str:
    """The language a ``control:prompt:`` instruction names instead of ``target``: one of the other ``languages``,
    drawn by ``seed`` (and the target), the same every run.

    >>> control_language("fr", 0, ["en", "fr", "ja"]) in ("en", "ja")
    True
    """
    others = [c for c in languages if c != target]
    if not others:
        raise LensSteerError("control:prompt: needs a run of at least two languages (another language to name)")
    g = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, target)))
    return others[int(torch.randint(len(others), (1,), generator=g))]


def instructed(prompts: Sequence[str], interventions: Sequence[Intervention | None] | None,
               languages: Sequence[str] | None = None) -> list[str]:
    r"""The prompts as the model sees them: a ``prompt:`` intervention puts its instruction first; others unchanged.
    A ``control:prompt:`` one names :func:`control_language` of the run's ``languages`` instead of the target.
    Scoring and generation ask :meth:`lens_steer.steer.Steerer.prepare`, which passes its neuron set's languages.

    >>> instructed(["Paris is in", "x"], [Intervention("fr", "prompt:en"), None])
    ['Answer in French.\nParis is in', 'x']
    """
    if interventions is None:
        return list(prompts)
    out = []
    for p, iv in zip(prompts, interventions):
        factor = iv.parsed_factor() if iv is not None else None
        if not isinstance(factor, PromptInstruction):
            out.append(p)
            continue
        lang = iv.target
        if factor.control:
            if languages is None:
                raise LensSteerError("control:prompt: needs the run's languages (score or generate with a steerer)")
            lang = control_language(iv.target, iv.seed, languages)
        out.append(instruction(lang, factor.form) + p)
    return out

