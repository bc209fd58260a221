"""The ``mlama-dod`` cloze: the paper's LSS data, ``inayarhmns/MLAMA-dod-185``, from the hub or a local copy.

Why keep it beside ``cldr``: it is what Rahmanisa et al. (2025) report LSS on, so it is the one to use for
numbers comparable with the paper. It is not on any package registry, so it needs the hub or a copy.

Schema. We could not open the hub repository from here; what follows is read from the authors' code
(``intervention_dod.py``, ``HF_calculate_answer``, and the command files that pass ``--dataset_name
inayarhmns/MLAMA-dod-185 --split test --langs en nl ... tr``), see §8.1 of the method notes:
    * one config per language, named by its ISO 639-1 code (the earlier ``MLAMA-dod`` used ``jp`` for
      Japanese, so ``jp`` is tried too), each with a ``test`` split; configs whose name starts with
      ``all`` are not languages and are never asked for;
    * 15 languages: en nl id ms vi ja zh fr pt ru et it ta th tr (no ht, qu, sw, jv, su);
    * per row: ``template`` (in the config's language, with ``[X]`` and ``[Y]``), ``sub_label``,
      ``obj_label``, ``predicate_id``, and parallel ``sub_<xx>``/``obj_<xx>`` for all 15 languages.
We read ``template``, ``sub_<lang>``/``obj_<lang>`` (falling back to ``sub_label``/``obj_label``) and
``predicate_id``; other columns are ignored.

Fact identity across configs: ``uuid`` if the data have it, else ``<predicate_id>:<sub_en>:<obj_en>`` (the
English columns are on every row), else the row number (assuming the configs list the facts in the same
order). A fact's answer in language ``t`` comes from config ``t``; if config ``t`` lacks that fact, from
the ``obj_<t>`` column of another config's row.

Prompts (pitfall P13 of the notes): the authors build ``template.replace("[X]", sub).replace(" [Y]", "")``,
which leaves a literal ``[Y]`` in templates without a space before it (ja, zh, th) and garbles templates
whose ``[Y]`` is not at the end. We instead cut the template at ``[Y]``: the prompt is everything before
it, right-stripped, with ``[X]`` filled in, and the answer is the bare object; the separator between them
is the prompt language's (:func:`lens_steer.languages.separator`), like every cloze. Text after ``[Y]`` (usually " ." or "。") is dropped, so a
template with ``[Y]`` in the middle becomes a shorter cloze that ends at the blank. Rows that cannot make
a cloze (no ``[Y]``, no ``[X]`` before it, or an empty subject or object) are skipped and counted in
``meta["skipped"]``.

Local copy (``path``), one file per config like the hub repository: ``<path>/<lang>.parquet`` or
``<path>/<lang>.jsonl`` (one JSON object per line, same columns), or the hub's own layout with the parquet
files under ``<path>/<lang>/`` (files whose path mentions ``test`` are preferred).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lens_steer.cloze import ClozeSet, Fact, check_supported
from lens_steer.errors import LensSteerError
from lens_steer.reader import Pattern, Row, find_files, load_hub, needs, read_files

HUB_DATASET = "inayarhmns/MLAMA-dod-185"
SPLIT = "test"

MLAMA_LANGUAGES: tuple[str, ...] = (
    "en", "nl", "id", "ms", "vi", "ja", "zh", "fr", "pt", "ru", "et", "it", "ta", "th", "tr",
)  # fmt: skip
"""The 15 languages of MLAMA-dod-185, in the paper's order."""

CONFIG_NAMES: dict[str, tuple[str, ...]] = {"ja": ("ja", "jp")}
"""Config (and column-suffix) names to try for a language; the earlier dataset called Japanese ``jp``."""

_NOT_IN_MLAMA = "not in mLAMA; use the cldr cloze for it"
_LOCAL_HINT = "pass --cloze-path to a local copy laid out as <dir>/<lang>.parquet or <dir>/<lang>.jsonl"

_MISSING = needs("template")
_LAYOUTS: tuple[Pattern, ...] = (
    "{name}.parquet",
    "{name}.jsonl",
    (f"{{name}}/**/*{SPLIT}*", f"{{name}}/**/*{SPLIT}*/**/*"),  # the hub's layout: files whose path mentions the split
    "{name}/**/*",  # ... else every file under <path>/<lang>/
)
"""The local layouts, most preferred first (see :func:`lens_steer.reader.find_files`)."""


