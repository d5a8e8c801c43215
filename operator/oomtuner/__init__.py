"""oomtuner: a Kubernetes operator that explains and fixes OOM kills."""

__version__ = "0.1.0"
