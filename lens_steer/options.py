"""How a config field declares its command-line option, so that each option is written once, on its field.

A config dataclass (:mod:`lens_steer.configs`, :class:`lens_steer.models.LoadConfig`) declares an option as
``seeds: int = option(3, type=positive_int, help="...")``: the field's name is the flag (``--seeds``), its default
the option's default, and :class:`Option` holds the rest. :func:`lens_steer.cli_parser.add_config_options` turns the
fields into argparse options, :func:`lens_steer.cli.config_from_args` turns the parsed options back into the config.
A field declared with plain ``dataclasses.field`` (or none) is a library setting with no flag.

A leaf without torch: ``lens-steer --help`` imports it, and so do the torch-free config modules.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Option:
    """What a flag needs besides its field's name and default (argparse's meaning for each).

    ``flag`` (None: ``--`` + the field name with dashes) names the flag where it differs from the field
    (``held_out`` is ``--held-out-facts``); a bool field whose default is True is an inverse flag
    (``progress`` is ``--quiet``), so it needs one.
    """

    help: str
    flag: str | None = None
    type: Callable[[str], Any] | None = None  # None: the text as typed
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    nargs: str | None = None
    const: Any = None

    def flag_for(self, name: str) -> str:
        """The flag of field ``name``: ``max_facts`` -> ``--max-facts`` unless :attr:`flag` says otherwise."""
        return self.flag or "--" + name.replace("_", "-")


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
           type: Callable[[str], Any] | None = None, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, nargs: str | None = None, const: Any = None) -> Any:
    """A dataclass field that is also a command-line option; without ``default``, a required one (``--to``). The
    keywords are argparse's, by argparse's names.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo:
    ...     seeds: int = option(3, type=positive_int, help="random draws")
    >>> [(f.name, o.flag_for(f.name), f.default) for f, o in cli_fields(Demo)]
    [('seeds', '--seeds', 3)]
    """
    spec = Option(help, flag, type, choices, metavar, nargs, const)
    return dataclasses.field(default=default, metadata={"option": spec})


def cli_fields(config: Any) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of a config class (or instance) that are command-line options, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(config) if "option" in f.metadata]


def positive_int(text: str) -> int:
    """An option's value as an integer >= 1, else argparse's usage error (before any work)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def rate(text: str) -> float:
    """An option's value as a number in (0, 1], else argparse's usage error (before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value
