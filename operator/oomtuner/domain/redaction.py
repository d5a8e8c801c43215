"""What the operator must not repeat where others can read it: credentials in URLs.

A Prometheus or API server URL may carry credentials (`https://user:secret@prom:9090`,
`...?token=...`). Messages that name a URL go into conditions, events and logs, which people
without access to the operator's configuration read, so every URL shown is passed through `url`
first, and free text that may quote one (an exception's message) through `text`.
"""

from __future__ import annotations

import re

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
