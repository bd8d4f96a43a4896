"""One registry snapshot, and the read plans of the feature lists requested from it.

A plan is compiled once per distinct (feature list, full names) and cached, so a
request does no registry work: it only fills the plan with its entities.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from featurestream.definitions import BatchViewSpec, OnDemandViewSpec, RepoSpecs, StreamViewSpec
from featurestream.online.keys import state_key
from featurestream.online.reader import WindowReader
from serving.errors import Invalid, NotFound
from serving.feast_layout import EntityKeys, feature_fields
from serving.redis_io import around_key, bulk

Kind = Literal["batch", "window", "session"]
Entity = tuple[Any, ...]
EncodedKeys = Callable[[Entity], bytes]
_PLAN_CACHE_LIMIT = 4096
_KEY_CACHE_SIZE = 200_000  # entities per kind of read


def _encoded_keys(key_of: Callable[[Entity], bytes | str]) -> EncodedKeys:
    """The Redis key of an entity for one kind of read, RESP-encoded; cached (bounded): requests repeat entities."""
    return functools.lru_cache(maxsize=_KEY_CACHE_SIZE)(lambda entity: bulk(key_of(entity)))


@dataclass(frozen=True)
class ViewRead:
    """One batch or stream view a request reads: which features, from which keys."""

    name: str
    kind: Kind
    join_keys: tuple[str, ...]
    features: tuple[str, ...]  # batch: the fields fetched; stream: the features picked from the computed ones
    spec: BatchViewSpec | StreamViewSpec
    keys: EncodedKeys
    fields: tuple[bytes, ...] = ()  # batch only: HMGET fields, `_ts:<view>` last
    window: WindowReader | None = None  # windowed only


@dataclass(frozen=True)
class OnDemandRun:
    spec: OnDemandViewSpec
    sources: tuple[int, ...]  # indexes of the reads whose features feed it


@dataclass(frozen=True)
class Output:
    name: str
    source: int  # index into plan.reads, or len(plan.reads) + i for plan.on_demand[i]
    column: int  # index into that read's features (or the on-demand view's features)


@dataclass(frozen=True)
class Fetch:
    """One Redis command per entity, answering one or more reads.

    Feast keeps every batch view of an entity key in one hash, so the batch reads with
    the same join keys become one HMGET: every read's feature fields, in read order, then
    every read's timestamp field. Each read takes its slice of the values and its timestamp.
    """

    kind: Kind
    join_keys: tuple[str, ...]
    parts: tuple[tuple[int, int, int, int], ...]  # batch only: (read index, its first value, end, its timestamp)
    read: int  # stream fetches: the one read they answer
    resp: tuple[bytes, bytes]  # the command in RESP around its key: what goes before, what after
    keys: EncodedKeys

    def commands(self, entities: list[Entity]) -> bytes:
        """The command of each entity, in RESP, back to back."""
        before, after = self.resp
        return before + (after + before).join(map(self.keys, entities)) + after


@dataclass(frozen=True)
class Plan:
    reads: tuple[ViewRead, ...]
    fetches: tuple[Fetch, ...]
    on_demand: tuple[OnDemandRun, ...]
    outputs: tuple[Output, ...]
    join_keys: tuple[str, ...]  # every join key the reads need
    request_fields: tuple[str, ...]  # every request field the on-demand views need

    @functools.cached_property
    def output_names(self) -> list[str]:
        return [output.name for output in self.outputs]

    @functools.cached_property
    def output_columns(self) -> list[tuple[int, int]]:
        """(source, column) of each output, as a request assembles them."""
        return [(output.source, output.column) for output in self.outputs]


class Catalog:
    """The specs of one project, with its Feast entity-key encoder and a cache of plans."""

    def __init__(self, specs: RepoSpecs) -> None:
        self.specs = specs
        entity_keys = EntityKeys(specs.project, specs.join_key_types)
        self._keys = {  # per stream view, and per join keys of batch views (Feast keeps those in one hash)
            **{name: _encoded_keys(functools.partial(state_key, specs.project, name, view.join_keys))
               for name, view in specs.stream_views.items()},
            **{view.join_keys: _encoded_keys(functools.partial(entity_keys, view.join_keys))
               for view in specs.batch_views.values()},
        }
        self._plans: dict[tuple[tuple[str, ...], bool], Plan] = {}

    def service_features(self, service: str) -> tuple[str, ...]:
        spec = self.specs.feature_services.get(service)
        if spec is None:
            raise NotFound(f"feature service {service!r} is not in project {self.specs.project!r}")
        return spec.features

    def plan(self, refs: tuple[str, ...], full_names: bool) -> Plan:
        plan = self._plans.get((refs, full_names))
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            plan = self._plans[(refs, full_names)] = self._compile(refs, full_names)
        return plan

    def _compile(self, refs: tuple[str, ...], full_names: bool) -> Plan:
        wanted: dict[str, list[str]] = {}  # view -> requested features, in first-appearance order of views
        for index, ref in enumerate(refs):
            view, sep, feature = ref.partition(":")
            if not sep or not view or not feature:
                raise Invalid(f"features[{index}]: {ref!r} is not <feature view>:<feature>")
            known = self._feature_names(view)
            if feature not in known:
                raise NotFound(f"feature {feature!r} is not in feature view {view!r}")
            if feature not in wanted.setdefault(view, []):
                wanted[view].append(feature)
        on_demand = [v for v in wanted if v in self.specs.on_demand_views]
        fetched = {v: list(fs) for v, fs in wanted.items() if v not in self.specs.on_demand_views}
        for name in on_demand:  # an on-demand view reads every feature of its source views
            for source in self.specs.on_demand_views[name].source_views:
                self._feature_names(source)
                fetched.setdefault(source, [])[:] = list(self._feature_names(source))
        reads = tuple(self._read(view, features) for view, features in fetched.items())
        index = {read.name: i for i, read in enumerate(reads)}
        runs = tuple(
            OnDemandRun(self.specs.on_demand_views[n], tuple(index[s] for s in self.specs.on_demand_views[n].source_views))
            for n in on_demand
        )
        outputs = []
        for view, features in wanted.items():  # Feast's order: views first, then on-demand views; schema order inside
            if view in self.specs.on_demand_views:
                continue
            read = reads[index[view]]
            outputs += [self._output(view, f, index[view], read.features.index(f), full_names)
                        for f in read.features if f in features]
        for i, run in enumerate(runs):
            names = run.spec.feature_names
            outputs += [self._output(run.spec.name, f, len(reads) + i, names.index(f), full_names)
                        for f in names if f in wanted[run.spec.name]]
        names = [o.name for o in outputs]
        collided = sorted({n for n in names if names.count(n) > 1})
        if collided:  # Feast refuses these too (FeatureNameCollisionError)
            raise Invalid(f"features: names {', '.join(collided)} appear in several feature views; "
                          "set full_feature_names to tell them apart")
        join_keys = tuple(dict.fromkeys(k for read in reads for k in read.join_keys))
        request_fields = tuple(dict.fromkeys(f for run in runs for f in run.spec.request_fields))
        return Plan(reads, _fetches(reads), runs, tuple(outputs), join_keys, request_fields)

    @staticmethod
    def _output(view: str, feature: str, source: int, column: int, full_names: bool) -> Output:
        return Output(f"{view}__{feature}" if full_names else feature, source, column)

    def _feature_names(self, view: str) -> tuple[str, ...]:
        for views in (self.specs.batch_views, self.specs.stream_views, self.specs.on_demand_views):
            spec: Any = views.get(view)
            if spec is not None:
                return spec.feature_names
        raise NotFound(f"feature view {view!r} is not in project {self.specs.project!r}")

    def _read(self, view: str, features: list[str]) -> ViewRead:
        batch = self.specs.batch_views.get(view)
        if batch is not None:
            ordered = tuple(f for f in batch.feature_names if f in features)
            fields = tuple(feature_fields(view, ordered))
            return ViewRead(view, "batch", batch.join_keys, ordered, batch, self._keys[batch.join_keys], fields)
        stream = self.specs.stream_views[view]
        ordered = tuple(f for f in stream.feature_names if f in features)
        if stream.is_session:
            return ViewRead(view, "session", stream.join_keys, ordered, stream, self._keys[view])
        return ViewRead(view, "window", stream.join_keys, ordered, stream, self._keys[view],
                        window=WindowReader(stream, ordered))


def _fetches(reads: tuple[ViewRead, ...]) -> tuple[Fetch, ...]:
    batch: dict[tuple[str, ...], list[int]] = {}
    fetches = []
    for index, read in enumerate(reads):
        if read.kind == "batch":
            batch.setdefault(read.join_keys, []).append(index)
        else:
            fetches.append(Fetch(read.kind, read.join_keys, (), index, around_key(b"HGET", b"s"), read.keys))
    for join_keys, indexes in batch.items():
        parts, values = [], []
        width = sum(len(reads[index].features) for index in indexes)
        for position, index in enumerate(indexes):
            parts.append((index, len(values), len(values) + len(reads[index].features), width + position))
            values += reads[index].fields[:-1]
        fields = values + [reads[index].fields[-1] for index in indexes]
        fetches.append(Fetch("batch", join_keys, tuple(parts), -1, around_key(b"HMGET", *fields), reads[indexes[0]].keys))
    return tuple(fetches)
