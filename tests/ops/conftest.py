"""The real Kafka-protocol broker of tests/kafka, for the observability tests that need one."""

from tests.kafka.conftest import bootstrap

__all__ = ["bootstrap"]
