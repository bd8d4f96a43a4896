"""The offline store: point-in-time-correct training sets on DuckDB from batch tables and the event log."""

from featurestream.offline.errors import OfflineError
from featurestream.offline.export import export, export_to_parquet

__all__ = ["OfflineError", "export", "export_to_parquet"]
