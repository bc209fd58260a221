"""A set of neurons per language and layer, with where it came from.

Saved as ``neurons.json``::

    {"languages": ["en", "fr", ...],                       # run order
     "neurons": {"en": [[indices of layer 0], [layer 1], ...], ...},   # every run language, empty lists kept
     "n_layers": 18, "d_mlp": 2048,
     "provenance": {"method": "lape", "params": {...}, "stats": {...manifest excerpt...}}}

and exportable to the RUCAIBox / reference-code format (``list[lang][layer]`` of LongTensor in a ``.pth``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.languages import parse_languages
from lens_steer.paths import atomic_path, write_json
from lens_steer.artifacts import NEURONS_FILE



@dataclass
class NeuronSet:
    """Sorted neuron indices per language and layer.

    >>> ns = NeuronSet(["en", "fr"], {"en": [[1, 3], []], "fr": [[3], [0]]}, n_layers=2, d_mlp=4)
    >>> ns.counts().tolist()  # [lang, layer]
    [[2, 0], [1, 1]]
    >>> ns.overlap().tolist()
    [[2, 1], [1, 2]]
    """

    languages: list[str]
    neurons: dict[str, list[list[int]]]
    n_layers: int
    d_mlp: int
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for code in self.languages:
            layers = self.neurons.setdefault(code, [[] for _ in range(self.n_layers)])
            if len(layers) != self.n_layers:
                raise LensSteerError(f"neuron set for {code!r} has {len(layers)} layers, expected {self.n_layers}")
            for layer, idx in enumerate(layers):
                if any(not 0 <= int(j) < self.d_mlp for j in idx):
                    raise LensSteerError(f"neuron set for {code!r} layer {layer} has indices outside 0..{self.d_mlp - 1}")
                layers[layer] = sorted({int(j) for j in idx})
        extra = set(self.neurons) - set(self.languages)
        if extra:
            raise LensSteerError(f"neuron set has languages {sorted(extra)} that are not in its language list")

    @classmethod
    def from_mask(cls, mask: Bool[Tensor, "layer d_mlp lang"], languages: list[str],
                  provenance: dict[str, Any] | None = None) -> NeuronSet:
        layers, d, k = mask.shape
        if k != len(languages):
            raise LensSteerError(f"mask has {k} languages but {len(languages)} codes were given")
        neurons = {code: [torch.nonzero(mask[layer, :, i]).flatten().tolist() for layer in range(layers)]
                   for i, code in enumerate(languages)}
        return cls(list(languages), neurons, layers, d, provenance or {})

    def mask(self) -> Bool[Tensor, "layer d_mlp lang"]:
        out = torch.zeros(self.n_layers, self.d_mlp, len(self.languages), dtype=torch.bool)
        for i, code in enumerate(self.languages):
            for layer, idx in enumerate(self.neurons[code]):
                out[layer, idx, i] = True
        return out

    def indices(self, code: str, layer: int) -> Int[Tensor, " n"]:
        """The sorted neuron indices of ``code`` in ``layer`` as a LongTensor."""
        if code not in self.neurons:
            raise LensSteerError(f"language {code!r} is not in this neuron set; it has {', '.join(self.languages)}")
        return torch.tensor(self.neurons[code][layer], dtype=torch.long)

    def counts(self) -> Int[Tensor, "lang layer"]:
        """Number of neurons per language and layer."""
        return torch.tensor([[len(idx) for idx in self.neurons[c]] for c in self.languages], dtype=torch.long)

    def totals(self) -> dict[str, int]:
        return {code: sum(len(idx) for idx in self.neurons[code]) for code in self.languages}

    def overlap(self) -> Int[Tensor, "lang lang"]:
        """Shared neurons between every pair of languages; the diagonal is each language's set size."""
        flat = self.mask().reshape(-1, len(self.languages)).long()
        return flat.T @ flat

    def jaccard(self) -> Tensor:
        """Jaccard similarity |A & B| / |A | B| between languages (0 when both are empty)."""
        inter = self.overlap().double()
        size = inter.diagonal()
        union = size[:, None] + size[None, :] - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).float()

    def check_model(self, n_layers: int, d_mlp: int) -> None:
        """Refuse to apply this set to a model of another shape."""
        if (self.n_layers, self.d_mlp) != (n_layers, d_mlp):
            raise LensSteerError(
                f"this neuron set was made for {self.n_layers} layers x {self.d_mlp} neurons but the model has"
                f" {n_layers} x {d_mlp}; identify neurons again on this model"
            )

    def steerable(self, languages: Sequence[str]) -> list[str]:
        """The languages of ``languages`` that have neurons in this set (the ones an intervention can target).

        >>> NeuronSet(["en", "fr"], {"en": [[1], []], "fr": [[], []]}, 2, 4).steerable(["fr", "en"])
        ['en']
        """
        totals = self.totals()
        return [t for t in languages if totals.get(t, 0)]

    def targets(self, spec: str | None = None, *, strict: bool = False) -> tuple[list[str], list[str]]:
        """The target languages ``spec`` names (default: every language with neurons) that have neurons, and those
        skipped for having none (``strict`` refuses them instead). A language the set lacks is refused.

        >>> NeuronSet(["en", "fr"], {"en": [[1], []], "fr": [[], []]}, 2, 4).targets("en,fr")
        (['en'], ['fr'])
        """
        totals = self.totals()
        targets = parse_languages(spec) if spec else [c for c in self.languages if totals[c]]
        unknown = [t for t in targets if t not in totals]
        if unknown:
            raise LensSteerError(f"{', '.join(unknown)} not in the run (it has {', '.join(self.languages)})")
        empty = [t for t in targets if not totals[t]]
        if empty and strict:
            raise LensSteerError(f"{', '.join(empty)} has no neurons in this run; choose another target or identify"
                                 " with a larger --top-rate")
        return [t for t in targets if totals[t]], empty

    # ---- I/O ----
    def to_json(self) -> dict[str, Any]:
        return {"languages": self.languages, "neurons": {c: self.neurons[c] for c in self.languages},
                "n_layers": self.n_layers, "d_mlp": self.d_mlp, "provenance": self.provenance}

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the whole set (languages, indices, shape, provenance, which names the
        statistics' fingerprint): every artifact derived from this set records it as ``run_fingerprint``.

        >>> a = NeuronSet(["en"], {"en": [[1]]}, n_layers=1, d_mlp=4)
        >>> a.fingerprint() == NeuronSet(["en"], {"en": [[1]]}, 1, 4).fingerprint() != NeuronSet(["en"], {"en": [[2]]}, 1, 4).fingerprint()
        True
        """
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write ``neurons.json`` (``path`` may be the run directory or the file)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / NEURONS_FILE
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        path = Path(path)
        if path.is_dir():
            path = path / NEURONS_FILE
        if not path.exists():
            raise LensSteerError(f"{path} does not exist; run `lens-steer identify` first")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            languages, neurons = list(obj["languages"]), dict(obj["neurons"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise LensSteerError(f"{path} is not a lens_steer neurons.json ({exc!r}); run `lens-steer identify`") from exc
        n_layers = int(obj.get("n_layers") or len(next(iter(neurons.values()), [])))
        d_mlp = int(obj.get("d_mlp") or obj.get("provenance", {}).get("stats", {}).get("model", {}).get("d_mlp") or 0)
        if not d_mlp:
            d_mlp = 1 + max((j for layers in neurons.values() for idx in layers for j in idx), default=0)
        return cls(languages, neurons, n_layers, d_mlp, obj.get("provenance", {}))

    def to_rucaibox(self, path: str | Path) -> Path:
        """Export as the reference codes' ``.pth``: ``list[lang][layer]`` of LongTensor, run language order."""
        path = Path(path)
        data = [[self.indices(code, layer) for layer in range(self.n_layers)] for code in self.languages]
        with atomic_path(path) as tmp:
            torch.save(data, tmp)
        return path

    @classmethod
    def from_rucaibox(cls, path: str | Path, languages: list[str], d_mlp: int) -> NeuronSet:
        """Import a reference ``.pth`` (``list[lang][layer]`` of index tensors) with its language order."""
        data = torch.load(path, weights_only=True)
        if len(data) != len(languages):
            raise LensSteerError(f"{path} holds {len(data)} languages but {len(languages)} codes were given")
        neurons = {code: [torch.as_tensor(t).long().tolist() for t in layers] for code, layers in zip(languages, data)}
        return cls(list(languages), neurons, len(data[0]) if data else 0, d_mlp, {"method": "imported", "path": str(path)})
