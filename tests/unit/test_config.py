"""Operator settings from OOMTUNER_* variables: types, lists, and readable errors. Pure."""

from __future__ import annotations

import pytest

from oomtuner import config
from oomtuner.api import types


def test_defaults() -> None:
    s = config.from_environ({})
    assert s.default_mode == types.Mode.RECOMMEND and s.namespaces == [] and s.cooldown == "10m"
    assert "helm" in s.respected_managers


def test_values_from_environment() -> None:
    s = config.from_environ({"OOMTUNER_NAMESPACES": "a, b,,c", "OOMTUNER_DEFAULT_MODE": "Auto",
                             "OOMTUNER_METRICS_PORT": "9090", "OOMTUNER_STANDALONE": "true"})
    assert s.namespaces == ["a", "b", "c"] and s.default_mode == types.Mode.AUTO
    assert s.metrics_port == 9090 and s.standalone is True


@pytest.mark.parametrize(("var", "value"), [("OOMTUNER_DEFAULT_MODE", "Yolo"), ("OOMTUNER_METRICS_PORT", "99999"),
                                            ("OOMTUNER_LOG_FORMAT", "xml")])
def test_bad_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(config.SettingsError) as err:
        config.from_environ({var: value})
    assert str(err.value).startswith(var)


def test_priority_from_pod_name_is_stable_distinct_and_in_range() -> None:
    a, b = config.priority_from_name("oomtuner-5d8f7-abcde"), config.priority_from_name("oomtuner-5d8f7-fghij")
    assert a == config.priority_from_name("oomtuner-5d8f7-abcde")
    assert a != b and all(1 <= p <= 2**31 - 1 for p in (a, b))


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--priority-from-pod-name", "--standalone"], {"POD_NAME": "x"}, "excludes"),
    (["--priority-from-pod-name", "--priority", "3"], {"POD_NAME": "x"}, "excludes"),
    (["--priority-from-pod-name"], {"POD_NAME": "", "HOSTNAME": ""}, "POD_NAME"),
])
def test_run_rejects_bad_priority_flags(args: list[str], env: dict[str, str], needle: str) -> None:
    from click.testing import CliRunner

    from oomtuner import cli

    result = CliRunner().invoke(cli.main, ["run", *args], env=env)
    assert result.exit_code == 2 and needle in result.output
