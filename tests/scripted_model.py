"""A stand-in model for greedy generation whose outputs are written in advance (e.g. a newline first).

A random tiny model cannot be made to open its answer with a newline on demand; this one can. It answers the
forward calls :func:`lens_steer.generation.greedy_generate` makes (a prompt pass, then one token per step on the
"cache") with logits that put all mass on the next token of the row's script, then on EOS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import SimpleNamespace

import torch


class ScriptedModel(torch.nn.Module):
    """Greedy generation follows ``scripts``: the first key found in a row's prompt picks its pieces of text.

    Each piece is tokenised on its own, so ``"\\n"`` stays one token of its own (the case under test).
    ``prompts`` collects every prompt seen, as decoded text.
    """

    def __init__(self, tokenizer, scripts: dict[str, Sequence[str]]):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = SimpleNamespace(default_prepend_bos=False)
        self._device_anchor = torch.nn.Parameter(torch.zeros(1))
        eos = tokenizer.eos_token_id
        self.scripts = {key: [i for piece in pieces for i in tokenizer(piece, add_special_tokens=False)["input_ids"]]
                        + [eos] for key, pieces in scripts.items()}
        self.prompts: list[str] = []
        self._rows: list[list[int]] = []
        self._step = 0

    def forward(self, ids, attention_mask=None, past_key_values=None, return_type=None, logits_to_keep=None):
        if past_key_values is None:  # the prompt pass: pick each row's script
            texts = [self.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
                     for row, m in zip(ids.cpu(), attention_mask.cpu())]
            self.prompts += texts
            self._rows = [next(s for k, s in self.scripts.items() if k in t) for t in texts]
            self._step = 0
        else:
            self._step += 1
        logits = torch.full((ids.shape[0], 1, len(self.tokenizer)), -1e4)
        for r, script in enumerate(self._rows):
            logits[r, 0, script[min(self._step, len(script) - 1)]] = 0.0
        return logits, "cache"


class NoSteerer:
    """A steerer whose interventions do nothing (the scripted model has no neurons)."""

    def apply(self, rows, prompt_end=None):
        return contextlib.nullcontext()

    def prepare(self, prompts, interventions):
        from lens_steer.instructions import instructed
        from lens_steer.steer import Prepared

        return Prepared(instructed(prompts, interventions), interventions)
