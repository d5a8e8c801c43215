"""`oomtuner dashboard`: a read-only web view of the kills, the recommendations and who dies next.

Rooms: `cache` (lists of the cluster's objects shared by every request, refreshed in the
background), `views` (pure: rows, filters, the workload page's ledger and limit steps), `history`
(the working set over time, through the operator's Prometheus client), `approve` (the one write),
`web` (the Starlette app, its routes, templates and security headers) and `server` (building and
running it). It reads through
`kube` and `prom` like `report` does, reuses `report`'s ranking of the next victims, and never
imports kopf or the operator's services. Its one write, an approval, exists only with
`--allow-approve` and a ServiceAccount that may patch recommendations.
"""
