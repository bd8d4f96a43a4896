"""Generated clicks decode cleanly against the `clicks` KafkaSource schema; malformed ones are all rejected."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from featurestream.definitions import check_repo
from featurestream.generate import GenerateConfig, generate_demo_data
from materializers.stream.decode import Decoder, Rejected
from tests.conftest import FEATURE_REPO

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_generated_events_match_the_kafka_source(tmp_path: Path) -> None:
    specs = check_repo(FEATURE_REPO)
    views = [v for v in specs.stream_views.values() if v.source.topic == "clicks"]
    source = views[0].source
    keys = tuple(dict.fromkeys(k for v in views for k in v.join_keys))
    decoder = Decoder(source.schema, source.timestamp_field, keys)
    summary = generate_demo_data(GenerateConfig(out_dir=tmp_path, end=datetime(2026, 11, 27, tzinfo=UTC),
                                                users=300, items=80, events=5_000, malformed_fraction=0.01))
    accepted, rejected = 0, 0
    for line in summary.events_path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            row, _ = decoder.decode(line)
        except Rejected:
            rejected += 1
            continue
        accepted += 1
        assert set(row) == set(source.schema)
        for view in views:  # the udf runs on every good event
            assert view.udf is not None and set(view.udf(row)) >= set(source.schema)
    assert accepted == summary.events
    assert rejected == summary.malformed > 0
