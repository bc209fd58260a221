"""How each downstream task turns its items into scored (context, continuation) pairs or translation prompts.

Zero-shot log-likelihood in the lm-evaluation-harness style, without the reference code's pitfalls:

* **XCOPA**: ``premise`` without its final punctuation mark + the language's connective ("because" for a cause
  question, "therefore" for an effect question), then each choice with its first letter lower-cased; the likelier
  choice (summed log-probability) is the answer. The reference cuts the premise's last character unconditionally,
  which eats a real letter in Thai (no final full stop); we cut only a punctuation mark.
* **XWinograd**: partial scoring. The sentence up to the blank, with each option filled in, is the context; the
  shared rest of the sentence is the continuation, scored under each context.
* **Include**: the question and its four options (A-D), then ``Answer:``; the answer is the letter whose token is
  likelier at that position. Every letter is scored with the same leading space (`` A``), so letters that the
  tokenizer spells with and without a space are compared like with like.
* **Translation**: the paper's prompt ``Translate from English to {Lang}.\\n\\nEnglish: {src}\\n{Lang}:``; the greedy
  output is cut at its first newline.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from lens_steer.languages import get_language

# lm-evaluation-harness's XCOPA connectives (cause, effect) per language.
XCOPA_CONNECTIVES: dict[str, tuple[str, str]] = {
    "et": ("sest", "seetõttu"), "ht": ("poukisa", "donk sa"), "it": ("perché", "quindi"), "id": ("karena", "maka"),
    "qu": ("imataq", "chaymi"), "sw": ("kwa sababu", "kwa hiyo"), "zh": ("因为", "所以"),
    "ta": ("காரணமாக", "எனவே"), "th": ("เพราะ", "ดังนั้น"), "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"), "en": ("because", "therefore"),
}
# Languages written without spaces between words: no space between the connective and the choice.
NO_SPACE_SCRIPTS = ("Hans", "Jpan", "Thai")

MT_TEMPLATE = "Translate from English to {lang}.\n\nEnglish: {src}\n{lang}:"


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


def xcopa_choice(lang: str, premise: str, choice1: str, choice2: str, question: str, label: int) -> Choice:
    """An XCOPA item as two continuations of one context.

    >>> c = xcopa_choice("it", "L'uomo si è rotto l'alluce.", "Ha lasciato cadere un martello.", "Ha camminato.", "cause", 0)
    >>> c.contexts[0], c.continuations[0]
    ("L'uomo si è rotto l'alluce perché", ' ha lasciato cadere un martello.')
    """
    if question not in ("cause", "effect"):
        raise ValueError(f"XCOPA question must be cause or effect, not {question!r}")
    cause, effect = XCOPA_CONNECTIVES.get(lang, XCOPA_CONNECTIVES["en"])
    connective = cause if question == "cause" else effect
    spaced = get_language(lang).script not in NO_SPACE_SCRIPTS
    sep = " " if spaced else ""
    context = strip_final_punctuation(premise) + sep + connective
    conts = tuple(sep + _lower_first(c.strip()) for c in (choice1, choice2))
    return Choice((context, context), conts, int(label))


def xwinograd_choice(sentence: str, option1: str, option2: str, answer: int) -> Choice:
    """Partial scoring: the sentence up to the blank with each option is the context, the shared rest is scored.

    >>> c = xwinograd_choice("The trophy did not fit in the case because _ was too big.", "the trophy", "the case", 1)
    >>> c.contexts, c.continuations
    (('The trophy did not fit in the case because the trophy', 'The trophy did not fit in the case because the case'), (' was too big.', ' was too big.'))
    """
    idx = sentence.index("_")
    rest = sentence[idx + 1 :]
    # The continuation keeps the original spacing after the blank (" was...", or "は..." for Japanese).
    contexts = tuple(sentence[:idx] + opt for opt in (option1, option2))
    cont = rest if rest else "."
    return Choice(contexts, (cont, cont), int(answer) - 1)


def include_choice(question: str, options: tuple[str, str, str, str], answer: int) -> Choice:
    """The question with lettered options; the four letters are scored after ``Answer:``.

    >>> include_choice("2 + 2 = ?", ("3", "4", "5", "6"), 1).continuations
    (' A', ' B', ' C', ' D')
    """
    body = question.strip() + "\n" + "\n".join(f"{letter}. {opt.strip()}" for letter, opt in zip("ABCD", options))
    context = body + "\nAnswer:"
    return Choice((context,) * 4, (" A", " B", " C", " D"), int(answer))


def mt_prompt(lang: str, src: str) -> str:
    """The paper's targeted translation prompt.

    >>> mt_prompt("fr", "Hello.")
    'Translate from English to French.\\n\\nEnglish: Hello.\\nFrench:'
    """
    return MT_TEMPLATE.format(lang=get_language(lang).name, src=src.strip())


def cut_translation(text: str) -> str:
    """The translation proper: the output up to its first newline, stripped.

    >>> cut_translation(" Bonjour.\\nEnglish: next")
    'Bonjour.'
    """
    return text.lstrip(" ").split("\n", 1)[0].strip()


def max_new_tokens_for(lang: str, src_tokens: int) -> int:
    """Enough new tokens for the translation: non-Latin scripts take several tokens per word, so the paper's fixed
    50 truncates Tamil and Thai. Three times the English source length for those, twice for Latin, at least 32."""
    factor = 2 if get_language(lang).script == "Latn" else 3
    return max(32, factor * src_tokens + 8)
