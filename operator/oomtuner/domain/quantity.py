"""Kubernetes resource quantities: parse them exactly as the API server does, print them readably.

Memory is compared, summed and multiplied all over the operator, so it is handled as whole bytes (int)
once parsed. `parse` accepts exactly the strings apimachinery's `resource.ParseQuantity` accepts
(staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go and suffix.go):

- the same scan: an optional sign, digits with an optional decimal point, a run of the letters
  `eEinumkKMGTP`, an optional sign and digits, and nothing after (no whitespace);
- the same suffixes: binary Ki Mi Gi Ti Pi Ei, decimal n u m k M G T P E, or `e`/`E` and an exponent
  that fits Go's int64 (and is then truncated to int32, as Go does);
- the same odd corners, because the API server has them: a number without digits is zero ("." "+"
  "Mi" "e5"), except where Go's slow path needs digits ("Pi", "Ei", "e-10" and below are rejected);
- values finer than a nano unit round up (away from zero) to 1n.

One deliberate difference: the value must fit. Go caps binary-suffixed values at 2^63-1 and carries
larger decimal ones as big numbers; memory above 2^63-1 bytes is meaningless to the kubelet and the
kernel, so `parse` raises QuantityError for any magnitude above 2^63-1 ("8Ei", "1e19") instead of
capping it, and never builds a huge number to find out.

Cost: one regular expression without backtracking (possessive quantifiers), then arithmetic on at most
the digits written: linear in the length of the text. Floating point is never used.
"""

from __future__ import annotations

import decimal
import functools
import math
import re

MIB = 1024 * 1024
INT64_MAX = 2**63 - 1
# The most memory the operator ever recommends: the largest whole MiB a quantity can hold (8Ei - 1Mi).
MAX_MEMORY = INT64_MAX // MIB * MIB

_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Binary suffixes Go reads as zero without digits: its fast path takes them (precision >= 0); "Pi" and
# "Ei" go the slow path, whose decimal parser needs a digit.
_BINARY_WITHOUT_DIGITS = frozenset({"Ki", "Mi", "Gi", "Ti"})

# Go's scanner (parseQuantityString): sign, digits, optional fraction, suffix letters, sign, digits.
# Possessive quantifiers never backtrack, so a match costs one pass over the text.
_SCAN = re.compile(r"([+-]?+)([0-9]*+)(?:\.([0-9]*+))?+([eEinumkKMGTP]*+[+-]?+[0-9]*+)")
_EXPONENT = re.compile(r"[eE]([+-]?+)([0-9]++)")
_NANO = decimal.Decimal("1e-9")
_SUFFIX_HELP = "use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent like e6"
# A whole-number text longer than this is shortened in messages.
_SHOWN = 40

