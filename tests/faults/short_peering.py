"""`oomtuner run` with kopf's peering lifetime shortened to $FAULTS_PEERING_LIFETIME seconds.

kopf's default lifetime is 60 s: a paused replica is taken for dead a minute after its last
keep-alive. The peering scenario needs the same takeover in a fraction of the suite's time, so it
runs the operator through this wrapper, which only adds a startup handler setting kopf's
`settings.peering.lifetime`; everything else is `oomtuner run` as shipped.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from oomtuner import cli


@kopf.on.startup()
async def shorter_peering(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.lifetime = int(os.environ["FAULTS_PEERING_LIFETIME"])


if __name__ == "__main__":
    cli.main()
