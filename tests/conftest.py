"""Rules for the whole suite.

`@pytest.mark.writes_pod_status`: the test writes container status into pods as a kubelet does
(`oomtuner_lab.inject`). That is a test only where kwok plays the kubelet; on a cluster whose nodes
all run real kubelets (kind), the kubelet owns pod status and overwrites what the test wrote, so
the test skips there and says why. `writes_pod_status(False)` on a test exempts it from its
module's mark. tests/realnode has the real kills.
"""

from __future__ import annotations

import pytest

KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@pytest.fixture(autouse=True)
def _pod_status_needs_a_played_kubelet(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("writes_pod_status")
    if marker is None or (marker.args and not marker.args[0]):
        return
    kube = request.getfixturevalue("kube")
    nodes = kube.list("/api/v1/nodes")
    if not any((n["metadata"].get("annotations") or {}).get(KWOK_ANNOTATION) == "fake" for n in nodes):
        pytest.skip("writes pod status as a kubelet would, but every node of this cluster runs a real kubelet, "
                    "which owns pod status: see tests/realnode for real kills")
