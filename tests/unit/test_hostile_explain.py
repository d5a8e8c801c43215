"""`oomtuner explain` against hostile input: every bad file, flag or value is exactly one line on stderr
(`oomtuner: ...`) and exit code 2, never a traceback; every odd but valid one gives exit 0 and an
empty stderr.

Runs the real CLI in-process (click's runner, exceptions not caught, so a traceback fails the test)
on files written to a temporary folder. Nothing is faked. The cases are one table per topic: the
file itself, the shape of the documents, nesting, YAML aliases, numbers, quantities, timestamps,
strings, policies and flags. `test_the_suite_is_large_enough` counts them.
"""

from __future__ import annotations

import copy
import json
import pathlib
import time
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner

from oomtuner import cli, inputs

MI = 1024 * 1024


def pod(name: str = "web-1", *, limit: Any = "256Mi", request: Any = "128Mi", **changes: Any) -> dict[str, Any]:
    """A pod with one OOM-killed container; `changes` maps dotted paths to values put in place."""
    resources: dict[str, Any] = {}
    if request is not None:
        resources["requests"] = {"memory": request, "cpu": "100m"}
    if limit is not None:
        resources["limits"] = {"memory": limit}
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "resources": resources}]},
        "status": {"containerStatuses": [{
            "name": "app", "restartCount": 3,
            "state": {"running": {"startedAt": "2026-11-26T10:05:00Z"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                         "startedAt": "2026-11-26T10:01:00Z", "finishedAt": "2026-11-26T10:04:59Z"}},
        }]},
    }
    for path, value in changes.items():
        put(body, path, value)
    return body


def put(body: Any, path: str, value: Any) -> None:
    """Set `a.b.0.c` in nested dicts and lists."""
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def as_json(doc: Any) -> str:
    return json.dumps(doc)


def as_yaml(doc: Any) -> str:
    return yaml.safe_dump(doc)


def run(args: list[str], stdin: str | bytes | None = None) -> Any:
    return CliRunner().invoke(cli.main, args, input=stdin, catch_exceptions=False)


def assert_clean(result: Any, *, code: int, fragment: str | None = None) -> None:
    """Exit `code`; for 0 an empty stderr, otherwise exactly one line `oomtuner: ...` holding `fragment`."""
    err = result.stderr
    assert "Traceback" not in err and "Traceback" not in result.stdout
    assert result.exit_code == code, (result.exit_code, err[:500], result.stdout[:300])
    if code == 0:
        assert err == "", err[:500]
        return
    lines = err.splitlines()
    assert len(lines) == 1, err[:1000]
    assert lines[0].startswith("oomtuner: ") and len(lines[0]) <= 1100, lines[0][:300]
    assert lines[0].isprintable(), ascii(lines[0][:300])
    if fragment is not None:
        assert fragment in lines[0], lines[0][:500]


def explain_file(tmp_path: pathlib.Path, content: str | bytes, *extra: str, suffix: str = "json",
                 output: str = "json") -> Any:
    path = tmp_path / f"input.{suffix}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return run(["explain", "-f", str(path), "-o", output, *extra])


# ---- the file itself --------------------------------------------------------------------------------

FILES: list[tuple[str, Callable[[], str | bytes], int, str | None]] = [
    ("empty", lambda: "", 2, "empty"),
    ("only-white-space", lambda: " \n\t\n ", 2, "empty"),
    ("binary", lambda: bytes(range(256)) * 4, 2, "not UTF-8"),
    ("latin-1", lambda: '{"kind": "Pod", "metadata": {"name": "caf\xe9"}}'.encode("latin-1"), 2, "not UTF-8"),
    ("utf-16", lambda: as_json(pod()).encode("utf-16"), 2, "not UTF-8"),
    ("utf-8-bom", lambda: b"\xef\xbb\xbf" + as_json(pod()).encode(), 0, None),
    ("nul-in-json", lambda: as_json(pod()).replace('"web-1"', '"web\x00-1"'), 2, "not valid JSON"),
    ("nul-in-yaml", lambda: as_yaml(pod()) + "\x00", 2, "not valid JSON or YAML"),
    ("nul-bytes-only", lambda: b"\x00" * 1000, 2, "not valid JSON or YAML"),
    ("truncated-json", lambda: as_json(pod())[:-10], 2, "not valid JSON"),
    ("trailing-garbage", lambda: as_json(pod()) + "}", 2, "not valid JSON"),
    ("two-json-objects", lambda: as_json(pod()) + as_json(pod()), 2, "not valid JSON"),
    ("yaml-syntax", lambda: "kind: Pod\nmetadata: [\n", 2, "not valid JSON or YAML"),
    ("yaml-tabs", lambda: "kind: Pod\nmetadata:\n\tname: x\n", 2, "not valid JSON or YAML"),
    ("yaml-unknown-tag", lambda: "kind: !!python/object:os.system Pod\n", 2, "not valid JSON or YAML"),
    ("yaml-bad-binary", lambda: "kind: Pod\nx: !!binary 'abcde'\n", 2, "not valid JSON or YAML"),
    ("yaml-13th-month", lambda: "kind: Pod\nx: 2026-13-45\n", 2, "not valid JSON or YAML"),
    ("yaml-unhashable-key", lambda: "kind: Pod\n? [a, b]\n: 1\n", 2, "not valid JSON or YAML"),
    ("yaml-many-documents", lambda: "---\n" * 100_000 + as_yaml(pod()), 0, None),
    ("yaml-too-large", lambda: as_yaml(pod()) + "# " + "x" * (inputs.MAX_YAML_BYTES + 10) + "\n", 2,
     "input.json: YAML larger than 1 MiB: give it as JSON (kubectl get -o json), which is read up to 16 MiB"),
    ("json-too-large", lambda: as_json(pod()) + " " * (inputs.MAX_BYTES + 1), 2, "larger than 16 MiB"),
    ("json-at-the-limit", lambda: as_json(pod()) + " " * (inputs.MAX_BYTES - len(as_json(pod()))), 0, None),
]


