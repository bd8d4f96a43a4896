"""Seeded synthetic demo data: daily batch snapshots and a realistic, imperfect clickstream."""

from featurestream.generate.config import GenerateConfig, GenerateSummary
from featurestream.generate.run import generate_demo_data

__all__ = ["GenerateConfig", "GenerateSummary", "generate_demo_data"]
