"""Kubernetes quantities: parsing exactly as the API server does, and printing bytes back.

The parse tables are taken from apimachinery's own quantity_test.go (TestQuantityParse: valid forms,
rounding to 1n, the binary cap; its `invalid` list), plus the forms the operator's users write.
Everything is pure; hypothesis checks the round trip and monotonicity over the whole int64 range.
"""

from __future__ import annotations

import decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oomtuner.domain import quantity

D = decimal.Decimal
KI, MI, GI = 1024, 1024**2, 1024**3


# (input, exact value) — from quantity_test.go TestQuantityParse, grouped as there.
PARSE_TABLE = [
    # zero in every suffix
    ("0", D(0)),
    ("0n", D(0)),
    ("0m", D(0)),
    ("0Ki", D(0)),
    ("0Mi", D(0)),
    ("0G", D(0)),
    ("0Ti", D(0)),
    # binary suffixes
    ("1Ki", D(1024)),
    ("8Ki", D(8 * 1024)),
    ("7Mi", D(7 * 1024**2)),
    ("6Gi", D(6 * 1024**3)),
    ("5Ti", D(5 * 1024**4)),
    ("4Pi", D(4 * 1024**5)),
    ("3Ei", D(3 * 1024**6)),
    ("100Ti", D(100 * 1024**4)),
    # decimal suffixes
    ("5n", D("5e-9")),
    ("4u", D("4e-6")),
    ("3m", D("3e-3")),
    ("9", D(9)),
    ("8k", D(8000)),
    ("50k", D(50000)),
    ("7M", D(7 * 10**6)),
    ("6G", D(6 * 10**9)),
    ("5T", D(5 * 10**12)),
    ("2P", D(2 * 10**15)),
    ("1E", D(10**18)),
    # decimal exponents
    ("1E-3", D("0.001")),
    ("1e3", D(1000)),
    ("1E6", D(10**6)),
    ("1e9", D(10**9)),
    ("1E18", D(10**18)),
    ("1.3E+6", D(1300000)),
    ("0.5e-2", D("0.005")),
    ("100.035k", D(100035)),
    # things that look like floating point
    ("0.001", D("0.001")),
    ("0.0005k", D("0.5")),
    ("0.5e0", D("0.5")),
    ("10.035M", D(10035000)),
    ("1.2e3", D(1200)),
    ("1.53E12", D("1.53e12")),
    ("9.01", D("9.01")),
    ("7.123456M", D(7123456)),
    ("6.987654321G", D(6987654321)),
    ("1.01E", D("1.01e18")),
    # things that saturate or round (up to 1n, away from zero)
    ("3.001n", D("4e-9")),
    ("1.1E-9", D("2e-9")),
    ("0.0000000001", D("1e-9")),
    ("0.0000000005", D("1e-9")),
    ("0.5e-9", D("1e-9")),
    ("0.9n", D("1e-9")),
    ("0.00000012345", D("124e-9")),
    ("7Ei", D(7 * 2**60)),
    ("9223372036854775807", D(2**63 - 1)),
    ("9.223372036854775807E", D(2**63 - 1)),
    # fractional binary
    ("100.035Ki", D("102435.84")),
    ("0.5Mi", D(512 * 1024)),
    ("0.05Gi", D("53687091.2")),
    # "things written by trolls"
    ("0.000000000001Ki", D("2e-9")),
    (".001", D("0.001")),
    (".0001k", D("0.1")),
    ("1.", D(1)),
    ("1.G", D(10**9)),
    # signs
    ("+5", D(5)),
    ("-5", D(-5)),
    ("-1.5Gi", D(-1610612736)),
    ("+100m", D("0.1")),
    # numbers without digits: Go's fast path reads them as zero (quantity_test.go parses ".")
    (".", D(0)),
    ("-", D(0)),
    ("+", D(0)),
    ("Mi", D(0)),
    ("Ti", D(0)),
    ("e5", D(0)),
    ("e-9", D(0)),
    (".k", D(0)),
    # an exponent is read as Go's int64, then truncated to int32
    ("1e4294967296", D(1)),
    ("1e0000000000000000000000003", D(1000)),
    # long texts: every digit counts, the cost stays linear
    ("0." + "0" * 10_000 + "1", D("1e-9")),
    ("1." + "0" * 10_000 + "1", D("1.000000001")),
    ("0" * 10_000 + "1Mi", D(MI)),
    ("1" + "0" * 10_000 + "e-10000", D(1)),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_TABLE)
