"""Topology, configuration generation and the local cluster launcher."""
