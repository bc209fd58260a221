"""The one error class of lens_steer.

Every problem a user can fix (a bad language code, a missing model package, stats recorded on another
model...) raises :class:`LensSteerError` with a message that says how to fix it. The CLI turns it into one
line on stderr and exit code 2; library users can catch it like any exception.
"""

from __future__ import annotations


class LensSteerError(Exception):
    """A user-fixable problem. The message is one line that says what to do."""


def check_choice(what: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise the one-line error that lists them.

    >>> check_choice("flores split", "dev", ("dev", "devtest"))
    'dev'
    """
    if value not in choices:
        raise LensSteerError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
    return value


def check_neuron(layer: int, neuron: int | None, n_layers: int, d_mlp: int, *, flags: bool = False) -> None:
    """Raise the one-line error for a layer (or neuron) outside the model; ``flags`` names them as the CLI options
    ``--layer`` / ``--neuron``. ``neuron`` None checks the layer alone.

    >>> check_neuron(3, 7, n_layers=4, d_mlp=8)
    >>> check_neuron(1, 8, n_layers=4, d_mlp=8, flags=True)
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: --neuron 8 is outside 0..7
    """
    dash = "--" if flags else ""
    if not 0 <= layer < n_layers:
        raise LensSteerError(f"{dash}layer {layer} is outside 0..{n_layers - 1}")
    if neuron is not None and not 0 <= neuron < d_mlp:
        raise LensSteerError(f"{dash}neuron {neuron} is outside 0..{d_mlp - 1}")
