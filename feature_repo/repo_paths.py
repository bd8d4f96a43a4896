"""Where the demo data lives, resolved from this file so `feast apply` works from any cwd."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
USER_PROFILE_PATH = str(DATA_DIR / "user_profile.parquet")
ITEM_STATS_PATH = str(DATA_DIR / "item_stats.parquet")
EVENT_LOG_PATH = str(DATA_DIR / "event_log" / "clicks")