@pytest.mark.parametrize(("make", "code", "fragment"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_files(tmp_path: pathlib.Path, make: Callable[[], str | bytes], code: int, fragment: str | None) -> None:
    assert_clean(explain_file(tmp_path, make()), code=code, fragment=fragment)


def test_dev_zero_is_refused_after_the_limit() -> None:
    started = time.monotonic()
    assert_clean(run(["explain", "-f", "/dev/zero"]), code=2, fragment="/dev/zero: larger than 16 MiB")
    assert time.monotonic() - started < 10


def test_a_directory_a_missing_file_and_a_device(tmp_path: pathlib.Path) -> None:
    assert_clean(run(["explain", "-f", str(tmp_path)]), code=2, fragment="is a directory")
    assert_clean(run(["explain", "-f", str(tmp_path / "nope.json")]), code=2, fragment="no such file")
    assert_clean(run(["explain", "-f", "/dev/null"]), code=2, fragment="empty")


def test_stdin_empty_and_too_large() -> None:
    assert_clean(run(["explain", "-f", "-"], stdin=""), code=2, fragment="<stdin>: the file is empty")
    assert_clean(run(["explain", "-f", "-"], stdin=b" " * (inputs.MAX_BYTES + 1)), code=2, fragment="<stdin>: larger than")


def test_all_files_of_one_command_share_the_limit(tmp_path: pathlib.Path) -> None:
    half = as_json(pod()) + " " * (inputs.MAX_BYTES // 2 + 10)
    (tmp_path / "a.json").write_text(half)
    (tmp_path / "b.json").write_text(half)
    assert_clean(run(["explain", "-f", str(tmp_path / "a.json"), "-o", "json"]), code=0)
    assert_clean(run(["explain", "-f", str(tmp_path / "a.json"), "-f", str(tmp_path / "b.json")]), code=2,
                 fragment="b.json: larger than 16 MiB")


# ---- the shape of the documents ---------------------------------------------------------------------

SHAPES: list[tuple[str, Any, int, str | None]] = [
    ("a-number", 42, 2, "got int"),
    ("a-string", "Pod", 2, "got str"),
    ("a-list-of-numbers", [1, 2, 3], 2, "got list"),
    ("a-list-of-pods", [pod()], 2, "got list"),
    ("an-empty-object", {}, 2, "got kind None"),
    ("no-kind", {"metadata": {"name": "x"}}, 2, "got kind None"),
    ("a-deployment", {"kind": "Deployment"}, 2, "Deployment"),
    ("kind-a-list", {"kind": ["Pod"]}, 2, "['Pod']"),
    ("kind-a-huge-string", {"kind": "K" * 100_000}, 2, "KKKK..."),
    ("kind-a-number", {"kind": 1}, 2, "got kind 1"),
    ("list-items-a-dict", {"kind": "List", "items": {"a": 1}}, 2, "List.items must be a list"),
    ("list-items-null", {"kind": "List", "items": None}, 2, "List.items must be a list"),
    ("list-item-a-number", {"kind": "List", "items": [7]}, 2, "items[0] is a int"),
    ("list-item-a-service", {"kind": "List", "items": [pod(), {"kind": "Service"}]}, 2, "items[1] is a 'Service'"),
    ("list-without-items", {"kind": "List"}, 2, "List.items must be a list"),
    ("list-of-nothing", {"kind": "List", "items": []}, 2, "no Pod found"),
    ("podlist", {"kind": "PodList", "items": [pod("a"), pod("b")]}, 0, None),
    ("items-without-kind", {"items": [pod()]}, 0, None),
    ("metadata-a-string", pod(metadata="x"), 2, "metadata"),
    ("spec-a-list", pod(spec=[1]), 2, "spec"),
    ("containers-a-dict", pod(**{"spec.containers": {"name": "app"}}), 2, "spec.containers"),
    ("container-a-string", pod(**{"spec.containers": ["app"]}), 2, "spec.containers[0]"),
    ("container-name-a-number", pod(**{"spec.containers.0.name": 5}), 2, "spec.containers[0].name"),
    ("resources-a-string", pod(**{"spec.containers.0.resources": "lots"}), 2, "spec.containers[0].resources"),
    ("requests-a-list", pod(**{"spec.containers.0.resources.requests": ["1Gi"]}), 2, "requests"),
    ("labels-a-list", pod(**{"metadata.labels": ["a"]}), 2, "metadata.labels"),
    ("label-value-a-dict", pod(**{"metadata.labels": {"a": {"b": "c"}}}), 2, "metadata.labels.a"),
    ("status-a-string", pod(status="Running"), 2, "status"),
    ("statuses-with-a-number", pod(**{"status.containerStatuses": [1]}), 2, "status.containerStatuses[0]"),
    ("restart-count-text", pod(**{"status.containerStatuses.0.restartCount": "three"}), 2, "restartCount"),
    ("restart-count-float", pod(**{"status.containerStatuses.0.restartCount": 2.5}), 2, "restartCount"),
    ("exit-code-a-list", pod(**{"status.containerStatuses.0.lastState.terminated.exitCode": [137]}), 2, "exitCode"),
    ("state-a-number", pod(**{"status.containerStatuses.0.lastState": 1}), 2, "lastState"),
    ("no-spec-no-status", {"kind": "Pod", "metadata": {"name": "bare"}}, 0, None),
    ("null-everywhere", {"kind": "Pod", "metadata": None, "spec": None, "status": None}, 0, None),
    ("status-for-an-unknown-container", pod(**{"status.containerStatuses.0.name": "ghost"}), 0, None),
    ("duplicate-container-names", pod(**{"spec.containers": [{"name": "app"}, {"name": "app"}]}), 0, None),
    ("container-without-a-name", pod(**{"spec.containers": [{"resources": {}}]}), 0, None),
    ("ten-thousand-containers", pod(**{"spec.containers": [{"name": f"c{i}"} for i in range(10_000)]}), 0, None),
]


@pytest.mark.parametrize(("doc", "code", "fragment"), [c[1:] for c in SHAPES], ids=[c[0] for c in SHAPES])
@pytest.mark.parametrize("encode", [as_json, as_yaml], ids=["json", "yaml"])
def test_shapes(tmp_path: pathlib.Path, encode: Callable[[Any], str], doc: Any, code: int, fragment: str | None) -> None:
    assert_clean(explain_file(tmp_path, encode(doc), suffix="yaml"), code=code, fragment=fragment)


def test_a_yaml_stream_with_a_stranger_in_it(tmp_path: pathlib.Path) -> None:
    stream = as_yaml(pod("a")) + "---\n" + as_yaml({"kind": "ConfigMap"}) + "---\n" + as_yaml(pod("b"))
    assert_clean(explain_file(tmp_path, stream, suffix="yaml"), code=2, fragment="'ConfigMap'")


# ---- nesting ----------------------------------------------------------------------------------------

NESTING: list[tuple[str, Callable[[], str], int, str | None]] = [
    ("json-lists-100k", lambda: "[" * 100_000 + "]" * 100_000, 2, "nested too deeply"),
    ("json-objects-100k", lambda: '{"a":' * 100_000 + "1" + "}" * 100_000, 2, "nested too deeply"),
    ("json-deep-in-an-ignored-field", lambda: as_json(pod(x=None)).replace('"x": null', '"x": ' + "[" * 50_000 + "]" * 50_000), 2, "nested too deeply"),
    ("json-900-levels-in-an-ignored-field", lambda: as_json(pod(x=None)).replace('"x": null', '"x": ' + "[" * 900 + "]" * 900), 0, None),
    ("json-deep-in-annotations", lambda: as_json(pod(**{"metadata.annotations": None})).replace('"annotations": null', '"annotations": ' + '{"a":' * 500 + '"b"' + "}" * 500), 2, "metadata.annotations"),
    ("json-deep-in-managed-fields", lambda: as_json(pod(**{"metadata.managedFields": None})).replace('"managedFields": null', '"managedFields": ' + "[" * 20_000 + "]" * 20_000), 2, "nested too deeply"),
    ("yaml-flow-5000", lambda: "kind: Pod\nx: " + "[" * 5000 + "]" * 5000 + "\n", 2, "not valid JSON or YAML"),
    ("yaml-block-1200", lambda: "kind: Pod\nx:\n" + "".join(" " * (i + 1) + "- \n" for i in range(1200)), 2, "not valid JSON or YAML"),
    ("yaml-mappings-1200", lambda: "kind: Pod\n" + "".join(" " * i + "a:\n" for i in range(1200)), 2, "not valid JSON or YAML"),
    ("yaml-500-levels-ignored", lambda: as_yaml(pod()) + "x: " + "[" * 500 + "]" * 500 + "\n", 0, None),
]


@pytest.mark.parametrize(("make", "code", "fragment"), [c[1:] for c in NESTING], ids=[c[0] for c in NESTING])
def test_nesting(tmp_path: pathlib.Path, make: Callable[[], str], code: int, fragment: str | None) -> None:
    started = time.monotonic()
    assert_clean(explain_file(tmp_path, make(), suffix="yaml"), code=code, fragment=fragment)
    assert time.monotonic() - started < 10


# ---- YAML aliases -----------------------------------------------------------------------------------

def _bomb(levels: int, width: int) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "kind: Pod\n" + "\n".join(lines) + "\n"


ALIASES: list[tuple[str, Callable[[], str], int, str | None]] = [
    ("bomb-9x9", lambda: _bomb(9, 9), 2, "YAML aliases"),
    ("bomb-30x2", lambda: _bomb(30, 2), 2, "YAML aliases"),
    ("bomb-of-mappings", lambda: "kind: Pod\na: &a {x: 1, y: 1}\n" + "".join(
        f"b{i}: &b{i} {{p: *{'a' if i == 0 else f'b{i - 1}'}, q: *{'a' if i == 0 else f'b{i - 1}'}}}\n" for i in range(40)), 2, "YAML aliases"),
    ("bomb-through-merge-keys", lambda: "kind: Pod\na: &a {k0: [1,1,1,1,1,1,1,1]}\n" + "".join(
        f"m{i}: &m{i} {{<<: *{'a' if i == 0 else f'm{i - 1}'}, k{i + 1}: [*{'a' if i == 0 else f'm{i - 1}'}, *{'a' if i == 0 else f'm{i - 1}'}]}}\n"
        for i in range(30)), 2, "YAML aliases"),
    ("an-anchor-inside-itself", lambda: "kind: Pod\na: &a [*a]\n", 2, None),
    ("undefined-alias", lambda: "kind: Pod\na: *nope\n", 2, "not valid JSON or YAML"),
    ("a-pod-reused-three-times", lambda: "kind: List\nitems:\n- &p " + json.dumps(pod()) + "\n- *p\n- *p\n", 0, None),
    ("a-small-anchor-reused-often", lambda: as_yaml(pod()) + "r: &r {cpu: 1}\nz: [" + ",".join(["*r"] * 500) + "]\n", 0, None),
]


@pytest.mark.parametrize(("make", "code", "fragment"), [c[1:] for c in ALIASES], ids=[c[0] for c in ALIASES])
def test_aliases(tmp_path: pathlib.Path, make: Callable[[], str], code: int, fragment: str | None) -> None:
    started = time.monotonic()
    assert_clean(explain_file(tmp_path, make(), suffix="yaml"), code=code, fragment=fragment)
    assert time.monotonic() - started < 10


# ---- numbers ----------------------------------------------------------------------------------------

NUMBERS: list[tuple[str, Callable[[], str], int, str | None]] = [
    ("json-5000-digit-integer-ignored", lambda: as_json(pod(x=0)).replace('"x": 0', '"x": ' + "9" * 5000), 2, "more than 4300 digits"),
    ("yaml-5000-digit-integer-ignored", lambda: as_yaml(pod()) + "x: " + "9" * 5000 + "\n", 2, "more than 4300 digits"),
    ("json-4300-digit-integer-ignored", lambda: as_json(pod(x=0)).replace('"x": 0', '"x": ' + "9" * 4300), 0, None),
    ("json-5000-digit-restart-count", lambda: as_json(pod()).replace('"restartCount": 3', '"restartCount": ' + "7" * 5000), 2, "more than 4300 digits"),
    ("json-4000-digit-restart-count", lambda: as_json(pod()).replace('"restartCount": 3', '"restartCount": ' + "7" * 4000), 0, None),
    ("json-100k-digit-float", lambda: as_json(pod(x=0)).replace('"x": 0', '"x": 0.' + "3" * 100_000), 0, None),
    ("json-1e400", lambda: as_json(pod(x=0)).replace('"x": 0', '"x": 1e400'), 0, None),
    ("json-nan-ignored", lambda: as_json(pod(x=0)).replace('"x": 0', '"x": NaN'), 0, None),
    ("json-nan-restart-count", lambda: as_json(pod()).replace('"restartCount": 3', '"restartCount": NaN'), 2, "restartCount"),
    ("json-infinity-exit-code", lambda: as_json(pod()).replace('"exitCode": 137', '"exitCode": Infinity'), 2, "exitCode"),
    ("json-negative-restart-count", lambda: as_json(pod()).replace('"restartCount": 3', '"restartCount": -3'), 0, None),
    ("yaml-hex-and-octal", lambda: as_yaml(pod()) + "x: [0x1F, 0o17, 1_000, .inf, -.nan]\n", 0, None),
]


@pytest.mark.parametrize(("make", "code", "fragment"), [c[1:] for c in NUMBERS], ids=[c[0] for c in NUMBERS])
def test_numbers(tmp_path: pathlib.Path, make: Callable[[], str], code: int, fragment: str | None) -> None:
    assert_clean(explain_file(tmp_path, make(), suffix="yaml"), code=code, fragment=fragment)


# ---- quantities in the pod --------------------------------------------------------------------------

LIMIT = "spec.containers[0].resources.limits.memory"
REQUEST = "spec.containers[0].resources.requests.memory"
QUANTITIES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("limit-12Qi", {"limit": "12Qi"}, 2, f'{LIMIT}: invalid quantity "12Qi": unknown suffix "Qi"'),
    ("limit-1.2.3", {"limit": "1.2.3"}, 2, f"{LIMIT}: invalid quantity"),
    ("limit-8Ei", {"limit": "8Ei"}, 2, f"{LIMIT}: invalid quantity \"8Ei\": 9223372036854775808 is more than 2^63-1"),
    ("limit-9E", {"limit": "9.3E"}, 2, "more than 2^63-1"),
    ("limit-1e19", {"limit": "1e19"}, 2, "more than 2^63-1"),
    ("limit-1e2147483647", {"limit": "1e2147483647"}, 2, "more than 2^63-1"),
    ("limit-exponent-5000-digits", {"limit": "1e" + "9" * 5000}, 2, "exponent out of range"),
    ("limit-100k-digits", {"limit": "1" * 100_000}, 2, "more than 2^63-1"),
    ("limit-a-10MB-fraction", {"limit": "0." + "0" * 10_000_000 + "1"}, 0, None),
    ("limit-negative", {"limit": "-1Gi"}, 2, f"{LIMIT}: must not be negative"),
    ("request-negative-number", {"request": -5}, 2, f"{REQUEST}: must not be negative"),
    ("limit-a-boolean", {"limit": True}, 2, "boolean"),
    ("limit-a-list", {"limit": ["1Gi"]}, 2, "limits.memory"),
    ("limit-a-dict", {"limit": {"v": 1}}, 2, "limits.memory"),
    ("limit-empty", {"limit": ""}, 2, f'{LIMIT}: invalid quantity "": it is empty'),
    ("limit-white-space-is-trimmed", {"limit": " 256Mi\n"}, 0, None),
    ("limit-inner-space", {"limit": "256 Mi"}, 2, "unknown suffix"),
    ("limit-fullwidth-digits", {"limit": "\uff12\uff15\uff16Mi"}, 2, "no number"),
    ("limit-arabic-digits", {"limit": "\u0662Gi"}, 2, "no number"),
    ("limit-nul", {"limit": "1Gi\x00"}, 2, "\\x00"),
    ("limit-zero", {"limit": "0"}, 0, None),
    ("limit-Mi-without-digits", {"limit": "Mi"}, 0, None),
    ("limit-Ei-without-digits", {"limit": "Ei"}, 2, "no number"),
    ("limit-7.99Ei", {"limit": "7.99Ei"}, 0, None),
    ("limit-a-huge-integer", {"limit": 10**40}, 2, "cannot be held"),
    ("limit-a-float", {"limit": 268435456.0}, 0, None),
    ("limit-a-tiny-float", {"limit": 1e-300}, 0, None),
    ("limit-an-exponent-wrapping-int32", {"limit": "1e4294967296"}, 0, None),
    ("cpu-12Qi", {"spec.containers.0.resources.requests.cpu": "12Qi"}, 2, "spec.containers[0].resources.requests.cpu"),
    ("cpu-1e30", {"spec.containers.0.resources.requests.cpu": "1e30"}, 2, "requests.cpu"),
    ("ephemeral-storage-ignored", {"spec.containers.0.resources.requests.ephemeral-storage": "12Qi"}, 0, None),
    ("pod-level-limit", {"spec.resources": {"limits": {"memory": "12Qi"}}}, 2, "spec.resources.limits.memory"),
    ("overhead", {"spec.overhead": {"memory": "-1"}}, 2, "spec.overhead.memory: must not be negative"),
    ("init-container", {"spec.initContainers": [{"name": "i", "resources": {"limits": {"memory": "1Zi"}}}]}, 2,
     "spec.initContainers[0].resources.limits.memory"),
    ("ephemeral-container", {"spec.ephemeralContainers": [{"name": "e", "resources": {"requests": {"memory": "x"}}}]}, 2,
     "spec.ephemeralContainers[0].resources.requests.memory"),
    ("status-resources", {"status.containerStatuses.0.resources": {"limits": {"memory": "8Ei"}}}, 2,
     "status.containerStatuses[0].resources.limits.memory"),
    ("allocated-resources", {"status.containerStatuses.0.allocatedResources": {"memory": "1.5.5"}}, 2,
     "status.containerStatuses[0].allocatedResources.memory"),
]


@pytest.mark.parametrize(("changes", "code", "fragment"), [c[1:] for c in QUANTITIES], ids=[c[0] for c in QUANTITIES])
def test_quantities(tmp_path: pathlib.Path, changes: dict[str, Any], code: int, fragment: str | None) -> None:
    changes = dict(changes)
    body = pod(limit=changes.pop("limit", "256Mi"), request=changes.pop("request", "128Mi"), **changes)
    assert_clean(explain_file(tmp_path, as_json(body)), code=code, fragment=fragment)


def test_a_12Qi_limit_is_never_read_as_best_effort(tmp_path: pathlib.Path) -> None:
    result = explain_file(tmp_path, as_json(pod(limit="12Qi", request=None)))
    assert_clean(result, code=2, fragment=LIMIT)
    assert "BestEffort" not in result.stdout and result.stdout == ""


def test_a_zero_limit_is_no_limit(tmp_path: pathlib.Path) -> None:
    result = explain_file(tmp_path, as_json(pod(limit="0", request="128Mi")))
    assert_clean(result, code=0)
    app = json.loads(result.stdout)["pods"][0]["containers"][0]
    assert app["memoryLimit"] is None and app["kills"][0]["classification"] == "Node"
    assert app["recommendation"]["memoryRequest"] > 128 * MI


def test_a_limit_near_the_top_gives_a_recommendation_that_fits(tmp_path: pathlib.Path) -> None:
    result = explain_file(tmp_path, as_json(pod(limit="7.99Ei", request="7Ei")))
    assert_clean(result, code=0)
    rec = json.loads(result.stdout)["pods"][0]["containers"][0]["recommendation"]
    assert 7 * 2**60 <= rec["memoryRequest"] <= rec["memoryLimit"] <= 2**63 - 1
    assert rec["phase"] == "Capped" and "largest memory a quantity holds" in rec["reason"]


# ---- timestamps -------------------------------------------------------------------------------------

FINISHED = "status.containerStatuses.0.lastState.terminated.finishedAt"
TIMES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("finished-at-9999-minus-23-59", {FINISHED: "9999-12-31T23:59:59-23:59"}, 2, "lastState.terminated.finishedAt"),
    ("finished-at-year-1-plus-23-59", {FINISHED: "0001-01-01T00:00:00+23:59"}, 2, "outside the years 1 to 9999"),
    ("finished-at-text", {FINISHED: "yesterday"}, 2, "finishedAt"),
    ("finished-at-13th-month", {FINISHED: "2026-13-45T00:00:00Z"}, 2, "finishedAt"),
    ("finished-at-year-10000", {FINISHED: "10000-01-01T00:00:00Z"}, 2, "finishedAt"),
    ("finished-at-a-list", {FINISHED: ["2026-11-26T10:04:59Z"]}, 2, "finishedAt"),
    ("finished-at-a-huge-number", {FINISHED: 10**30}, 2, "finishedAt"),
    ("finished-at-empty", {FINISHED: ""}, 0, None),
    ("finished-at-nanoseconds", {FINISHED: "2026-11-26T10:04:59.123456789Z"}, 0, None),
    ("finished-at-an-offset", {FINISHED: "2026-11-26T12:04:59+02:00"}, 0, None),
    ("started-at-extreme", {"status.containerStatuses.0.lastState.terminated.startedAt": "9999-12-31T23:59:59-23:59"}, 2, "startedAt"),
    ("creation-extreme", {"metadata.creationTimestamp": "0001-01-01T00:00:00+01:00"}, 2, "metadata.creationTimestamp"),
]


@pytest.mark.parametrize(("changes", "code", "fragment"), [c[1:] for c in TIMES], ids=[c[0] for c in TIMES])
def test_timestamps(tmp_path: pathlib.Path, changes: dict[str, Any], code: int, fragment: str | None) -> None:
    assert_clean(explain_file(tmp_path, as_json(pod(**changes))), code=code, fragment=fragment)


# ---- strings ----------------------------------------------------------------------------------------

STRINGS: list[tuple[str, str, str, int, str | None]] = [
    ("lone-surrogate-name-table", '"name": "web-\\ud800"', "table", 0, None),
    ("lone-surrogate-name-json", '"name": "web-\\ud800"', "json", 0, None),
    ("reversed-pair-table", '"name": "\\udc00\\ud800"', "table", 0, None),
    ("surrogate-in-a-key", '"\\ud800": 1, "name": "x"', "table", 0, None),
    ("surrogate-in-the-kind", '"name": "x"}, "kind": "\\ud800Pod", "x": {"y": 1', "table", 2, "\ufffdPod"),
    ("escape-sequences-in-the-kind", '"name": "x"}, "kind": "\\u001b[31mred\\n", "x": {"y": 1', "table", 2, "\\x1b[31mred\\n"),
    ("newline-in-a-name-table", '"name": "web\\nevil"', "table", 0, None),
    ("bidi-override-in-an-error", '"name": "x"}, "kind": "\\u202ePod", "x": {"y": 1', "table", 2, "\\u202e"),
    ("nul-escape-in-a-name", '"name": "web\\u0000"', "table", 0, None),
    ("emoji-name", '"name": "web-\\ud83d\\ude00"', "table", 0, None),
    ("ten-megabyte-name", '"name": "' + "n" * 10_000_000 + '"', "json", 0, None),
]


@pytest.mark.parametrize(("name_field", "output", "code", "fragment"), [c[1:] for c in STRINGS], ids=[c[0] for c in STRINGS])
def test_strings(tmp_path: pathlib.Path, name_field: str, output: str, code: int, fragment: str | None) -> None:
    text = as_json(pod()).replace('"name": "web-1"', name_field, 1)
    result = explain_file(tmp_path, text, "--node-memory", "16Gi", output=output)
    assert_clean(result, code=code, fragment=fragment)
    if code == 0 and output == "json":
        json.loads(result.stdout)


def test_a_lone_surrogate_becomes_the_replacement_character(tmp_path: pathlib.Path) -> None:
    result = explain_file(tmp_path, as_json(pod()).replace('"web-1"', '"web-\\ud800"', 1))
    assert json.loads(result.stdout)["pods"][0]["name"] == "web-\ufffd"


# ---- policies ---------------------------------------------------------------------------------------

def policy(**memory: Any) -> dict[str, Any]:
    return {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"memory": memory}}