# Units for humanize, largest first.
_HUMAN_UNITS = [("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)]


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity, or one too large to use; the message quotes it."""


def _shown(text: str) -> str:
    """`text` fit for a one-line message: control characters and lone surrogates escaped, long texts
    shortened."""
    if len(text) > _SHOWN:
        return f"{_shown(text[:_SHOWN - 13])}…({len(text)} characters)"
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def parse(value: str | int | float) -> decimal.Decimal:
    """Parse a quantity into its exact value (a multiple of 1n).

    Accepts every string the API server accepts: "512Mi", "1.5Gi", "1G", "100m", "1e3", "1E-3", "+5",
    "-5", ".5", "5.", and bare ints or floats (YAML may give `memory: 1073741824`).
    Edge cases: values finer than 1n round up (away from zero) to 1n like Go ("0.1n" → 1n); a number
    without digits is 0 where Go reads it so ("Mi", "."); an exponent beyond int32 wraps as in Go.
    Raises QuantityError for what the API server rejects ("", " 1Gi", "12Qi", "1.2.3", "1K", "1e",
    "1e3.5", "Ei", booleans, NaN and infinities) and for magnitudes above 2^63-1 ("8Ei", "1e19",
    1e300), whatever their length.
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: a boolean is not a quantity")
    if isinstance(value, int):
        if abs(value) > INT64_MAX:
            raise QuantityError(f"invalid quantity: {_too_large(value)}")
        return decimal.Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}: not a finite number")
        value = repr(value)
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a string or a number")
    return _parse_text(value)


# The same few quantities ("256Mi", "250m") come back in every pod of a list: short texts are parsed
# once. Decimals are immutable, so sharing them is safe.
_CACHED_LENGTH = 32


def _parse_text(text: str) -> decimal.Decimal:
    if len(text) <= _CACHED_LENGTH:
        return _parse_short(text)
    return _parse_any(text)


@functools.lru_cache(maxsize=4096)
def _parse_short(text: str) -> decimal.Decimal:
    return _parse_any(text)


def _parse_any(text: str) -> decimal.Decimal:
    match = _SCAN.match(text)
    if not text or match is None or match.end() != len(text):
        raise QuantityError(_why_not(text))
    sign, whole, frac, suffix = match[1], match[2], match[3] or "", match[4]
    decimal_exponent, binary_exponent = _suffix(text, suffix)
    if not whole and not frac:
        # Go reads a number without digits as zero on its fast path only.
        fast = binary_exponent in _BINARY_WITHOUT_DIGITS if binary_exponent else decimal_exponent >= -9
        if not fast:
            raise QuantityError(f'invalid quantity "{_shown(text)}": there is no number in it')
        return decimal.Decimal(0)
    digits = (whole + frac).lstrip("0")
    scale = decimal_exponent - len(frac)  # value = digits × 10^scale × 2^binary
    significant = digits.rstrip("0")
    if not significant:
        return decimal.Decimal(0)
    scale += len(digits) - len(significant)
    # 10^(top-1) <= |value| / 2^binary < 10^top, and 2^binary <= 2^60 < 10^19.
    top = len(significant) + scale
    if top > 19:
        raise QuantityError(f'invalid quantity "{_shown(text)}": {_too_large(None)}')
    negative = sign == "-"
    if top + 19 <= -9:  # below 1n whatever the suffix: Go rounds it up to 1n
        return _NANO.copy_negate() if negative else _NANO
    context = decimal.Context(prec=len(significant) + 40, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[])
    amount = context.create_decimal(f"{significant}E{scale}")
    if binary_exponent:
        amount = context.multiply(amount, decimal.Decimal(2 ** _BINARY_SUFFIXES[binary_exponent]))
    amount = amount.quantize(_NANO, rounding=decimal.ROUND_UP, context=context)
    if amount > INT64_MAX:
        raise QuantityError(f'invalid quantity "{_shown(text)}": {_too_large(amount)}')
    return amount.copy_negate() if negative else amount


def _suffix(text: str, suffix: str) -> tuple[int, str | None]:
    """(decimal exponent, binary suffix or None) of a suffix, as suffixHandler.interpret reads it."""
    if suffix in _DECIMAL_SUFFIXES:
        return _DECIMAL_SUFFIXES[suffix], None
    if suffix in _BINARY_SUFFIXES:
        return 0, suffix
    exponent = _EXPONENT.fullmatch(suffix)
    if exponent is None:
        raise QuantityError(f'invalid quantity "{_shown(text)}": unknown suffix "{_shown(suffix)}" ({_SUFFIX_HELP})')
    digits = exponent[2].lstrip("0") or "0"
    magnitude = int(digits) if len(digits) <= 19 else None  # strconv.ParseInt(…, 10, 64)
    negative = exponent[1] == "-"
    if magnitude is None or magnitude > INT64_MAX + (1 if negative else 0):
        raise QuantityError(f'invalid quantity "{_shown(text)}": exponent out of range (at most 19 digits)')
    wrapped = ((-magnitude if negative else magnitude) + 2**31) % 2**32 - 2**31  # Go's int32(parsed)
    return wrapped, None


def _too_large(amount: decimal.Decimal | int | None) -> str:
    """Why a magnitude does not fit; it names the value when it is short enough to read."""
    limit = "more than 2^63-1, the largest quantity that fits in 64 bits"
    if isinstance(amount, int) and abs(amount).bit_length() <= 96:
        return f"{abs(amount)} is {limit}"
    if isinstance(amount, decimal.Decimal) and amount.is_finite() and amount.adjusted() < 30:
        magnitude = abs(amount)
        shown = str(int(magnitude)) if magnitude == magnitude.to_integral_value() else f"{magnitude.normalize():f}"
        return f"{shown} is {limit}"
    return limit


def _why_not(text: str) -> str:
    """A readable reason why `text` does not even scan as a number and a suffix."""
    if not text:
        return 'invalid quantity "": it is empty'
    if text != text.strip():
        return f'invalid quantity "{_shown(text)}": it has leading or trailing whitespace'
    match = _SCAN.match(text)
    end = match.end() if match else 0
    if text[end:end + 1] == "." and (match is None or not match[4]):
        return f'invalid quantity "{_shown(text)}": more than one decimal point'
    rest = text[len(match[1]) + len(match[2]) + (len(match[3]) + 1 if match[3] is not None else 0):] if match else text
    if not any(ch.isdigit() for ch in text[: len(text) - len(rest)]):
        return f'invalid quantity "{_shown(text)}": there is no number in it'
    return f'invalid quantity "{_shown(text)}": unknown suffix "{_shown(rest)}" ({_SUFFIX_HELP})'


def parse_bytes(value: str | int | float) -> int:
    """Parse a quantity into whole bytes, rounding up (away from zero) like Quantity.Value().

    "1.5Gi" → 1610612736, "1k" → 1000, "100m" → 1 (a fraction of a byte is a whole byte), "0" → 0.
    Raises QuantityError like `parse`, so never returns a magnitude above 2^63-1.
    """
    if isinstance(value, str) and len(value) <= _CACHED_LENGTH:
        return _bytes_of_short(value)
    return int(parse(value).to_integral_value(rounding=decimal.ROUND_UP))


@functools.lru_cache(maxsize=4096)
def _bytes_of_short(text: str) -> int:
    return int(_parse_short(text).to_integral_value(rounding=decimal.ROUND_UP))


def problem(field: str, value: str | int | float) -> str | None:
    """`field: what is wrong` when `value` is no quantity, does not fit, or is negative (no resource
    amount may be); None when it is fine."""
    try:
        amount = parse(value)
    except QuantityError as exc:
        return f"{field}: {exc}"
    if amount < 0:
        return f"{field}: must not be negative, got {value!r}"
    return None


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


@functools.lru_cache(maxsize=4096)
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
