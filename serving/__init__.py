"""The serving API: Feast-compatible online retrieval of batch, windowed, session and on-demand features, and prediction."""
