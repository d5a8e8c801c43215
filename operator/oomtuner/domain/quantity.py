"""Kubernetes resource quantities: parse them exactly as the API server does, print them readably.

Memory is compared, summed and multiplied all over the operator, so it is handled as whole bytes (int)
once parsed. Parsing follows apimachinery's `resource.ParseQuantity` (staging/src/k8s.io/apimachinery/
pkg/api/resource/quantity.go): an optional sign, digits with an optional decimal point, then one of
the binary suffixes Ki Mi Gi Ti Pi Ei, the decimal suffixes n u m k M G T P E, or an exponent `e3`,
`E-3`, `e+6`. Values finer than a nano unit round up to 1n, binary-suffixed values are capped at
2^63-1, as in Go.

Two deliberate differences from Go, both stricter: a quantity needs at least one digit (Go reads "."
and "Mi" as zero, the API server's OpenAPI pattern rejects them), and a whole-byte value beyond int64
is clamped by `parse_bytes` instead of overflowing.

Floating point is never used for parsing: values are `decimal.Decimal`, exactly as written.
"""

from __future__ import annotations

import decimal
import re

MIB = 1024 * 1024
INT64_MAX = 2**63 - 1

_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# The same split as Go's scanner: a signed number, then a run of suffix letters, an optional sign and
# digits. Whether the suffix means anything is decided afterwards.
_SPLIT = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]*))?(?P<suffix>[eEinumkKMGTP]*[+-]?[0-9]*)"
)
_EXPONENT = re.compile(r"[eE](?P<exp>[+-]?[0-9]+)")
_NANO = decimal.Decimal("1e-9")
_SUFFIX_HELP = "use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent like e6"

# Units for humanize, largest first.
_HUMAN_UNITS = [("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)]


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity; the message quotes the value."""


def parse(value: str | int | float) -> decimal.Decimal:
    """Parse a quantity into its exact value.

    Accepts every form the API server accepts: "512Mi", "1.5Gi", "1G", "100m", "1e3", "1E-3", "+5",
    "-5", ".5", "5.", and bare ints or floats (YAML may give `memory: 1073741824`).
    Edge cases: values finer than 1n round up (away from zero) to 1n like Go ("0.1n" → 1n); binary
    values above 2^63-1 are capped there like Go ("9Ei"); booleans, NaN and infinities are rejected.
    Raises QuantityError for anything else: "", " 1Gi" (whitespace), "12Qi", "1.2.3", "Mi" (no digits),
    "1K" (kilo is lower-case k), "1e" and "1e3.5".
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: a boolean is not a quantity")
    if isinstance(value, int):
        return decimal.Decimal(value)
    text = repr(value) if isinstance(value, float) else value
    if not isinstance(text, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a string or a number")
    match = _SPLIT.fullmatch(text)
    if match is None or not text:
        raise QuantityError(_why_not(text))
    whole, frac, suffix = match["whole"], match["frac"] or "", match["suffix"]
    if not whole and not frac:
        raise QuantityError(f'invalid quantity "{text}": there is no number in it')
    digits = f"{match['sign']}{whole or '0'}.{frac or '0'}"
    binary_exponent: int | None = None
    if suffix in _DECIMAL_SUFFIXES:
        exponent = _DECIMAL_SUFFIXES[suffix]
    elif suffix in _BINARY_SUFFIXES:
        exponent = 0
        binary_exponent = _BINARY_SUFFIXES[suffix]
    elif (exp := _EXPONENT.fullmatch(suffix)) is not None:
        exponent = int(exp["exp"])
        if abs(exponent) > 2**31 - 1:
            raise QuantityError(f'invalid quantity "{text}": exponent {exponent} is out of range')
    else:
        raise QuantityError(f'invalid quantity "{text}": unknown suffix "{suffix}" ({_SUFFIX_HELP})')
    amount = decimal.Decimal(f"{digits}E{exponent}")
    context = decimal.Context(
        prec=len(whole) + len(frac) + 40, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[]
    )
    if binary_exponent is not None:
        amount = context.multiply(amount, decimal.Decimal(2**binary_exponent))
        if abs(amount) > INT64_MAX:
            amount = decimal.Decimal(INT64_MAX).copy_sign(amount)
    exponent_of_amount = amount.as_tuple().exponent
    if isinstance(exponent_of_amount, int) and exponent_of_amount < -9:
        amount = amount.quantize(_NANO, rounding=decimal.ROUND_UP, context=context)
    return amount


def _why_not(text: str) -> str:
    """A readable reason why `text` does not even split into a number and a suffix."""
    if not text:
        return 'invalid quantity "": it is empty'
    if text != text.strip():
        return f'invalid quantity "{text}": it has leading or trailing whitespace'
    number = re.match(r"[+-]?[0-9]*(?:\.[0-9]*)?", text)
    rest = text[number.end() :] if number else text
    if not any(ch.isdigit() for ch in text[: len(text) - len(rest)]):
        return f'invalid quantity "{text}": there is no number in it'
    if rest.startswith("."):
        return f'invalid quantity "{text}": more than one decimal point'
    return f'invalid quantity "{text}": unknown suffix "{rest}" ({_SUFFIX_HELP})'


def parse_bytes(value: str | int | float) -> int:
    """Parse a quantity into whole bytes, rounding up (away from zero) like Quantity.Value().

    "1.5Gi" → 1610612736, "1k" → 1000, "100m" → 1 (a fraction of a byte is a whole byte), "0" → 0.
    Values beyond ±(2^63-1) are clamped there. Raises QuantityError like `parse`.
    """
    amount = parse(value)
    if abs(amount) > INT64_MAX:
        return INT64_MAX if amount > 0 else -INT64_MAX
    return int(amount.to_integral_value(rounding=decimal.ROUND_UP))


def format_bytes(n: int) -> str:
    """Write bytes as an exact quantity with the largest binary suffix that divides them.

    536870912 → "512Mi", 1610612736 → "1536Mi", 1073741824 → "1Gi", 1000 → "1000", 0 → "0",
    -1048576 → "-1Mi". `parse(format_bytes(n)) == n` for every int64.
    """
    if n == 0:
        return "0"
    sign = "-" if n < 0 else ""
    magnitude = abs(n)
    for suffix, size in _HUMAN_UNITS:
        if magnitude % size == 0:
            return f"{sign}{magnitude // size}{suffix}"
    return f"{sign}{magnitude}"


def humanize(n: int) -> str:
    """Write bytes for people: the largest binary unit not above the value, one decimal at most.

    1610612736 → "1.5Gi", 536870912 → "512Mi", 102400 → "100Ki", 1000 → "1000", 1288490189 → "1.2Gi".
    Not exact (use format_bytes where the value must round-trip); never shows "1024Mi" for a value that
    rounds to a whole unit above.
    """
    if n < 0:
        return "-" + humanize(-n)
    for index, (suffix, size) in enumerate(_HUMAN_UNITS):
        if n >= size:
            shown = round(decimal.Decimal(n) / size, 1)
            if shown >= 1024 and index > 0:
                larger_suffix, larger_size = _HUMAN_UNITS[index - 1]
                return _trim(round(decimal.Decimal(n) / larger_size, 1)) + larger_suffix
            return _trim(shown) + suffix
    return str(n)


def _trim(value: decimal.Decimal) -> str:
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def round_up_mib(n: int) -> int:
    """Round bytes up to a whole mebibyte: 1 → 1Mi, 1Mi → 1Mi, 0 → 0. Negative values round towards 0."""
    return -(-n // MIB) * MIB
