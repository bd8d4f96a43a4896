"""The local broker's KRaft cluster id: valid for Kafka and never mistaken for a command-line option."""

from __future__ import annotations

import base64

from featurestream.services.kafka_broker import _new_cluster_id


def test_cluster_ids_are_16_random_bytes_that_never_start_with_a_dash() -> None:
    ids = [_new_cluster_id() for _ in range(5_000)]  # a dash would come first in 1 draw of 64
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for cluster_id in ids[:100]:
        assert len(cluster_id) == 22
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert any("-" in i for i in ids)  # the alphabet is still URL-safe base64, dashes and all
