"""Language identification of generated text: did steering switch the output language?

Why a small interface: the steering evaluation only needs "which of our languages is this text in, if
any", and detectors differ in coverage and licence. :class:`Detector` is that one question; the default,
:class:`Cld2Detector`, wraps ``pycld2`` (Apache-2.0, model compiled in, offline, ~90k sentences/s), which
was the most accurate of six offline detectors on UDHR sentences of the paper's 18 languages (96.7%) and
the only one that knows all of them, Haitian Creole and Quechua included (see the offline-material notes).
Another detector plugs in by having a ``name`` and a ``detect`` method and being added to
:data:`DETECTORS`.

Indonesian and Malay: every detector confuses them (pycld2 calls 15 of 40 Indonesian UDHR sentences
Malay). :func:`matches` therefore has a ``lenient`` mode that counts the two as one language; report
which mode a number used.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES


@runtime_checkable
class Detector(Protocol):
    """Anything that names the language of a text.

    Attributes:
        name: Short name, recorded in run manifests (``"cld2"``).
    """

    name: str

    def detect(self, text: str) -> str | None:
        """The ISO 639-1 code (one of :data:`lens_steer.languages.LANGUAGES`) of ``text``, or ``None`` when
        the text is empty, undetected, or in a language outside the registry."""
        ...


# pycld2 codes that differ from ours: traditional Chinese is still Chinese to us; "jw" is CLD2's (old ISO)
# code for Javanese. Codes outside the registry ("iw", "es", ...) give None.
_CLD2_CODES: dict[str, str] = {"jw": "jv", "zh-Hant": "zh"}


def _cld2_clean(text: str) -> str:
    """Drop what pycld2 rejects as invalid UTF-8: lone surrogates and C0/C1 control characters.

    Why not give up on them: model output sometimes holds a stray control byte, and one of those would
    otherwise make a whole generation "undetected".
    """
    return "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cs"))


class Cld2Detector:
    """The default detector: Google's CLD2 through ``pycld2``, best-effort mode.

    ``bestEffort=True`` makes CLD2 answer for short texts too (it would otherwise say "unknown" for
    most one-line generations); its ``isReliable`` flag is therefore not used.

    >>> Cld2Detector().detect("Le chat dort sur le canapé depuis ce matin.")
    'fr'
    >>> Cld2Detector().detect("") is None
    True
    """

    name = "cld2"

    def __init__(self) -> None:
        try:
            import pycld2  # deferred: a compiled extension; missing, it is refused in one line here
        except ImportError:
            raise LensSteerError("language identification needs the `pycld2` package; pip install pycld2") from None
        self._cld2 = pycld2

    def detect(self, text: str) -> str | None:
        """The registry code of ``text``'s language, or ``None`` (empty, unknown, not ours, or unreadable)."""
        if not isinstance(text, str):
            return None
        text = _cld2_clean(text)
        if not text.strip():
            return None
        try:
            _, _, details = self._cld2.detect(text, bestEffort=True)
        except (self._cld2.error, UnicodeError, ValueError):
            return None
        code = details[0][1] if details else "un"
        code = _CLD2_CODES.get(code, code)
        return code if code in LANGUAGES else None


DETECTORS: dict[str, Callable[[], Detector]] = {"cld2": Cld2Detector}
"""Detector name -> factory. Add an entry to plug another detector in."""


def get_detector(name: str = "cld2") -> Detector:
    """Make a detector by name.

    Args:
        name: One of :data:`DETECTORS` (``"cld2"``).

    Raises:
        LensSteerError: an unknown name, or the detector's package is missing.

    >>> get_detector().name
    'cld2'
    """
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise LensSteerError(f"unknown language detector {name!r}; use one of {', '.join(DETECTORS)}") from None
    return factory()


LENIENT_GROUPS: tuple[frozenset[str], ...] = (frozenset({"id", "ms"}),)
"""Languages that :func:`matches` counts as one in lenient mode: Indonesian and Malay."""


def matches(detected: str | None, target: str, *, lenient: bool) -> bool:
    """Whether a detected language counts as the target.

    Args:
        detected: What a detector said; ``None`` (undetected) is always a miss.
        target: The language the text should be in.
        lenient: Count Indonesian and Malay as one language (every detector confuses them).

    >>> matches("ms", "id", lenient=True), matches("ms", "id", lenient=False), matches(None, "en", lenient=True)
    (True, False, False)
    """
    if detected is None:
        return False
    if detected == target:
        return True
    return lenient and any(detected in group and target in group for group in LENIENT_GROUPS)
