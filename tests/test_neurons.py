"""NeuronSet: file format, counts, overlap, export, and refusal of other models' sets."""

from __future__ import annotations

import json

import pytest
import torch

from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet


@pytest.fixture
def ns() -> NeuronSet:
    return NeuronSet(["en", "fr", "qu"], {"en": [[3, 1], [0]], "fr": [[1], [2, 0]], "qu": [[], []]},
                     n_layers=2, d_mlp=4, provenance={"method": "lape"})


def test_json_shape_and_round_trip(ns, tmp_path):
    path = ns.save(tmp_path)
    raw = json.loads(path.read_text())
    assert raw["languages"] == ["en", "fr", "qu"]
    assert raw["neurons"]["en"] == [[1, 3], [0]]  # sorted
    assert raw["neurons"]["qu"] == [[], []]  # empty languages keep their slot
    assert set(raw) >= {"languages", "neurons", "provenance"}
    again = NeuronSet.load(tmp_path)
    assert again.neurons == ns.neurons and again.d_mlp == 4 and again.provenance == {"method": "lape"}


def test_counts_overlap_jaccard(ns):
    assert ns.counts().tolist() == [[2, 1], [1, 2], [0, 0]]
    assert ns.overlap().tolist() == [[3, 2, 0], [2, 3, 0], [0, 0, 0]]
    jac = ns.jaccard()
    assert jac[0, 1].item() == pytest.approx(2 / 4) and jac[2, 2].item() == 0.0


def test_mask_round_trip(ns):
    assert NeuronSet.from_mask(ns.mask(), ns.languages).neurons == ns.neurons


def test_rucaibox_export(ns, tmp_path):
    path = ns.to_rucaibox(tmp_path / "lape.pth")
    data = torch.load(path, weights_only=True)
    assert len(data) == 3 and all(len(layers) == 2 for layers in data)
    assert data[0][0].dtype == torch.long and data[0][0].tolist() == [1, 3] and data[2][1].numel() == 0
    assert NeuronSet.from_rucaibox(path, ns.languages, 4).neurons == ns.neurons


def test_other_model_is_refused(ns):
    ns.check_model(2, 4)
    with pytest.raises(LensSteerError, match="identify neurons again"):
        ns.check_model(18, 2048)


def test_bad_sets_are_refused(tmp_path):
    with pytest.raises(LensSteerError, match="outside"):
        NeuronSet(["en"], {"en": [[9]]}, n_layers=1, d_mlp=4)
    with pytest.raises(LensSteerError, match="layers"):
        NeuronSet(["en"], {"en": [[1], [2]]}, n_layers=1, d_mlp=4)
    (tmp_path / "neurons.json").write_text("{not json")
    with pytest.raises(LensSteerError, match="not a lens_steer neurons.json"):
        NeuronSet.load(tmp_path)
    with pytest.raises(LensSteerError, match="does not exist"):
        NeuronSet.load(tmp_path / "nowhere")
    with pytest.raises(LensSteerError, match="not in this neuron set"):
        NeuronSet(["en"], {"en": [[1]]}, 1, 4).indices("fr", 0)
