"""The stream materializer: Kafka events into windowed and session features in Redis, exactly once."""
