"""The language axis of every figure: languages ordered so that related ones sit side by side, and labelled with
their names in the hover text."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES

# Languages grouped by family, then script, so that related languages sit next to each other in matrices
# (Indonesian beside Malay, the Romance languages together, the CJK block at the end).
FAMILY_ORDER: tuple[str, ...] = (
    "en", "nl",                    # Germanic
    "fr", "it", "pt",              # Romance
    "ht",                          # French-based creole
    "ru",                          # Slavic (Cyrillic)
    "et",                          # Uralic
    "tr",                          # Turkic
    "id", "ms", "jv", "su",        # Austronesian
    "sw",                          # Bantu
    "qu",                          # Quechuan
    "ta",                          # Dravidian (Tamil script)
    "th",                          # Tai (Thai script)
    "vi",                          # Austroasiatic (Latin with diacritics)
    "ja", "zh",                    # Japanese, Sinitic (CJK)
)
FAMILY: dict[str, str] = {
    "en": "Germanic", "nl": "Germanic", "fr": "Romance", "it": "Romance", "pt": "Romance", "ht": "Creole",
    "ru": "Slavic", "et": "Uralic", "tr": "Turkic", "id": "Austronesian", "ms": "Austronesian",
    "jv": "Austronesian", "su": "Austronesian", "sw": "Bantu", "qu": "Quechuan", "ta": "Dravidian", "th": "Tai",
    "vi": "Austroasiatic", "ja": "Japonic", "zh": "Sinitic",
}


def language_label(code: str) -> str:
    """``"fr"`` -> ``"fr French"`` (the hover text of every language axis)."""
    lang = LANGUAGES.get(code)
    return f"{code} {lang.name}" if lang else code


def order_languages(codes: Sequence[str], order: str = "family",
                    similarity: np.ndarray | None = None) -> list[str]:
    """Order languages for a matrix axis.

    ``order`` is ``"run"`` (as given), ``"family"`` (:data:`FAMILY_ORDER`; unknown codes last, in run order) or
    ``"cluster"`` (greedy nearest-neighbour chain on ``similarity``, a K x K matrix in ``codes`` order, starting
    from the language with the highest total similarity).

    >>> order_languages(["zh", "en", "fr", "ms", "id"])
    ['en', 'fr', 'id', 'ms', 'zh']
    """
    codes = list(codes)
    if order == "run":
        return codes
    if order == "family":
        rank = {c: i for i, c in enumerate(FAMILY_ORDER)}
        return sorted(codes, key=lambda c: (rank.get(c, len(rank)), codes.index(c)))
    if order == "cluster":
        if similarity is None or similarity.shape != (len(codes), len(codes)):
            raise LensSteerError("order='cluster' needs a K x K similarity matrix in the languages' order")
        sim = np.nan_to_num(np.asarray(similarity, dtype=float))
        np.fill_diagonal(sim, -np.inf)
        left = set(range(len(codes)))
        cur = int(np.argmax(np.where(np.isfinite(sim), sim, 0).sum(axis=1))) if codes else 0
        chain = []
        while left:
            chain.append(cur)
            left.discard(cur)
            if left:
                cur = max(left, key=lambda j: (sim[cur, j], -j))
        return [codes[i] for i in chain]
    raise LensSteerError(f"unknown language order {order!r}; use run, family or cluster")
