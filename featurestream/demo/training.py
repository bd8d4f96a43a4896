"""A labelled training set from the event log, a model trained on it, evaluated on a later time split.

The question the demo model answers: will this user purchase within the next
10 minutes, given the item they are looking at? Each training row is a view
event (user, item, its price as the request-time `candidate_price`, time t);
its label comes from the user's later purchases, found with an ASOF join.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from featurestream.event_log_files import log_paths

LABEL = "purchased_within_10m"
HORIZON_MINUTES = 10
TEST_FRACTION = 0.25


def labelled_rows(event_log_dir: Path, rows: int, seed: int = 42) -> pa.Table:
    """View events sampled from the event log, with the label; rows whose horizon runs past the data are left out."""
    query = f"""
        WITH events AS (
            SELECT user_id, item_id, event_type, price, event_timestamp AS ts
            FROM read_parquet($files)
        ),
        purchases AS (SELECT user_id, ts FROM events WHERE event_type = 'purchase'),
        candidates AS (
            SELECT * FROM (
                SELECT user_id, item_id, price AS candidate_price, ts FROM events
                WHERE event_type = 'view' AND price IS NOT NULL
                  AND ts <= (SELECT max(ts) FROM events) - INTERVAL {HORIZON_MINUTES} MINUTE
            ) USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE ({int(seed)})
        )
        SELECT c.user_id, c.item_id, c.candidate_price, c.ts AS event_timestamp,
               coalesce(p.ts <= c.ts + INTERVAL {HORIZON_MINUTES} MINUTE, false) AS {LABEL}
        FROM candidates c ASOF LEFT JOIN purchases p ON c.user_id = p.user_id AND p.ts > c.ts
        ORDER BY event_timestamp, user_id, item_id
    """
    with duckdb.connect() as con:
        return con.sql(query, params={"files": [str(path) for path in log_paths(event_log_dir)]}).to_arrow_table()


@dataclass
class Trained:
    model: Any
    features: list[str]
    auc: float
    train_rows: int
    test_rows: int
    positive_rate: float
    split_at: Any


def train(table: pa.Table, feature_names: list[str]) -> Trained:
    """LightGBM on the service's numeric features; AUC on the latest quarter of time.

    Strings and timestamps are left out: encoding them would put a column transformer in
    front of every `/predict`, for no gain on this data.
    """
    from lightgbm import LGBMClassifier
    from sklearn.metrics import roc_auc_score

    frame = table.to_pandas()
    kinds = {name: table.schema.field(name).type for name in feature_names}
    usable = [name for name, kind in kinds.items()
              if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)]
    split_at = frame["event_timestamp"].quantile(1 - TEST_FRACTION)
    fit_part, test_part = frame[frame["event_timestamp"] < split_at], frame[frame["event_timestamp"] >= split_at]
    if fit_part[LABEL].nunique() < 2 or test_part[LABEL].nunique() < 2:
        raise ValueError("the training set needs both labels before and after the time split; generate more events")
    model = LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=31, random_state=0, verbose=-1)
    model.fit(fit_part[usable].astype(float), fit_part[LABEL])
    auc = roc_auc_score(test_part[LABEL], model.predict_proba(test_part[usable].astype(float))[:, 1])
    model.set_params(n_jobs=1)  # serving scores one request's rows at a time
    return Trained(model, usable, float(auc), len(fit_part), len(test_part), float(frame[LABEL].mean()), split_at)
