"""aftm-gateway: a failover-aware gateway for Oracle Responsys transactional messaging."""