def build_prompt(template: str, subject: str) -> tuple[str, bool] | None:
    """Turn an mLAMA template and a subject into a cloze prompt.

    Args:
        template: A template with ``[X]`` (subject) and ``[Y]`` (object).
        subject: The subject that replaces ``[X]``.

    Returns:
        ``(prompt, space)``: the text before ``[Y]``, right-stripped, with ``[X]`` filled in; and whether
        the template has whitespace right before ``[Y]`` (then the answer gets a leading space). ``None``
        when no cloze can be made: no ``[Y]``, or no ``[X]`` before it, or an empty subject.

    >>> build_prompt("[X] was born in [Y] .", "Dante")
    ('Dante was born in', True)
    >>> build_prompt("[X]の首都は[Y]です。", "日本")
    ('日本の首都は', False)
    """
    subject = subject.strip() if isinstance(subject, str) else ""
    if not isinstance(template, str) or "[Y]" not in template or not subject:
        return None
    before = template.split("[Y]", 1)[0]
    if "[X]" not in before:
        return None
    prompt = before.replace("[X]", subject).rstrip()
    if not prompt.strip():
        return None
    return prompt, before[-1:].isspace()


def _column(row: Row, prefix: str, lang: str, fallback: str | None = None) -> str:
    for name in CONFIG_NAMES.get(lang, (lang,)):
        value = row.get(f"{prefix}_{name}")
        if isinstance(value, str) and value.strip():
            return value.strip()
    value = row.get(fallback) if fallback else None
    return value.strip() if isinstance(value, str) else ""


def _fact_key(row: Row, index: int) -> str:
    uuid = row.get("uuid")
    if isinstance(uuid, str) and uuid:
        return uuid
    sub_en, obj_en = _column(row, "sub", "en"), _column(row, "obj", "en")
    predicate = row.get("predicate_id")
    if sub_en and obj_en and predicate:
        return f"{predicate}:{sub_en}:{obj_en}"
    return f"row:{index}"


def _rows(lang: str, path: str | None, where: str) -> list[Row]:
    """The rows of the language's config, from the hub or the local copy (one reader: :mod:`lens_steer.reader`)."""
    names = CONFIG_NAMES.get(lang, (lang,))
    if path is None:
        rows = load_hub(HUB_DATASET, names, SPLIT, missing=_MISSING, user="the mlama-dod cloze", hint=_LOCAL_HINT).rows
    else:
        files = find_files(Path(path), names, _LAYOUTS, wanted=f"{lang}.parquet or {lang}.jsonl", hint=_LOCAL_HINT)
        rows = read_files(files, _MISSING, "MLAMA-dod")
    if not rows:
        raise LensSteerError(f"{where} has no rows for {lang}; check the copy, or {_LOCAL_HINT}")
    return rows


def load(langs: Sequence[str], path: str | None) -> ClozeSet:
    """The MLAMA-dod-185 facts for some languages.

    Args:
        langs: ISO 639-1 codes, already checked against the registry.
        path: A local copy (see the module docstring); ``None`` loads from the hub.

    Raises:
        LensSteerError: a language outside the 15, an unreachable hub, or an unusable local copy.

    >>> cloze = load(["en", "ja"], "mlama-copy")  # doctest: +SKIP
    >>> fact = cloze.for_source("ja")[0]  # doctest: +SKIP
    >>> fact.prompt["ja"] + fact.continuation("ja", "ja")  # doctest: +SKIP
    'ダンテはフィレンツェ'
    """
    check_supported("mlama-dod", langs, MLAMA_LANGUAGES, {lang: _NOT_IN_MLAMA for lang in langs})
    where = str(Path(path).resolve()) if path is not None else f"hf:{HUB_DATASET}"
    order: dict[str, str] = {}  # key -> relation, in first-seen order
    prompts: dict[str, dict[str, str]] = {}
    answers: dict[str, dict[str, str]] = {}
    borrowed: dict[str, dict[str, str]] = {}
    skipped: dict[str, int] = {}
    for lang in langs:
        rows = _rows(lang, path, where)
        skipped[lang] = 0
        for index, row in enumerate(rows):
            key = _fact_key(row, index)
            relation = str(row.get("predicate_id") or "mlama")
            built = build_prompt(row["template"], _column(row, "sub", lang, "sub_label"))
            obj = _column(row, "obj", lang, "obj_label")
            for other in langs:
                value = _column(row, "obj", other)
                if value:
                    borrowed.setdefault(key, {}).setdefault(other, value)
            if built is None or not obj or key in prompts.get(lang, {}):
                skipped[lang] += 1
                continue
            order.setdefault(key, relation)
            prompts.setdefault(lang, {})[key] = built[0]
            answers.setdefault(key, {})[lang] = obj
    facts: list[Fact] = []
    for key, relation in order.items():
        answer = dict(answers.get(key, {}))
        for other, value in borrowed.get(key, {}).items():
            answer.setdefault(other, value)
        prompt = {lang: prompts[lang][key] for lang in langs if key in prompts.get(lang, {})}
        kept = {lang: answer[lang] for lang in langs if lang in answer}
        facts.append(Fact(id=key, relation=relation, prompt=prompt, answer=kept))
    meta = {
        "name": "mlama-dod",
        "source": f"local:{where}" if path is not None else where,
        "version": None,
        "license": None,  # not stated in the authors' code; see the dataset card
        "path": where if path is not None else None,
        "split": SPLIT,
        "skipped": skipped,
    }
    return ClozeSet(name="mlama-dod", languages=list(langs), facts=facts, meta=meta)
