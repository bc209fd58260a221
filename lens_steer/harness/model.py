"""The lm-evaluation-harness model ``lens_steer``: the harness's own HF model (``HFLM``) with one lens_steer
intervention applied to every request kind (log-likelihood, rolling log-likelihood, generation), batched, its hooks
removed after every call (also after an exception).

Importing this module registers the name (``lm_eval --model lens_steer`` after the import, or
``python -m lens_steer.harness``, which imports it and runs the harness's command line)::

    python -m lens_steer.harness --model lens_steer --model_args run=runs/demo,target=fr,factor=p_max \\
        --tasks xcopa_id --device cpu

Model args: ``run`` (a run directory: its neurons, statistics and, unless ``pretrained`` names another copy, its
model), ``target`` and ``factor`` (the factor grammar of ``lens-steer lss --help``; without ``factor`` the model is
the plain HF model, exactly), ``layers`` (``all``, ``5`` or ``3-7``; a list as ``1;4;9``), ``positions`` (``all``,
``prompt``, ``generated``, ``last:K``), ``seed`` (the draw of a ``control:`` factor); every other argument is
``HFLM``'s (``dtype`` defaults to the run's recorded dtype).

The harness calls the HF model directly, so the interventions act on its modules
(:meth:`lens_steer.steer.Steerer.apply_hf`): the same affine maps as the bridge's hooks, at the same points.
Its log-likelihood batches are right-padded and carry no attention mask; for test-time factors (``testmax``,
``pQ``) and position rules the real length of each row and where its continuation starts are looked up from the
requests of the batch (:meth:`LensSteerLM._loglikelihood_tokens`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from lens_steer.errors import LensSteerError
from lens_steer.factors import Intervention, PromptInstruction, parse_factor, parse_layers
from lens_steer.models.embedded import EMBEDDED_MODEL
from lens_steer.models.hf_points import hf_points
from lens_steer.run import Run
from lens_steer.steer import Steerer


def run_pretrained(run: Run) -> str:
    """What ``pretrained=`` the run's model is for the harness: its local directory or hub id (the embedded model:
    its converted HF directory in the cache)."""
    spec = str(run.stats().manifest.get("model", {}).get("model", ""))
    if spec == EMBEDDED_MODEL:
        from lens_steer.models.embedded import ensure_embedded_model  # deferred: converts once when missing

        return str(ensure_embedded_model())
    return spec


def make_intervention(run_or_neurons: Any, target: str | None, factor: str | None, layers: Any = "all",
                      positions: str = "all", seed: int = 0) -> Intervention | None:
    """The intervention of the model args, checked: None without a factor; a target with neurons in the run."""
    if factor is None or str(factor).strip() in ("", "none"):
        return None
    parsed = parse_factor(str(factor))
    if isinstance(parsed, PromptInstruction):
        raise LensSteerError(f"{parsed.text} changes the prompt, and the harness builds its own prompts; use a factor"
                             " on neurons or the residual stream")
    if not target:
        raise LensSteerError(f"factor {parsed.text} needs target=LANG, the language whose neurons it changes")
    neurons = run_or_neurons.neurons() if isinstance(run_or_neurons, Run) else run_or_neurons
    if target not in neurons.languages:
        raise LensSteerError(f"target {target!r} is not a language of the run; it has {', '.join(neurons.languages)}")
    spec = parse_layers(str(layers).replace(";", ","))
    return Intervention(str(target), parsed, layers=spec if spec == "all" else tuple(spec), positions=str(positions),
                        seed=int(seed))


@register_model("lens_steer")
class LensSteerLM(HFLM):
    """``HFLM`` under a lens_steer intervention (module docstring). ``intervention`` may be changed between
    evaluations (the cell runner does, on one loaded model); None is the plain model."""

    def __init__(self, run: str | Path, pretrained: Any = None, target: str | None = None, factor: str | None = None,
                 layers: Any = "all", positions: str = "all", seed: int = 0, **kwargs: Any):
        self.run = Run(run)
        neurons, stats = self.run.neurons(), self.run.stats()
        intervention = make_intervention(neurons, target, factor, layers, positions, seed)  # before the model loads
        kwargs.setdefault("dtype", stats.manifest.get("dtype") or "auto")
        super().__init__(pretrained=pretrained if pretrained is not None else run_pretrained(self.run), **kwargs)
        self.steerer = Steerer(None, neurons, stats, site=hf_points(self.model).site)
        self.intervention = intervention
        self._spans: dict[tuple[int, ...], int] = {}

    def _rows(self, n: int) -> list[Intervention | None]:
        return [self.intervention] * n

    def _needs_spans(self) -> bool:
        iv = self.intervention
        return iv is not None and (iv.parsed_factor().test_time or iv.position_rule()[0] != "all")

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, override_bs: int | None = None
                              ) -> list:
        """Remember, per model input of the requests, where its continuation starts (HFLM's own input rule:
        ``(context + continuation)[-(max_length + 1):][:-1]``), so :meth:`_model_call` can tell real positions."""
        if self._needs_spans():
            for _, context, continuation in requests:
                inp = (context + continuation)[-(self.max_length + 1):][:-1]
                self._spans[tuple(inp)] = max(0, len(inp) - len(continuation) + 1)
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._spans.clear()

    def _row_spans(self, inps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid [batch, pos], prompt end [batch]) of a right-padded batch: each row's real tokens are the longest
        known input that it starts with, followed by pads only (HFLM pads with 0). A row of unknown origin counts
        whole."""
        valid = torch.ones_like(inps, dtype=torch.bool)
        ends = torch.full((inps.shape[0],), inps.shape[1], dtype=torch.long)
        for r, row in enumerate(inps.tolist()):
            nonzero = [i for i, tok in enumerate(row) if tok != 0]
            for length in range((nonzero[-1] + 1) if nonzero else 1, len(row) + 1):
                end = self._spans.get(tuple(row[:length]))
                if end is not None:
                    valid[r, length:] = False
                    ends[r] = end
                    break
        return valid.to(inps.device), ends.to(inps.device)

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.intervention is None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        valid, ends = self._row_spans(inps) if self._needs_spans() else (None, None)
        with self.steerer.apply_hf(self.model, self._rows(inps.shape[0]), prompt_end=ends, valid=valid):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
                        ) -> torch.Tensor:
        if self.intervention is None:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        # generation passes its attention_mask on every step; the prompt is the first forward's input
        with self.steerer.apply_hf(self.model, self._rows(context.shape[0])):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
