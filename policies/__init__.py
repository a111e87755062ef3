"""Resilience policies: pure decisions from outcomes and time; no vendor knowledge, no I/O."""