def test_parse_gives_the_exact_value(text: str, expected: decimal.Decimal) -> None:
    assert quantity.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # quantity_test.go's invalid list
        "1.1.M",
        "1+1.0M",
        "0.1mi",
        "0.1am",
        "aoeu",
        ".5i",
        "1i",
        "-3.01i",
        "-3.01e-",
        " 1",
        "1 ",
        # and what the operator must reject on its own
        "12Qi",
        "",
        "1.2.3",
        " 1Gi",
        "1K",
        "1e",
        "1e3.5",
        "1gi",
        "1 Gi",
        "1Gi\n",
        "0x10",
        # no digits where Go's slow path needs one
        "Pi",
        "Ei",
        "e-10",
        ".e-10",
        # an exponent beyond int64
        "1e9223372036854775808",
        "1e" + "9" * 5000,
        # values that do not fit in 64 bits
        "8Ei",
        "9Ei",
        "12E",
        "9223372036854775808",
        "1e19",
        "1e2147483647",
        "1" + "0" * 5000,
        "-8Ei",
    ],
)
def test_parse_rejects_what_the_api_server_rejects_or_does_not_fit(text: str) -> None:
    with pytest.raises(quantity.QuantityError) as caught:
        quantity.parse(text)
    message = str(caught.value)
    assert message.startswith("invalid quantity ") and "\n" not in message and len(message) < 300
    assert text[:20].strip() in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("12Qi", 'invalid quantity "12Qi": unknown suffix "Qi"'),
        ("Ei", "there is no number"),
        ("8Ei", r"9223372036854775808 is more than 2\^63-1"),
        ("1e" + "9" * 5000, "exponent out of range"),
        (" 1Gi", "whitespace"),
        ("1.2.3", "more than one decimal point"),
        ("", "empty"),
    ],
)
def test_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(quantity.QuantityError, match=fragment):
        quantity.parse(text)


def test_quantity_error_is_a_value_error() -> None:
    assert issubclass(quantity.QuantityError, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1073741824, D(1073741824)), (0, D(0)), (0.5, D("0.5")), (1e18, D(10**18)), (1.5e-10, D("1e-9"))],
)
def test_parse_accepts_numbers(value: int | float, expected: decimal.Decimal) -> None:
    assert quantity.parse(value) == expected


@pytest.mark.parametrize("value", [True, False, float("nan"), float("inf"), 1e20, 2**63, -(2**63), 10**5000], ids=["true", "false", "nan", "inf", "1e20", "2^63", "-2^63", "10^5000"])
def test_parse_rejects_booleans_non_finite_floats_and_numbers_beyond_int64(value: bool | float) -> None:
    with pytest.raises(quantity.QuantityError):
        quantity.parse(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 536870912),
        ("1.5Gi", 1610612736),
        ("1G", 10**9),
        ("1k", 1000),
        ("100m", 1),  # a fraction of a byte is a whole byte, like Quantity.Value()
        ("1.1", 2),
        ("0", 0),
        ("0.025Ti", 27487790695),  # 27487790694.4 rounded up
        ("-9.01", -10),  # away from zero, as Quantity.RoundUp
        ("7.999999999Ei", 9223372035701854304),  # 7.999999999 × 2^60, rounded up
        ("9223372036854775807", 2**63 - 1),
        (536870912, 536870912),
    ],
)
def test_parse_bytes_rounds_up_to_a_whole_byte(text: str | int, expected: int) -> None:
    assert quantity.parse_bytes(text) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (536870912, "512Mi"),
        (1610612736, "1536Mi"),
        (1073741824, "1Gi"),
        (1000, "1000"),
        (1024, "1Ki"),
        (1025, "1025"),
        (0, "0"),
        (2**60, "1Ei"),
        (-1048576, "-1Mi"),
        (300 * MI, "300Mi"),
        (1001 * GI, "1001Gi"),
    ],
)
def test_format_bytes_uses_the_largest_exact_binary_suffix(n: int, expected: str) -> None:
    assert quantity.format_bytes(n) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1610612736, "1.5Gi"),
        (536870912, "512Mi"),
        (100 * KI, "100Ki"),
        (1000, "1000"),
        (1288490189, "1.2Gi"),
        (GI - 1, "1Gi"),  # 1023.99…Mi would read "1024Mi"
        (0, "0"),
        (-512 * MI, "-512Mi"),
    ],
)
def test_humanize_is_short_and_readable(n: int, expected: str) -> None:
    assert quantity.humanize(n) == expected


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0), (1, MI), (MI, MI), (MI + 1, 2 * MI), (1536 * MI - 5, 1536 * MI)]
)
def test_round_up_mib(n: int, expected: int) -> None:
    assert quantity.round_up_mib(n) == expected


INT64 = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)


@given(INT64)
def test_format_bytes_round_trips_exactly(n: int) -> None:
    text = quantity.format_bytes(n)
    assert quantity.parse(text) == n
    assert quantity.parse_bytes(text) == n


@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(["", "k", "M", "Ki", "Mi", "Gi"]))
def test_parse_bytes_of_a_whole_number_is_exact(n: int, suffix: str) -> None:
    scale = {"": 1, "k": 1000, "M": 10**6, "Ki": KI, "Mi": MI, "Gi": GI}[suffix]
    assert quantity.parse_bytes(f"{n}{suffix}") == n * scale


@given(
    st.decimals(min_value=0, max_value=10**12, places=4, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=10**12, places=4, allow_nan=False, allow_infinity=False),
)
def test_parse_bytes_is_monotone(a: decimal.Decimal, b: decimal.Decimal) -> None:
    low, high = sorted((a, b))
    assert quantity.parse(f"{low:f}") <= quantity.parse(f"{high:f}")
    assert quantity.parse_bytes(f"{low:f}") <= quantity.parse_bytes(f"{high:f}")
    assert quantity.parse_bytes(f"{low:f}") >= low


@given(st.integers(min_value=0, max_value=2**62))
def test_round_up_mib_is_the_smallest_mib_multiple_not_below(n: int) -> None:
    rounded = quantity.round_up_mib(n)
    assert rounded % MI == 0
    assert n <= rounded < n + MI
