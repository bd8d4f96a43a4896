"""Long-running writers: the stream materializer (Kafka -> Redis + event log) and the batch materializer."""
