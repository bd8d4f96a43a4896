"""The batch materializer: the newest row per entity of each batch view, from DuckDB into Redis in Feast's layout."""
