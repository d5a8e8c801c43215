"""What the operator must not repeat where others can read it: credentials in URLs, and other
tenants' names.

A Prometheus or API server URL may carry credentials (`https://user:secret@prom:9090`,
`...?token=...`). Messages that name a URL go into conditions, events and logs, which people
without access to the operator's configuration read, so every URL shown is passed through `url`
first, and free text that may quote one (an exception's message) through `text`.

A Node kill's likely culprit may run in another namespace: another tenant's namespace, pod and
container. The victim's recommendation and events are readable by anyone with `view` in the
victim's namespace, so `culprit` keeps only the figures of a culprit from elsewhere (its usage and
request), unless the operator is told that names may cross namespaces (`CulpritNames.ALL`).
Cluster administrators see the whole record with `oomtuner report`.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from oomtuner.domain import classify

REDACTED = "REDACTED"

# scheme://userinfo@ — the userinfo ends at the last @ before the host's /, ?, # or a space.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@")
# A query parameter whose name says it is a secret.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;][^=&#\s]*(?:token|passw|secret|key|auth|sig|credential)[^=&#\s]*=)[^&#\s]*", re.IGNORECASE
)


def url(value: str) -> str:
    """`value` with the userinfo of a URL and the values of secret-looking query parameters replaced:
    `https://u:p@prom:9090/?token=x` → `https://REDACTED@prom:9090/?token=REDACTED`."""
    return text(value)


def text(value: str) -> str:
    """Free text with every URL in it redacted as `url` does; other text is left as it is."""
    if "://" not in value and "=" not in value:
        return value
    value = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", value)
    return _SECRET_PARAMETER.sub(lambda m: f"{m['name']}{REDACTED}", value)


class CulpritNames(str, enum.Enum):
    """Whose names a Node kill's culprit may carry into the victim's namespace (OOMTUNER_CULPRIT_NAMES)."""

    SAME_NAMESPACE = "same-namespace"
    ALL = "all"


WITHHELD = ("names withheld: the culprit runs in another namespace (OOMTUNER_CULPRIT_NAMES=same-namespace); "
            "`oomtuner report` shows it to cluster administrators")


def culprit(finding: classify.CulpritFinding, *, victim_namespace: str, names: CulpritNames) -> classify.CulpritFinding:
    """The culprit finding as the victim's namespace may read it: unchanged when nobody is named, the
    culprit is in the victim's own namespace, or `names` is ALL; otherwise the culprit without its
    namespace, pod and container (usage, request and excess stay), and the evidence rewritten to
    match, saying why the names are missing."""
    found = finding.culprit
    if found is None or names == CulpritNames.ALL or found.namespace == victim_namespace:
        return finding
    anonymous = dataclasses.replace(found, namespace=None, pod=None, container=None)
    basis = f"; {finding.basis}" if finding.basis else ""
    return classify.CulpritFinding(culprit=anonymous, reason=f"likely culprit: {anonymous.reason}{basis} ({WITHHELD})",
                                   basis=finding.basis)
