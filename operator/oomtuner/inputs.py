"""Reading the JSON and YAML files a user hands the CLI, as hostile input: bounded in size, nesting
and expansion, and every failure one readable line.

`oomtuner explain -f` takes what `kubectl get -o json|yaml` prints, but also whatever else is
put in front of it: `/dev/zero`, a 50 MB list, a 467-byte YAML alias bomb that would expand to
gigabytes, nesting thousands of levels deep in a field nobody reads, a number of ten thousand
digits. So before anything looks at a document:

- at most `MAX_BYTES` are read from a file or stdin, all files of one command together (one more
  byte means "too large", so an endless stream stops there);
- the bytes must be UTF-8 (a BOM is allowed);
- YAML only up to `MAX_YAML_BYTES`: PyYAML builds its objects in Python even with libyaml's parser,
  at about 1 MB a second on our machines (bench/README.md), so a larger list is asked for as JSON, which Python's
  parser reads a hundred times faster;
- JSON goes to Python's parser, YAML to libyaml's safe loader; both stop at about `MAX_DEPTH`
  levels of nesting (Python's recursion limit, libyaml's own limit), and a deeper document (or an
  integer of more than 4300 digits, Python's own limit) becomes an InputError, not a
  RecursionError or a ValueError;
- a document that may hold YAML aliases (the text has an anchor, `&`) or escaped surrogates (`\\ud800`)
  is walked once, without recursion: more values than the text could hold without aliases is
  refused (a document may reuse an anchor, not multiply itself), and lone surrogates get U+FFFD in
  their place, as Go's decoder does, so that no later output chokes on them. Other documents need no
  walk: without anchors nothing repeats, and UTF-8 text holds no surrogates.

The bounds are generous for what Kubernetes prints: a 16 MiB limit holds a List of thousands of
pods, and no object of the API nests hundreds of levels deep. `bench/README.md` has the time and
memory this costs for the largest inputs.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
from typing import IO, Any

import yaml

MAX_BYTES = 16 * 1024 * 1024
MAX_YAML_BYTES = 1024 * 1024
MAX_DEPTH = 1000
# Values the walk may meet beyond one per byte of text, for small documents that reuse an anchor.
_SPARE_VALUES = 10_000
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\[uU]0*[dD][89a-fA-F]")
_REPLACEMENT = "\ufffd"


class InputError(ValueError):
    """Unreadable or invalid input; the message names the file and the problem, on one line."""


class Budget:
    """How many bytes the files of one command may still take together."""

    def __init__(self, limit: int = MAX_BYTES):
        self.limit = limit
        self.left = limit

    def take(self, data: bytes, *, source: str) -> None:
        if len(data) > self.left:
            raise InputError(f"{source}: larger than {_mib(self.limit)} (the most one command reads)")
        self.left -= len(data)


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB"


def read_bytes(path: str, *, stdin: IO[Any] | None = None, budget: Budget | None = None) -> tuple[str, bytes]:
    """(source name, bytes) of a path, or of stdin for `-`; at most the budget's bytes are read."""
    budget = budget or Budget()
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin
        binary = getattr(stream, "buffer", stream)
        data = binary.read(budget.left + 1)
        if isinstance(data, str):  # a text stream without a buffer (tests)
            data = data.encode("utf-8", "surrogatepass")
        source = "<stdin>"
    else:
        source = path
        try:
            with pathlib.Path(path).open("rb") as f:
                data = f.read(budget.left + 1)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    budget.take(data, source=source)
    return source, data


def decode(data: bytes, *, source: str) -> str:
    """The text of UTF-8 bytes (a leading BOM dropped); InputError names the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}") from None


def documents(text: str, *, source: str) -> list[Any]:
    """The documents of a JSON text (one) or a YAML stream (any number, empty ones dropped), checked
    by `check`. Raises InputError for anything that is not valid, or too deep, or too large."""
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{source}: the file is empty")
    as_json = stripped.startswith(("{", "["))
    if not as_json and len(text) > MAX_YAML_BYTES:
        raise InputError(f"{source}: YAML larger than {_mib(MAX_YAML_BYTES)}: give it as JSON "
                         f"(kubectl get -o json), which is read up to {_mib(MAX_BYTES)}")
    try:
        if as_json:
            docs = [json.loads(text)]
        else:
            docs = [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]
    except RecursionError:
        raise InputError(f"{source}: nested too deeply (about {MAX_DEPTH} levels at the most)") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{source}: not valid JSON or YAML: {_first_line(exc)}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a 5000-digit integer, a 13th month in a YAML date
        why = "a number of more than 4300 digits" if "4300" in str(exc) else _first_line(exc)
        raise InputError(f"{source}: not valid JSON or YAML: {why}") from None
    if "&" not in text and not _SURROGATE_ESCAPE.search(text):
        return docs
    return [check(doc, source=source, size=len(text)) for doc in docs]


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check(doc: Any, *, source: str, size: int) -> Any:
    """`doc` with lone surrogates replaced, after one walk without recursion that refuses nesting
    deeper than MAX_DEPTH and more values than `size` bytes of text can hold (plus a few thousand for
    small documents that reuse YAML anchors). Raises InputError."""
    allowed = size + _SPARE_VALUES
    seen = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > allowed:
            raise InputError(
                f"{source}: expands to more than {allowed} values, more than its {size} characters hold "
                "(YAML aliases that repeat an anchor many times over?)"
            )
        if depth > MAX_DEPTH:
            raise InputError(f"{source}: nested too deeply (about {MAX_DEPTH} levels at the most)")
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    del node[key]
                    key = _SURROGATE.sub(_REPLACEMENT, key)
                    node[key] = value
                if isinstance(value, str):
                    node[key] = _clean(value)
                    seen += 1
                else:
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = _clean(value)
                    seen += 1
                else:
                    stack.append((value, depth + 1))
    return _clean(doc) if isinstance(doc, str) else doc


def _clean(text: str) -> str:
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(_REPLACEMENT, text)
