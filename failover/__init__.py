"""Failover: the node's role (active/standby), the failover controller, fencing, and drills.

The controller's rule lives in :mod:`failover.decision` as a pure function; adapters that talk
to Patroni's REST API, etcd and the health probes feed it observations and carry out what it
decides.
"""
