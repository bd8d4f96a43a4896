"""featurestream: the shared core of the feature store (definitions, semantics, storage layout, services, CLI)."""

__version__ = "0.1.0"
