"""The node agent: sees the OOM kills that Kubernetes does not report, and reports them.

When the kernel kills a process that is not a container's main process, the container keeps running
and neither the pod status nor any event says so (kubernetes#50632; always on cgroup v1, and on v2
when the kubelet runs with `singleProcessOOMKill`). The agent runs on every node (`oomtuner agent`, a
DaemonSet), reads each container cgroup's OOM kill counter, and reports every rise as a core/v1 Event
on the pod (reason `OOMKillChildProcess`, see `oomtuner.domain.child_kills`) and as a metric.

Layers, lowest first: `cgroups` (find container cgroups, read counters; files only) → `watcher`
(counters over time, baselines, saved state) → `reporter` (container ID → pod through the API
server, the Event, the metric) → `loop` (one poll after another) → `command` (the click command).
"""
