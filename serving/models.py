"""Models per feature service, loaded once at start: a joblib/pickle file of a scikit-learn or LightGBM
model, or a Python `module:function` taking the feature columns.

A fitted estimator that knows its input columns (`feature_names_in_`) gets a DataFrame of
exactly those, so a model may use a subset of its service's features; otherwise it gets
every feature of the service in the service's order, as a float matrix (nulls as NaN).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from featurestream.config import ConfigError
from serving.errors import Invalid

Columns = dict[str, list[Any]]


class Model:
    def __init__(self, service: str, reference: str, obj: Any) -> None:
        self.service = service
        self.reference = reference
        self.obj = obj

    def predict(self, columns: Columns, rows: int) -> dict[str, Any]:
        """{"predictions": [...]} and, for classifiers, {"probabilities": [[...], ...]}."""
        try:
            if not hasattr(self.obj, "predict"):
                predictions = list(self.obj(columns))
                if len(predictions) != rows:
                    raise ValueError(f"returned {len(predictions)} predictions for {rows} rows")
                return {"predictions": predictions}
            matrix = self._matrix(columns)
            classes = getattr(self.obj, "classes_", None)
            if classes is not None and hasattr(self.obj, "predict_proba"):
                # A classifier's prediction is its most probable class: one pass over the trees, not two.
                probabilities = self.obj.predict_proba(matrix)
                return {"predictions": classes[probabilities.argmax(axis=1)].tolist(),
                        "probabilities": probabilities.tolist()}
            return {"predictions": self.obj.predict(matrix).tolist()}
        except Invalid:
            raise
        except Exception as exc:  # the model's own code: report it against this request's values
            raise Invalid(f"model of feature service {self.service!r} failed on this feature vector: "
                          f"{type(exc).__name__}: {exc}") from None

    def _matrix(self, columns: Columns) -> Any:
        import numpy as np
        import pandas as pd

        wanted: Sequence[str] | None = getattr(self.obj, "feature_names_in_", None)
        if wanted is not None:
            missing = [name for name in wanted if name not in columns]
            if missing:
                raise Invalid(f"model of feature service {self.service!r} needs {', '.join(missing)}, "
                              "which the feature service does not provide")
            return pd.DataFrame({name: _numeric_if_possible(columns[name]) for name in wanted})
        return np.array([[np.nan if v is None else v for v in col] for col in columns.values()], dtype=float).T


def load_model(service: str, reference: str, base: Path) -> Model:
    """A file path (relative to the repo) is unpickled with joblib; `module:function` is imported."""
    path = Path(reference) if Path(reference).is_absolute() else base / reference
    if path.is_file():
        import joblib

        try:
            model = Model(service, reference, joblib.load(path))
        except Exception as exc:  # any unpickling failure is a configuration problem worth one clear line
            raise ConfigError(f"model {reference!r} of feature service {service!r} cannot be loaded: {exc}") from exc
        _one_thread_per_worker()
        return model
    module_name, sep, attr = reference.partition(":")
    if not sep:
        raise ConfigError(f"model {reference!r} of feature service {service!r}: no such file, and not module:function")
    try:
        function: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model {reference!r} of feature service {service!r} cannot be imported: {exc}") from None
    return Model(service, reference, function)


def _one_thread_per_worker() -> None:
    """Models score a request's few rows; OpenMP/BLAS thread pools only add wake-up latency and fight the
    other workers for cores, so each worker process keeps one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # no scikit-learn stack installed, so no thread pools to limit
        return
    threadpool_limits(limits=1)


def _numeric_if_possible(values: list[Any]) -> Any:
    """Numbers with nulls as a float column (None -> NaN), as models were trained on; anything else as is."""
    import numpy as np

    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError):
        return values