POLICIES: list[tuple[str, Any, int, str | None]] = [
    ("max-limit-one-byte", policy(maxLimit=1), 2, "spec.memory.maxLimit: '1' is 1 byte(s), less than 1Mi"),
    ("max-limit-1e1000000", policy(maxLimit="1e1000000"), 2, "spec.memory.maxLimit: invalid quantity"),
    ("max-limit-12Qi", policy(maxLimit="12Qi"), 2, 'spec.memory.maxLimit: invalid quantity "12Qi"'),
    ("max-limit-negative", policy(maxLimit="-1Gi"), 2, "must not be negative"),
    ("max-limit-zero", policy(maxLimit="0"), 2, "less than 1Mi"),
    ("max-limit-8Ei", policy(maxLimit="8Ei"), 2, "more than 2^63-1"),
    ("max-limit-huge-integer", policy(maxLimit=10**30), 2, "more than 2^63-1"),
    ("min-increase-negative", policy(minIncrease="-64Mi"), 2, "spec.memory.minIncrease: must not be negative"),
    ("min-increase-100k-digits", policy(minIncrease="9" * 100_000), 2, "spec.memory.minIncrease"),
    ("increase-factor-below-one", policy(increaseFactor=0.5), 2, "increaseFactor"),
    ("increase-factor-infinite", policy(increaseFactor=float("inf")), 2, "increaseFactor"),
    ("margin-a-string", policy(margin="lots"), 2, "margin"),
    ("an-unknown-field", policy(maxLimt="1Gi"), 2, "maxLimt"),
    ("cooldown-forever", {**policy(), "spec": {"cooldown": "forever"}}, 2, "cooldown"),
    ("two-policies", [policy(), policy()], 2, "expected one OOMPolicy"),
    ("a-pod-as-policy", pod(), 2, "expected one OOMPolicy"),
    ("max-limit-1Mi", policy(maxLimit="1Mi"), 0, None),
]


