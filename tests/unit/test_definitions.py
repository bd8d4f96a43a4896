"""The loader turns Feast objects into specs and rejects what featurestream cannot run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feast import Entity, Field, FileSource, KafkaSource, ValueType
from feast.aggregation import Aggregation
from feast.data_format import JsonFormat
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64, UnixTimestamp

from featurestream.definitions import DefinitionError, check_repo, specs_from_objects
from tests.conftest import FEATURE_REPO

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

USER = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
SOURCE = KafkaSource(
    name="clicks",
    topic="clicks",
    kafka_bootstrap_servers="127.0.0.1:9092",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="user_id bigint, price double, ts timestamp"),
    batch_source=FileSource(name="log", path="/tmp/log", timestamp_field="ts"),
    watermark_delay_threshold=timedelta(seconds=45),
)


def stream_view(aggregations: list[Aggregation], schema: list[Field] | None = None, **kwargs: Any) -> StreamFeatureView:
    fields = schema if schema is not None else [Field(name=a.name, dtype=Float64) for a in aggregations]
    return StreamFeatureView(name="v", entities=[USER], source=SOURCE, timestamp_field="ts",
                             aggregations=aggregations, schema=[Field(name="user_id", dtype=Int64), *fields], **kwargs)


def load(view: StreamFeatureView) -> Any:
    return specs_from_objects(project="p", entities=[USER], feature_views=[], stream_feature_views=[view])


def test_a_valid_windowed_view_becomes_a_spec() -> None:
    view = stream_view([Aggregation(column="price", function="sum", time_window=timedelta(hours=1),
                                    slide_interval=timedelta(minutes=5), name="spend_1h")])
    spec = load(view).stream_views["v"]
    assert spec.join_keys == ("user_id",)
    assert spec.aggregations[0].window_ms == 3_600_000 and spec.aggregations[0].slide_ms == 300_000
    assert spec.source.lateness_ms == 45_000 and spec.source.topic == "clicks"
    assert spec.source.schema == {"user_id": "bigint", "price": "double", "ts": "timestamp"}
    assert spec.feature_names == ("spend_1h",)
    assert not spec.is_session


def test_slide_defaults_to_the_window() -> None:
    view = stream_view([Aggregation(column="price", function="max", time_window=timedelta(minutes=10), name="m")])
    assert load(view).stream_views["v"].aggregations[0].slide_ms == 600_000


def test_window_not_divisible_by_slide_is_rejected() -> None:
    view = stream_view([Aggregation(column="price", function="sum", time_window=timedelta(hours=1),
                                    slide_interval=timedelta(minutes=7), name="spend_1h")])
    with pytest.raises(DefinitionError, match=r"'v'.*'spend_1h'.*does not divide"):
        load(view)


def test_unknown_function_is_rejected() -> None:
    view = stream_view([Aggregation(column="price", function="median", time_window=timedelta(hours=1), name="med")])
    with pytest.raises(DefinitionError, match=r"'v'.*'med'.*unknown function 'median'.*count, sum"):
        load(view)


def test_an_aggregated_column_the_source_lacks_needs_a_udf() -> None:
    view = stream_view([Aggregation(column="amount", function="count", time_window=timedelta(hours=1), name="n")])
    with pytest.raises(DefinitionError, match=r"'v'.*'n'.*column 'amount' is not in the schema of source 'clicks'"):
        load(view)


def test_adding_up_a_column_that_holds_no_numbers_is_rejected() -> None:
    view = stream_view([Aggregation(column="ts", function="mean", time_window=timedelta(hours=1), name="m")])
    with pytest.raises(DefinitionError, match=r"'v'.*'m'.*mean adds numbers up, but column 'ts' is a timestamp"):
        load(view)
    view = stream_view([Aggregation(column="ts", function="max", time_window=timedelta(hours=1), name="m")])
    assert load(view).stream_views["v"].aggregations[0].function == "max"


def test_session_gap_that_does_not_parse_is_rejected() -> None:
    view = stream_view([Aggregation(column="price", function="sum", name="spend")],
                       tags={"featurestream.session_gap": "soon"})
    with pytest.raises(DefinitionError, match=r"'v'.*featurestream.session_gap.*'soon'"):
        load(view)


def test_stream_view_without_timestamp_field_is_rejected() -> None:
    view = stream_view([Aggregation(column="price", function="sum", time_window=timedelta(hours=1), name="s")])
    view.timestamp_field = ""
    with pytest.raises(DefinitionError, match=r"'v' has no timestamp_field"):
        load(view)


def test_session_view_lists_the_builtins_first() -> None:
    view = stream_view(
        [Aggregation(column="price", function="sum", name="spend")],
        schema=[Field(name="session_start", dtype=UnixTimestamp), Field(name="session_event_count", dtype=Int64),
                Field(name="session_duration_s", dtype=Float64), Field(name="spend", dtype=Float64)],
        tags={"featurestream.session_gap": "30m"},
    )
    spec = load(view).stream_views["v"]
    assert spec.session_gap_ms == 1_800_000
    assert spec.feature_names == ("session_start", "session_event_count", "session_duration_s", "spend")


def test_session_aggregation_with_a_window_is_rejected() -> None:
    view = stream_view([Aggregation(column="price", function="sum", time_window=timedelta(hours=1), name="s")],
                       tags={"featurestream.session_gap": "30m"})
    with pytest.raises(DefinitionError, match="session aggregation has no time_window"):
        load(view)


def test_undeclared_output_is_rejected() -> None:
    view = stream_view([Aggregation(column="price", function="sum", time_window=timedelta(hours=1), name="s")],
                       schema=[])
    with pytest.raises(DefinitionError, match=r"declare s in its schema"):
        load(view)


def test_join_key_missing_from_the_events_is_rejected() -> None:
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    view = StreamFeatureView(name="v", entities=[item], source=SOURCE, timestamp_field="ts",
                             aggregations=[Aggregation(column="price", function="sum",
                                                       time_window=timedelta(hours=1), name="s")],
                             schema=[Field(name="item_id", dtype=Int64), Field(name="s", dtype=Float64)])
    with pytest.raises(DefinitionError, match=r"join key item_id is not in the schema"):
        specs_from_objects(project="p", entities=[item], feature_views=[], stream_feature_views=[view])


def test_unsupported_schema_type_is_rejected() -> None:
    source = KafkaSource(name="s", topic="t", kafka_bootstrap_servers="x:1", timestamp_field="ts",
                         message_format=JsonFormat(schema_json="user_id bigint, ts timestamp, tags array<string>"),
                         batch_source=FileSource(name="log2", path="/tmp/log", timestamp_field="ts"))
    view = StreamFeatureView(name="v", entities=[USER], source=source, timestamp_field="ts",
                             aggregations=[Aggregation(column="user_id", function="count",
                                                       time_window=timedelta(hours=1), name="n")],
                             schema=[Field(name="user_id", dtype=Int64), Field(name="n", dtype=Int64)])
    with pytest.raises(DefinitionError, match=r"column 'tags'.*'array<string>'"):
        load(view)


def test_each_repo_is_read_from_its_own_modules(repo_copy: Path) -> None:
    """A copy with the same module names, read first, must not leak into the next repo read in the process."""
    views = repo_copy / "stream_features.py"
    views.write_text(views.read_text().replace('topic="clicks"', 'topic="elsewhere"'))
    assert {v.source.topic for v in check_repo(repo_copy).stream_views.values()} == {"elsewhere"}
    assert {v.source.topic for v in check_repo(FEATURE_REPO).stream_views.values()} == {"clicks"}
