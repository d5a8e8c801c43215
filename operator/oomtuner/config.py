"""The operator's settings: one typed object, loaded from `OOMTUNER_*` environment variables.

Command-line flags of `oomtuner run` override the environment. Every attribute is documented here;
the README's table is generated from the same names.
"""

from __future__ import annotations

import ipaddress
import os
import zlib
from typing import Mapping

import pydantic

from oomtuner.api import types
from oomtuner.domain import quantity, redaction

PREFIX = "OOMTUNER_"

# Field managers whose ownership of a workload's resources the operator respects instead of taking
# it over: GitOps controllers and Helm would put the old value back, so fighting them is pointless.
DEFAULT_RESPECTED_MANAGERS = (
    "helm",
    "helm-controller",
    "kustomize-controller",
    "argocd-controller",
    "argocd-application-controller",
    "argo-cd",
)


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    namespaces: list[str] = pydantic.Field(
        default_factory=list, description="Namespaces to watch (OOMTUNER_NAMESPACES, comma-separated). Empty: all."
    )
    default_mode: types.Mode = pydantic.Field(
        default=types.Mode.RECOMMEND, description="Mode where no OOMPolicy selects a workload (OOMTUNER_DEFAULT_MODE)."
    )
    prometheus_url: str | None = pydantic.Field(
        default=None, description="Prometheus base URL for usage history (OOMTUNER_PROMETHEUS_URL)."
    )
    prometheus_bearer_token_file: str | None = pydantic.Field(
        default=None,
        description="File holding a bearer token for Prometheus, read on every query (OOMTUNER_PROMETHEUS_BEARER_TOKEN_FILE).",
    )
    prometheus_ca_file: str | None = pydantic.Field(
        default=None, description="CA bundle that signs Prometheus' TLS certificate (OOMTUNER_PROMETHEUS_CA_FILE)."
    )
    prometheus_timeout: str = pydantic.Field(
        default="5s", pattern=types.DURATION_PATTERN,
        description="Bound of one whole Prometheus query, from the connect to the last byte (OOMTUNER_PROMETHEUS_TIMEOUT).",
    )
    prometheus_max_response: str = pydantic.Field(
        default="16Mi", pattern=types.QUANTITY_PATTERN,
        description="Largest Prometheus answer read; a larger one is refused before it is parsed (OOMTUNER_PROMETHEUS_MAX_RESPONSE).",
    )
    prometheus_backoff: str = pydantic.Field(
        default="30s", pattern=types.DURATION_PATTERN,
        description="After a failed query, how long no query is sent (OOMTUNER_PROMETHEUS_BACKOFF).",
    )
    prometheus_max_points: int = pydantic.Field(
        default=2000, ge=10, le=11000,
        description="Most points per series of a range query (OOMTUNER_PROMETHEUS_MAX_POINTS); 2000 gives a 1h life 12 samples over 7d.",
    )
    prometheus_min_step: str = pydantic.Field(
        default="30s", pattern=types.DURATION_PATTERN,
        description="Finest step of range queries and subqueries (OOMTUNER_PROMETHEUS_MIN_STEP).",
    )
    metrics_port: int = pydantic.Field(default=8080, ge=0, le=65535, description="Port of /metrics (OOMTUNER_METRICS_PORT); 0 disables.")
    liveness_port: int = pydantic.Field(default=8081, ge=0, le=65535, description="Port of /healthz (OOMTUNER_LIVENESS_PORT); 0 disables.")
    metrics_address: str = pydantic.Field(
        default="0.0.0.0", description="IP address /metrics listens on (OOMTUNER_METRICS_ADDRESS); 0.0.0.0: every address."
    )
    liveness_address: str = pydantic.Field(
        default="0.0.0.0", description="IP address /healthz listens on (OOMTUNER_LIVENESS_ADDRESS); 0.0.0.0: every address."
    )
    culprit_names: redaction.CulpritNames = pydantic.Field(
        default=redaction.CulpritNames.SAME_NAMESPACE,
        description="Whose names a Node kill's culprit may carry into the victim's namespace (OOMTUNER_CULPRIT_NAMES): "
        "same-namespace (a culprit in another namespace is given by its figures only) or all.",
    )
    log_format: str = pydantic.Field(
        default="auto", pattern=r"^(auto|json|text)$", description="json, text, or auto: JSON when not on a terminal (OOMTUNER_LOG_FORMAT)."
    )
    log_level: str = pydantic.Field(default="INFO", description="OOMTUNER_LOG_LEVEL.")
    cooldown: str = pydantic.Field(default="10m", description="Cooldown where no policy sets one (OOMTUNER_COOLDOWN).")
    node_oom_window: str = pydantic.Field(
        default="2m", description="How close a node's SystemOOM must be to a kill to call it a Node kill (OOMTUNER_NODE_OOM_WINDOW)."
    )
    respected_managers: list[str] = pydantic.Field(
        default_factory=lambda: list(DEFAULT_RESPECTED_MANAGERS),
        description="Field managers whose resources the operator never takes over (OOMTUNER_RESPECTED_MANAGERS).",
    )
    standalone: bool = pydantic.Field(default=False, description="Run without kopf peering (OOMTUNER_STANDALONE).")
    peering_name: str = pydantic.Field(default="oomtuner", description="kopf peering object name (OOMTUNER_PEERING_NAME).")
    priority: int = pydantic.Field(default=0, description="kopf peering priority; give each replica its own (OOMTUNER_PRIORITY).")
    field_manager: str = pydantic.Field(default="oomtuner", description="Server-side apply field manager.")

    @pydantic.field_validator("metrics_address", "liveness_address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"an IP address to listen on, like 0.0.0.0, :: or 10.0.0.7, not {value!r}") from None

    @pydantic.field_validator("prometheus_max_response")
    @classmethod
    def _some_bytes(cls, value: str) -> str:
        if quantity.parse_bytes(value) < 1024:
            raise ValueError("must be at least 1Ki: no Prometheus answer is smaller")
        return value


def url_host(address: str) -> str:
    """An IP address as the host of a URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


_LISTS = {"namespaces", "respected_managers"}
_BOOLS = {"standalone"}


class SettingsError(ValueError):
    pass


def from_environ(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `OOMTUNER_*` variables. Raises SettingsError naming the variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for field in Settings.model_fields:
        raw = env.get(PREFIX + field.upper())
        if raw is None or raw == "":
            continue
        if field in _LISTS:
            values[field] = [item.strip() for item in raw.split(",") if item.strip()]
        elif field in _BOOLS:
            values[field] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            values[field] = raw
    try:
        return Settings.model_validate(values)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        name = PREFIX + str(err["loc"][0]).upper() if err["loc"] else PREFIX
        raise SettingsError(f"{name}: {err['msg']}") from None


def priority_from_name(name: str) -> int:
    """A stable peering priority in [1, 2**31 - 1] from a pod name.

    kopf's peering lets the replica with the highest priority work and freezes the others; replicas
    of equal priority all freeze. A Deployment cannot hand each replica its own number, so each
    derives one from its (unique) pod name.
    """
    return zlib.crc32(name.encode()) % (2**31 - 1) + 1
