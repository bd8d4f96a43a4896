"""/predict: the feature service's vector from Redis (nulls and all), through a scikit-learn model file or a Python function."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.ensemble import HistGradientBoostingClassifier

from serving.app import create_app
from serving.config import load_serve_config
from tests.integration.test_serving_api import USERS, World, by_name, world  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::DeprecationWarning")
MODEL_COLUMNS = ["lifetime_orders", "events_24h", "popularity_7d", "session_event_count"]
SCORER = '''
def score(columns):
    """Orders plus a tenth of the day's events (nulls as 0)."""
    return [(o or 0) + (e or 0) / 10 for o, e in zip(columns["lifetime_orders"], columns["events_24h"])]
'''


@pytest.fixture(scope="module")
def predicting(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:  # noqa: F811
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(3)
    train = pd.DataFrame(rng.integers(0, 50, size=(200, len(MODEL_COLUMNS))), columns=MODEL_COLUMNS)
    model = HistGradientBoostingClassifier(max_iter=20).fit(train, (train["events_24h"] > 20).astype(int))
    joblib.dump(model, root / "model.joblib")
    (root / "serving_test_scorer.py").write_text(SCORER)
    sys.path.insert(0, str(root))
    env = {**os.environ, **world.env, "FEATURESTREAM_MODELS": f"purchase_model_v1={root / 'model.joblib'}"}
    try:
        with TestClient(create_app(load_serve_config(env))) as client:
            client.model = model  # type: ignore[attr-defined]
            yield client
    finally:
        sys.path.remove(str(root))


def request(world: World) -> dict:  # noqa: F811
    users = [*USERS, 999]
    return {"entities": {"user_id": users, "item_id": [1 + u % 6 for u in users]},
            "request_data": {"candidate_price": [10.0] * len(users)}, "request_time": world.newest_ms}


def test_predict_with_a_scikit_learn_model(predicting: TestClient, world: World) -> None:  # noqa: F811
    body = request(world)
    response = predicting.post("/predict", json={"feature_service": "purchase_model_v1", "return_features": True,
                                                 **body})
    assert response.status_code == 200, response.text
    out = response.json()
    features = by_name(predicting.post("/get-online-features", json={"feature_service": "purchase_model_v1",
                                                                       **body}).json())
    assert by_name(out["features"]) == features
    frame = pd.DataFrame({name: features[name]["values"] for name in MODEL_COLUMNS}).astype(float)
    model = predicting.model  # type: ignore[attr-defined]
    assert out["predictions"] == model.predict(frame).tolist()
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(frame))
    assert "features" not in predicting.post("/predict", json={"feature_service": "purchase_model_v1",
                                                               **body}).json()


def test_predict_with_a_python_function(world: World, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "serving_fn_scorer.py").write_text(SCORER)
    sys.path.insert(0, str(tmp_path))
    env = {**os.environ, **world.env, "FEATURESTREAM_MODELS": "purchase_model_v1=serving_fn_scorer:score"}
    try:
        with TestClient(create_app(load_serve_config(env))) as client:
            body = request(world)
            out = client.post("/predict", json={"feature_service": "purchase_model_v1", "return_features": True,
                                                **body}).json()
    finally:
        sys.path.remove(str(tmp_path))
    features = by_name(out["features"])
    assert out["predictions"] == [(o or 0) + (e or 0) / 10 for o, e in zip(features["lifetime_orders"]["values"],
                                                                          features["events_24h"]["values"])]
