"""Failover and DR drills: the fault catalogue, the write load and the reports."""
