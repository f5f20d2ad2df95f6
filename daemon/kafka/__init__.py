"""Kafka: client options, the consumer source, the event publisher, the state topic."""
