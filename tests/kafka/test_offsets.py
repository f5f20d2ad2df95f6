"""Offset arithmetic: a partition commits up to, never past, its oldest unsettled event."""

from __future__ import annotations

from aiokafka import TopicPartition

from daemon.kafka.source import _Partition


def test_nothing_delivered_commits_nothing() -> None:
    assert _Partition(TopicPartition("t", 0), committed=-1).position() is None


def test_all_settled_commits_past_the_last_delivered() -> None:
    part = _Partition(TopicPartition("t", 0), committed=3, next=10)
    assert part.position() == 10


def test_the_oldest_unsettled_event_bounds_the_commit() -> None:
    part = _Partition(TopicPartition("t", 0), committed=3, next=10, pending={7, 5, 9})
    assert part.position() == 5
    part.pending.discard(5)
    assert part.position() == 7
