"""The CRDs in crds/ are exactly what the pydantic models generate, and have the shape the API
server needs (structural: no $ref, no defaults, int-or-string quantities). Pure: no cluster."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator

import pytest
import yaml

from oomtuner import crdgen
from oomtuner.api import crd

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models() -> None:
    rendered = crdgen.render()
    on_disk = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert sorted(on_disk) == sorted(rendered), "run `oomtuner crds` to regenerate crds/"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"crds/{name} is stale: run `oomtuner crds`"


def _walk(node: object, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_schemas_are_structural() -> None:
    for name, body in crd.definitions().items():
        schema = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        text = json.dumps(schema)
        assert "$ref" not in text and "$defs" not in text, name
        for path, node in _walk(schema):
            assert "default" not in node, f"{name}{path} has a default"
            assert "title" not in node, f"{name}{path}"
            if node.get("x-kubernetes-int-or-string"):
                assert "type" not in node, f"{name}{path}"
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
            elif "properties" in node:
                assert node.get("type") == "object", f"{name}{path} lacks type: object"


def test_names_columns_and_subresources() -> None:
    bodies = {b["spec"]["names"]["kind"]: b for b in crd.definitions().values()}
    pol, rec = bodies["OOMPolicy"], bodies["OOMRecommendation"]
    assert pol["spec"]["names"]["shortNames"] == ["oompol"]
    assert rec["spec"]["names"]["shortNames"] == ["oomrec"]
    for b in (pol, rec):
        version = b["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert b["spec"]["names"]["categories"] == ["oomtuner"]
    columns = [c["name"] for c in rec["spec"]["versions"][0]["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Target", "Kills", "Current", "Recommended", "Phase", "Age"]


def test_policy_schema_validations() -> None:
    body = next(b for b in crd.definitions().values() if b["spec"]["names"]["kind"] == "OOMPolicy")
    spec = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    memory = spec["properties"]["memory"]["properties"]
    assert memory["increaseFactor"]["minimum"] == 1 and memory["increaseFactor"]["exclusiveMinimum"] is True
    assert (memory["margin"]["minimum"], memory["margin"]["maximum"]) == (0, 1)
    assert memory["maxLimit"]["x-kubernetes-int-or-string"] is True and "pattern" in memory["maxLimit"]
    assert spec["properties"]["mode"]["enum"] == ["Observe", "Recommend", "Auto"]
    assert memory["requestPolicy"]["enum"] == ["KeepRatio", "EqualsLimit", "Unchanged", "FromUsage"]
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    assert any("increaseFactor > 1.0" in r for r in rules)
    settle = memory["settle"]["properties"]
    assert settle["enabled"]["type"] == "boolean" and (settle["margin"]["minimum"], settle["margin"]["maximum"]) == (0, 1)
    assert settle["after"]["pattern"] and settle["after"]["maxLength"] == 64
    assert all(field["description"] for field in settle.values())
    assert any("self.memory.settle.after.matches('[1-9]')" in r for r in rules)


def test_chart_templates_are_the_crds_generated() -> None:
    """The chart's templates/crds/ are what `oomtuner crds --chart` writes (tests/chart renders them
    with helm and compares them with crds/); its crds/ folder keeps only kopf's peering CRDs."""
    chart = ROOT / "deploy" / "helm" / "oomtuner"
    on_disk = {p.name: p.read_text() for p in (chart / crdgen.CHART_TEMPLATES).glob("*.yaml")}
    assert on_disk == crdgen.chart_templates(), "run `make crds` to regenerate the chart's templates/crds/"
    assert not set(on_disk) & {p.name for p in (chart / "crds").glob("*.yaml")}, "a CRD in both crds/ and templates/"


def test_chart_template_wraps_the_file_and_refuses_template_actions() -> None:
    text = crdgen.render()[f"{crd.policy.GROUP}_{crd.policy.PLURAL}.yaml"]
    template = crdgen.chart_template(text)
    assert template.startswith("{{- if .Values.crds.enabled }}\n") and template.endswith("{{- end }}\n")
    assert "    helm.sh/resource-policy: keep\n" in template
    for bad in ("metadata:\n  name: a{{ x }}\n", "kind: X\n"):
        with pytest.raises(ValueError):
            crdgen.chart_template(bad)


def _fields(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of a schema (what `kubectl explain` lists), with its path."""
    for key, sub in (node.get("properties") or {}).items():
        yield f"{path}.{key}", sub
        yield from _fields(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _fields(node["items"], f"{path}[]")


def test_every_field_has_a_description() -> None:
    """`kubectl explain oomrecommendation.status.kills` says what each field is: a new field needs a
    description (pydantic's Field(description=...), or the model's docstring)."""
    missing = []
    for name, body in crd.definitions().items():
        schema = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema.get("description"), name
        # metadata may hold nothing but its type (the API server describes ObjectMeta itself).
        missing += [f"{name}: {path}" for path, node in _fields(schema)
                    if path != ".metadata" and not str(node.get("description") or "").strip()]
    assert not missing, "\n".join(missing)


def test_times_are_date_time() -> None:
    """Every time field is declared `format: date-time`, which the API server checks on write."""
    times = []
    for name, body in crd.definitions().items():
        schema = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _fields(schema):
            leaf = path.rsplit(".", 1)[-1]
            if leaf in ("at", "lastTransitionTime") or (leaf.endswith("At") and node.get("type") == "string"):
                times.append(path)
                assert node.get("format") == "date-time", f"{name}{path}: {node}"
    assert {".status.kills[].at", ".status.appliedAt", ".status.nextAttemptAt", ".status.changes[].at"} <= set(times)


def test_crd_yaml_parses() -> None:
    for text in crdgen.render().values():
        doc = yaml.safe_load(text)
        assert doc["kind"] == "CustomResourceDefinition"


def test_every_string_list_and_map_is_bounded() -> None:
    """Anyone with `edit` may write these objects: nothing in them may grow without a bound
    (README, "Size bounds"). A new field needs a maxLength, maxItems or maxProperties."""
    unbounded = []
    for name, body in crd.definitions().items():
        schema = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            if path in (".properties.apiVersion", ".properties.kind", ".properties.metadata") or path.endswith(".anyOf[0]") \
                    or path.endswith(".anyOf[1]"):
                continue
            kind = node.get("type")
            if (kind == "string" or node.get("x-kubernetes-int-or-string")) and not (
                    "maxLength" in node or "enum" in node or node.get("format") == "date-time"):
                unbounded.append(f"{name}{path}: a string without maxLength")
            if kind == "array" and "maxItems" not in node:
                unbounded.append(f"{name}{path}: a list without maxItems")
            if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
                unbounded.append(f"{name}{path}: a map without maxProperties")
    assert not unbounded, "\n".join(unbounded)
