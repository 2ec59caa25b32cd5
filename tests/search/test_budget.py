"""Budget parsing (absolute vs relative) and constraint checks."""

from __future__ import annotations

import pytest

from slimcnn.errors import ConfigError
from slimcnn.search.budget import Amount, Budget, ConstraintCheck, parse_amount, parse_drop
from slimcnn.types import Cost, LatencyStats, Score


@pytest.mark.parametrize(
    ("text", "what", "expected"),
    [
        ("0.5x", "macs", Amount(0.5, True)),
        ("50%", "macs", Amount(0.5, True)),
        ("4MB", "weight_bytes", Amount(4e6)),
        ("4MiB", "weight_bytes", Amount(4 * 1024**2)),
        ("512KB", "weight_bytes", Amount(512e3)),
        ("12ms", "latency_ms", Amount(12.0)),
        ("300M", "macs", Amount(3e8)),
        ("1.2G", "macs", Amount(1.2e9)),
        ("1e6B", "weight_bytes", Amount(1e6)),
        ("250us", "latency_ms", Amount(0.25)),
    ],
)
def test_parse_amount(text: str, what: str, expected: Amount) -> None:
    assert parse_amount(text, what) == expected


def test_parse_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--weight-bytes"):
        parse_amount("four megs", "weight_bytes")
    with pytest.raises(ConfigError, match="--max-drop"):
        parse_drop("lots")


@pytest.mark.parametrize(
    ("text", "what", "says"),
    [
        ("0.5", "macs", "ambiguous"), ("1e6", "params", "ambiguous"), ("0x", "macs", "above 0x"),
        ("1.5x", "params", "at most 1x"), ("150%", "macs", "at most 1x"), ("-3M", "macs", "above 0"),
        ("4MB", "macs", "not a unit"), ("12ms", "weight_bytes", "not a unit"), ("300M", "latency_ms", "not a unit"),
    ],
)
def test_one_grammar_refuses(text: str, what: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_amount(text, what)


@pytest.mark.parametrize("text", ["-1", "150%", "100%", "abc", "0.2 furlongs"])
def test_drop_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-drop"):
        parse_drop(text)


def test_drop_units() -> None:
    assert parse_drop("0.2dB") == Amount(0.2) and parse_drop("1pt") == Amount(1.0) and parse_drop(0) == Amount(0.0)


def test_drop_absolute_and_relative() -> None:
    base = Score("top1", 80.0)
    assert Budget(max_drop=parse_drop("0.2")).drop_limit(base) == pytest.approx(0.2)
    assert Budget(max_drop=parse_drop("1%")).drop_limit(base) == pytest.approx(0.8)


def test_checks_are_measured_values() -> None:
    lat = LatencyStats(5.0, 4.0, 6.0, 10, "onnxruntime", 2, "cpu", 1, (1, 3, 8, 8))
    base = Cost(1000, 10_000, 4000, 0, latency=lat)
    new = Cost(500, 6000, 2000, 0, latency=LatencyStats(3.0, 2.5, 3.5, 10, "onnxruntime", 2, "cpu", 1, (1, 3, 8, 8)))
    budget = Budget.from_options(max_drop="0.5", macs="0.5x", weight_bytes="2KB", latency="3.5ms")
    checks = {c.name: c for c in budget.check(base, Score("psnr", 30.0), new, Score("psnr", 29.6))}
    assert checks["max_drop"].met and checks["max_drop"].value == pytest.approx(0.4)
    assert not checks["macs"].met and checks["macs"].limit == 5000
    assert checks["weight_bytes"].met and checks["latency_ms"].met
    assert budget.objective == "latency_ms"


def test_unknown_budget_key() -> None:
    with pytest.raises(ConfigError):
        Budget(limits={"flops": Amount(1.0)})


def test_a_check_reads_as_whole_counts_and_short_drops() -> None:
    """Progress lines printed `weight_bytes 5.124e+04/4.099e+04`; summaries `51236 (limit 40988.8)`."""
    c = ConstraintCheck("weight_bytes", 51236.0, 40988.8, False)
    assert c.amounts() == "51,236/40,989" and c.line() == "weight_bytes: 51,236 (limit 40,989) NOT MET"
    assert ConstraintCheck("max_drop", 0.1234567, 0.5, True).line() == "max_drop: 0.1235 (limit 0.5) met"
    assert ConstraintCheck("latency_ms", 0.41234, 0.48233, True).amounts() == "0.4123/0.4823"
    assert ConstraintCheck("macs", 13_602_816.0, 13_737_984.0, True).amounts() == "13,602,816/13,737,984"


def test_an_amount_shown_to_a_person() -> None:
    """A compress stage's latency share read `1.27625x` in the report's stage table."""
    assert Amount(1.27625, relative=True).shown("latency_ms") == "1.276x"
    assert Amount(21652.0).shown("weight_bytes") == "21,652" and Amount(12.5).shown("latency_ms") == "12.5"
