"""Prometheus metrics, health probes, alert rules and dashboards."""
