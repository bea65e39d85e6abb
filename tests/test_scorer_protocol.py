"""The scorer protocol: every method implements it, the registry finds it by the manifest's
method, and the inspection model needs nothing else from a scorer."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.demo import DEMO_MODEL
from edgead.errors import ArtifactError
from edgead.model import load_model
from edgead.scorer import registry
from edgead.scorer.protocol import FrameScore, Scorer
from edgead.synthetic import make_part


def test_registry_knows_every_method_by_its_manifest_name():
    methods = registry.scorer_methods()
    assert {"patchcore", "padim", "simplenet", "spade"} <= set(methods)
    assert all(cls.method == name for name, cls in methods.items())
    with pytest.raises(ArtifactError, match=r"m/manifest.json: unknown method 'efficientad'.*padim, patchcore, simplenet, spade"):
        registry.scorer_class("efficientad", "m/manifest.json")


@pytest.mark.parametrize("which, backend", [("demo", "int8"), ("padim_model_dir", "mahalanobis")])
def test_loaded_scorers_implement_the_protocol(which, backend, request):
    model = load_model(DEMO_MODEL if which == "demo" else request.getfixturevalue(which))
    scorer = model.scorer
    assert isinstance(scorer, Scorer) and scorer.backend == backend == model.search_backend
    assert scorer.nbytes > 0
    image = make_part(np.random.default_rng(3), 128, "blob")[0]
    feats = model.features(image)[0]
    patch = scorer.patch_scores(feats)
    assert patch.shape == (len(feats), *feats.shape[2:])
    eager = scorer.score(feats, with_map=True, lazy=False)
    assert isinstance(eager, FrameScore) and eager.maps.shape == (len(feats), *model.input_size)
    lazy = scorer.score(feats, with_map=True, lazy=True)
    maps = lazy.maps() if callable(lazy.maps) else lazy.maps
    assert lazy.score == pytest.approx(eager.score, rel=1e-6)
    np.testing.assert_allclose(maps, eager.maps, rtol=1e-6)


class ConstantScorer:
    """A scoring method in a dozen lines: what a new method's module provides."""

    method = "patchcore"
    backend = "constant"
    nbytes = 0

    def __init__(self, side: tuple[int, int]):
        self.side = side

    @classmethod
    def from_artifact(cls, model_dir, manifest, *, search="auto", threads=1):
        return cls(manifest.preprocess.input_size)

    def patch_scores(self, feats):
        return np.full((len(feats), *feats.shape[2:]), 2.5, np.float32)

    def score(self, feats, *, with_map=True, lazy=False):
        maps = np.full((len(feats), *self.side), 2.5, np.float32)
        return FrameScore(42.0, (lambda: maps) if lazy else maps, 0.0, 0.0)


def test_the_model_composes_any_registered_scorer(monkeypatch):
    registry.scorer_methods()  # the real methods are found first
    monkeypatch.setitem(registry._SCORERS, "patchcore", ConstantScorer)
    model = load_model(DEMO_MODEL)
    assert isinstance(model.scorer, ConstantScorer) and isinstance(model.scorer, Scorer)
    assert model.search_backend == "constant"
    result = model.score(make_part(np.random.default_rng(0), 160)[0])
    assert result.score == 42.0 and result.anomaly_map.shape == (160, 160)
    assert float(result.anomaly_map.max()) == pytest.approx(2.5)