@pytest.mark.parametrize(("doc", "code", "fragment"), [c[1:] for c in POLICIES], ids=[c[0] for c in POLICIES])
def test_policies(tmp_path: pathlib.Path, doc: Any, code: int, fragment: str | None) -> None:
    (tmp_path / "pod.json").write_text(as_json(pod()))
    text = "---\n".join(as_yaml(d) for d in doc) if isinstance(doc, list) else as_json(doc)
    (tmp_path / "policy.yaml").write_text(text)
    result = run(["explain", "-f", str(tmp_path / "pod.json"), "--policy", str(tmp_path / "policy.yaml")])
    assert_clean(result, code=code, fragment=fragment)


# ---- flags and click's usage errors -----------------------------------------------------------------

FLAGS: list[tuple[str, list[str], int, str | None]] = [
    ("no-command", [], 0, None),
    ("unknown-command", ["explode"], 2, "No such command 'explode'"),
    ("explain-without-file", ["explain"], 2, "Missing option '-f'"),
    ("explain-bad-output", ["explain", "-f", "x", "-o", "xml"], 2, "'xml' is not one of"),
    ("explain-unknown-flag", ["explain", "-f", "x", "--frobnicate"], 2, "No such option '--frobnicate'"),
    ("explain-flag-without-value", ["explain", "-f"], 2, "requires an argument"),
    ("node-memory-12Qi", ["explain", "-f", "POD", "--node-memory", "12Qi"], 2, "--node-memory: invalid quantity"),
    ("node-memory-zero", ["explain", "-f", "POD", "--node-memory", "0"], 2, "--node-memory: must be more than 0"),
    ("node-memory-negative", ["explain", "-f", "POD", "--node-memory", "-1Gi"], 2, "--node-memory: must be more than 0"),
    ("node-memory-8Ei", ["explain", "-f", "POD", "--node-memory", "8Ei"], 2, "--node-memory: invalid quantity"),
    ("node-memory-huge-exponent", ["explain", "-f", "POD", "--node-memory", "1e9223372036854775808"], 2, "exponent out of range"),
    ("node-memory-escape", ["explain", "-f", "POD", "--node-memory", "1\x1b[2J"], 2, "\\x1b[2J"),
    ("approve-without-ref", ["approve"], 2, "Missing argument 'NAMESPACE/NAME'"),
    ("approve-without-slash", ["approve", "shop"], 2, "expected NAMESPACE/NAME"),
    ("approve-empty-name", ["approve", "shop/"], 2, "expected NAMESPACE/NAME"),
    ("approve-timeout-text", ["approve", "a/b", "--timeout", "soon"], 2, "'soon' is not a valid float"),
    ("approve-timeout-negative", ["approve", "a/b", "--timeout", "-1"], 2, "--timeout"),
    ("approve-timeout-nan", ["approve", "a/b", "--timeout", "nan"], 2, "--timeout"),
    ("report-top-zero", ["report", "--top", "0"], 2, "--top"),
    ("report-bad-output", ["report", "-o", "xml"], 2, "'xml' is not one of"),
    ("report-request-timeout-text", ["report", "--request-timeout", "soon"], 2, "--request-timeout"),
    ("report-request-timeout-zero", ["report", "--request-timeout", "0s"], 2, "--request-timeout: must be more than 0"),
    ("report-prometheus-timeout-text", ["report", "--prometheus-timeout", "soon"], 2, "--prometheus-timeout: String should match pattern"),
    ("run-both-namespace-flags", ["run", "-n", "a", "-A"], 2, "exclude each other"),
    ("run-metrics-port-too-large", ["run", "--metrics-port", "70000"], 2, "--metrics-port"),
    ("run-metrics-address-a-name", ["run", "--metrics-address", "localhost"], 2, "--metrics-address: an IP address to listen on"),
    ("run-liveness-address-garbage", ["run", "--liveness-address", "1.2.3.4.5"], 2, "--liveness-address: an IP address"),
    ("run-culprit-names-some", ["run", "--culprit-names", "some"], 2, "'some' is not one of 'same-namespace', 'all'"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), [c[1:] for c in FLAGS], ids=[c[0] for c in FLAGS])
