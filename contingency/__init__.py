"""Contingency: manual clearance mode, its on-disk journal, and reconciliation afterwards.

Pure cores: :mod:`contingency.state` (the mode's state machine, stored in etcd) and
:mod:`contingency.reconcile_match` (matching manual clearance records to open bundles and
planning an exactly-once import). Adapters around them do the etcd, disk and SQL work.
"""
