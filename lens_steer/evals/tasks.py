"""How each downstream task turns its items into scored (context, continuation) pairs or translation prompts.

Zero-shot log-likelihood in the lm-evaluation-harness style, without the reference code's pitfalls:

* **XCOPA**: ``premise`` without its final punctuation mark + the language's connective ("because" for a cause
  question, "therefore" for an effect question), then each choice with its first letter lower-cased; the likelier
  choice (summed log-probability) is the answer. The reference cuts the premise's last character unconditionally,
  which eats a real letter in Thai (no final full stop); we cut only a punctuation mark.
* **XWinograd**: partial scoring. The sentence up to the blank, with each option filled in, is the context; the
  shared rest of the sentence is the continuation, scored under each context.
* **Include**: the question and its four options as ``A) ...`` to ``D) ...`` (the reference's format), then
  ``Answer:``; the answer is the letter whose token is likelier at that position.
* **Translation**: the paper's targeted prompt ``Translate from English to {Lang}.\\n\\nEnglish: {src}\\n{Lang}:``
  or the reference's untargeted one (:data:`MT_PROMPTS`); the greedy output is cut by
  :func:`lens_steer.generation.cut_generation`.

Joins (``join``, :func:`lens_steer.languages.separator`): ``auto`` puts one space between context and
continuation iff the context's language writes spaces (none before an XWinograd rest that opens with punctuation,
``_'s``); ``reference`` reproduces the authors' code
(lm-eval-harness's ``context + " " + continuation``): XCOPA always ``" " + choice`` (and ``" " + connective``),
XWinograd ``" " + rest.strip()``, and Include the letter with *no* space after ``Answer:`` (the reference reads the
first token of ``"A"``, P15), where ``auto`` scores `` A``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from lens_steer.errors import LensSteerError
from lens_steer.languages import get_language, separator

# lm-evaluation-harness's XCOPA connectives (cause, effect) per language.
XCOPA_CONNECTIVES: dict[str, tuple[str, str]] = {
    "et": ("sest", "seetõttu"), "ht": ("poukisa", "donk sa"), "it": ("perché", "quindi"), "id": ("karena", "maka"),
    "qu": ("imataq", "chaymi"), "sw": ("kwa sababu", "kwa hiyo"), "zh": ("因为", "所以"),
    "ta": ("காரணமாக", "எனவே"), "th": ("เพราะ", "ดังนั้น"), "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"), "en": ("because", "therefore"),
}
MT_PROMPTS: dict[str, str] = {
    # The paper's prompt (intervention_tasks.py with --targeted): the target language is named twice.
    "targeted": "Translate from English to {lang}.\n\nEnglish: {src}\n{lang}:",
    # The reference's untargeted prompt (intervention_tasks.py, HEAD, line 814), verbatim, trailing space included:
    # it tests whether steering alone picks the output language. The trailing space becomes a token of its own
    # (BPE "Ġ", SentencePiece "▁"), so the first word must come as a rarer no-leading-space token; leading
    # whitespace of the output is skipped by the cut anyway.
    "untargeted": "Translate from English into the target language.\n\nEnglish: {src}\nTarget language: ",
}
"""Translation prompts by ``--prompt`` name."""
MT_TEMPLATE = MT_PROMPTS["targeted"]


@dataclass(frozen=True)
class Choice:
    """One multiple-choice item as scored pairs: ``contexts[i] + continuations[i]`` for choice i."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int


def strip_final_punctuation(text: str) -> str:
    """Drop one trailing punctuation mark (any Unicode ``P*`` category), never a letter.

    >>> strip_final_punctuation("The man broke his toe."), strip_final_punctuation("ฉันหิว")
    ('The man broke his toe', 'ฉันหิว')
    """
    text = text.rstrip()
    if text and unicodedata.category(text[-1]).startswith("P"):
        return text[:-1].rstrip()
    return text


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def xcopa_choice(lang: str, premise: str, choice1: str, choice2: str, question: str, label: int,
                 join: str = "auto") -> Choice:
    """An XCOPA item as two continuations of one context; ``join`` spaces the connective and the choice.

    >>> c = xcopa_choice("it", "L'uomo si è rotto l'alluce.", "Ha lasciato cadere un martello.", "Ha camminato.", "cause", 0)
    >>> c.contexts[0], c.continuations[0]
    ("L'uomo si è rotto l'alluce perché", ' ha lasciato cadere un martello.')
    >>> xcopa_choice("zh", "我饿了。", "我吃饭。", "我睡觉。", "effect", 0, join="reference").continuations[0]
    ' 我吃饭。'
    """
    if question not in ("cause", "effect"):
        raise ValueError(f"XCOPA question must be cause or effect, not {question!r}")
    cause, effect = XCOPA_CONNECTIVES.get(lang, XCOPA_CONNECTIVES["en"])
    connective = cause if question == "cause" else effect
    sep = separator(lang, join)
    context = strip_final_punctuation(premise) + sep + connective
    conts = tuple(sep + _lower_first(c.strip()) for c in (choice1, choice2))
    return Choice((context, context), conts, int(label))