def test_flags(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, fragment: str | None) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    (tmp_path / "pod.json").write_text(as_json(pod()))
    args = [str(tmp_path / "pod.json") if a == "POD" else a for a in args]
    result = run(args)
    if not args:  # the bare command prints its help
        assert result.exit_code in (0, 2) and "Usage" in result.stdout + result.stderr
        return
    assert_clean(result, code=code, fragment=fragment)


# ---- cost -------------------------------------------------------------------------------------------

def test_400_containers_and_400_sidecars_take_well_under_a_second_each_hundred(tmp_path: pathlib.Path) -> None:
    body = pod()
    app = body["spec"]["containers"][0]
    status = body["status"]["containerStatuses"][0]
    body["spec"]["containers"] = [{**copy.deepcopy(app), "name": f"c{i}"} for i in range(400)]
    body["spec"]["initContainers"] = [{**copy.deepcopy(app), "name": f"s{i}", "restartPolicy": "Always"} for i in range(400)]
    body["status"]["containerStatuses"] = [{**copy.deepcopy(status), "name": f"c{i}"} for i in range(400)]
    body["status"]["initContainerStatuses"] = [{**copy.deepcopy(status), "name": f"s{i}"} for i in range(400)]
    started = time.monotonic()
    result = explain_file(tmp_path, as_json(body), "--node-memory", "16Gi")
    elapsed = time.monotonic() - started
    assert_clean(result, code=0)
    containers = json.loads(result.stdout)["pods"][0]["containers"]
    assert len(containers) == 800 and all(c["recommendation"] for c in containers)
    assert elapsed < 8, elapsed  # 31 s before the index; about 0.5 s on an idle machine


# ---- the size of the suite --------------------------------------------------------------------------

def test_the_suite_is_large_enough() -> None:
    tables = [FILES, NESTING, ALIASES, NUMBERS, QUANTITIES, TIMES, STRINGS, POLICIES, FLAGS]
    cases = sum(len(t) for t in tables) + 2 * len(SHAPES)
    assert cases >= 150, cases
