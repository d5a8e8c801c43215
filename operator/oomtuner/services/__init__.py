"""The operator's services: one concern each, each owning its state and its lock.

`oomtuner.app` builds them from the settings; the kopf handlers reach them through the app. The map
of the rooms, the flow of one kill and the invariants are in ARCHITECTURE.md.
"""
