"""PostgreSQL cluster membership: Patroni configuration, leader discovery, replication health."""
