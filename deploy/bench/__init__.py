"""`rocars bench` / `make bench`: the measuring instrument of issue 11 (performance).

Pure parts (no I/O): `stats` (percentiles, medians, ratios, comparison with the previous run),
`schedule` (the open-loop schedule and latency counted from the scheduled send time), `svg`
(the plot), `report` (the table). Adapters: `http` (a small keep-alive HTTP/1.1 client for the
load generator), `openloop` (generator processes), `closedloop` (wrk and pgbench), `workload`
(accounts, bodies, bundles), `memory` (node RSS, system PSS), `distance` (replication delay
through the chaos suite's Toxiproxy server); `runner` puts them together.
"""