def xwinograd_choice(lang: str, sentence: str, option1: str, option2: str, answer: int, join: str = "auto") -> Choice:
    """Partial scoring: the sentence up to the blank with each option is the context, the shared rest is scored.

    >>> c = xwinograd_choice("en", "The trophy did not fit because _ was too big.", "the trophy", "the case", 1)
    >>> c.contexts, c.continuations
    (('The trophy did not fit because the trophy', 'The trophy did not fit because the case'), (' was too big.', ' was too big.'))
    >>> xwinograd_choice("ja", "猫は箱に入れなかった。_が小さすぎた。", "猫", "箱", 2, join="reference").continuations[0]
    ' が小さすぎた。'
    """
    sep = separator(lang, join)
    idx = sentence.index("_")
    rest = sentence[idx + 1 :].strip()
    contexts = tuple(sentence[:idx] + opt for opt in (option1, option2))
    if not rest:
        cont = "."  # a blank at the very end: score the full stop so both options get a continuation
    elif join == "auto" and unicodedata.category(rest[0]).startswith("P"):
        cont = rest  # "_'s", "_," : punctuation attaches to the filled-in option, as the sentence writes it
    else:
        cont = sep + rest
    return Choice(contexts, (cont, cont), int(answer) - 1)


def include_choice(question: str, options: tuple[str, str, str, str], answer: int, join: str = "auto") -> Choice:
    """The question with the reference's lettered options; the four letters are scored after ``Answer:``.

    ``Answer:`` is English whatever the question's language, so ``auto`` joins the letter as English does
    (`` A``, every letter with the same space: like with like); ``reference`` scores ``A`` with no space, the token
    the reference reads (P15).

    >>> c = include_choice("2 + 2 = ?", ("3", "4", "5", "6"), 1)
    >>> c.contexts[0].splitlines()[1:], c.continuations
    (['A) 3', 'B) 4', 'C) 5', 'D) 6', 'Answer:'], (' A', ' B', ' C', ' D'))
    >>> include_choice("2 + 2 = ?", ("3", "4", "5", "6"), 1, join="reference").continuations
    ('A', 'B', 'C', 'D')
    """
    sep = separator("en", join)
    if join == "reference":
        sep = ""  # the reference: choice_ids = tokenizer.encode("A")[0], read right after "Answer:"
    body = question.strip() + "\n" + "\n".join(f"{letter}) {opt.strip()}" for letter, opt in zip("ABCD", options))
    context = body + "\nAnswer:"
    return Choice((context,) * 4, tuple(sep + letter for letter in "ABCD"), int(answer))


def mt_prompt(lang: str, src: str, prompt: str = "targeted") -> str:
    """A translation prompt of :data:`MT_PROMPTS` (``targeted``: the paper's, naming the language).

    >>> mt_prompt("fr", "Hello.")
    'Translate from English to French.\\n\\nEnglish: Hello.\\nFrench:'
    >>> mt_prompt("fr", "Hello.", "untargeted")
    'Translate from English into the target language.\\n\\nEnglish: Hello.\\nTarget language: '
    """
    if prompt not in MT_PROMPTS:
        raise LensSteerError(f"unknown translation prompt {prompt!r}; use {' or '.join(MT_PROMPTS)}")
    return MT_PROMPTS[prompt].format(lang=get_language(lang).name, src=src.strip())


def max_new_tokens_for(lang: str, src_tokens: int) -> int:
    """Enough new tokens for the translation: non-Latin scripts take several tokens per word, so the paper's fixed
    50 truncates Tamil and Thai. Three times the English source length for those, twice for Latin, at least 32."""
    factor = 2 if get_language(lang).script == "Latn" else 3
    return max(32, factor * src_tokens + 8)
