"""Pure logic: quantities, QoS and oom_score_adj, OOM kill detection and classification, recommendation.

Nothing here does I/O or reads the clock (callers pass `now`), and nothing imports a Kubernetes client:
everything is a function of its arguments, tested with tables. Imports run `api` <- `domain` only.
"""
