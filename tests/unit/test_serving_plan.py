"""Request checks and read plans of the serving API: pure logic over the demo repo's definitions."""

from __future__ import annotations

import dataclasses

import pytest

from featurestream.config import ConfigError
from serving.catalog import Catalog
from serving.config import parse_models
from serving.errors import Invalid, NotFound, TooManyEntities
from serving.requests import OnlineFeaturesRequest, check_keys, columns, decode, request_time_ms
from tests.streams import demo_specs


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(demo_specs())


def test_plan_groups_by_view_in_schema_order_with_on_demand_last(catalog: Catalog) -> None:
    plan = catalog.plan(("candidate_price_features:price_vs_max_24h", "user_profile:country", "item_stats:price",
                         "user_profile:account_age_days"), False)
    assert [o.name for o in plan.outputs] == ["account_age_days", "country", "price", "price_vs_max_24h"]
    # the on-demand view's source view is read in full, without being an output
    assert [r.name for r in plan.reads] == ["user_profile", "item_stats", "user_activity"]
    assert plan.reads[2].features == demo_specs().stream_views["user_activity"].feature_names
    assert plan.join_keys == ("user_id", "item_id")
    assert plan.request_fields == ("candidate_price",)


def test_full_feature_names_and_batch_fields(catalog: Catalog) -> None:
    plan = catalog.plan(("user_profile:lifetime_spend",), True)
    assert [o.name for o in plan.outputs] == ["user_profile__lifetime_spend"]
    assert plan.reads[0].fields[-1] == b"_ts:user_profile" and len(plan.reads[0].fields) == 2


@pytest.mark.parametrize(("refs", "error", "names"), [
    (("user_profile:nope",), NotFound, "'nope'"),
    (("nope:x",), NotFound, "'nope'"),
    (("user_profile",), Invalid, "features[0]"),
])
def test_plan_errors_name_the_reference(catalog: Catalog, refs: tuple[str, ...], error: type, names: str) -> None:
    with pytest.raises(error, match=names.replace("[", r"\[").replace("]", r"\]")):
        catalog.plan(refs, False)


def test_unknown_service(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        catalog.service_features("nope")


def test_columns_merge_and_check_lengths() -> None:
    assert columns({"user_id": [1, 2]}, {"candidate_price": [1.0, 2.0]}, 10) == (
        {"user_id": [1, 2], "candidate_price": [1.0, 2.0]}, 2)
    with pytest.raises(TooManyEntities):
        columns({"user_id": list(range(11))}, None, 10)
    with pytest.raises(Invalid, match="entities.item_id"):
        columns({"user_id": [1, 2], "item_id": [1]}, None, 10)
    with pytest.raises(Invalid, match="request_data.user_id"):
        columns({"user_id": [1]}, {"user_id": [2]}, 10)


def test_key_types_are_checked() -> None:
    check_keys({"user_id": [1, -(2**63)]}, ("user_id",), {"user_id": "INT64"})
    for bad in (["1"], [True], [2**63], [1.5]):
        with pytest.raises(Invalid, match=r"entities.user_id\[0\]"):
            check_keys({"user_id": bad}, ("user_id",), {"user_id": "INT64"})
    with pytest.raises(Invalid, match="entities.user_id: missing"):
        check_keys({}, ("user_id",), {"user_id": "INT64"})


def test_request_time_and_body_decoding() -> None:
    assert request_time_ms(None, 42) == (42, False)
    assert request_time_ms("2026-01-01T00:00:00.5Z", 0) == (1_767_225_600_500, True)
    assert request_time_ms("2026-01-01T01:00:00+01:00", 0) == (1_767_225_600_000, True)
    with pytest.raises(Invalid, match="request_time"):
        request_time_ms(-5, 0)
    with pytest.raises(Invalid, match=r"\$.full_feature_names"):
        decode(b'{"entities": {}, "full_feature_names": "yes"}', OnlineFeaturesRequest)


def test_model_settings() -> None:
    assert parse_models("a=m.joblib, b=pkg.mod:fn") == {"a": "m.joblib", "b": "pkg.mod:fn"}
    with pytest.raises(ConfigError, match="'oops'"):
        parse_models("oops")



def test_colliding_short_names_need_full_names() -> None:
    specs = demo_specs()
    twin = dataclasses.replace(specs.batch_views["user_profile"], name="user_profile_twin")
    catalog = Catalog(dataclasses.replace(specs, batch_views={**specs.batch_views, twin.name: twin}))
    refs = ("user_profile:country", "user_profile_twin:country")
    with pytest.raises(Invalid, match="country.*full_feature_names"):
        catalog.plan(refs, False)
    assert [o.name for o in catalog.plan(refs, True).outputs] == ["user_profile__country", "user_profile_twin__country"]
