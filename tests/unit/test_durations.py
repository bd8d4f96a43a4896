import pytest

from featurestream.durations import parse_duration_ms


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", 1_800_000), ("1h30m", 5_400_000), ("90s", 90_000), ("250ms", 250), ("1.5h", 5_400_000),
     ("2d", 172_800_000), (" 10 s ", 10_000)],
)
def test_parses(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "30", "m30", "30x", "1h 2q", "0s", "-5m"])
def test_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(text)
