"""Benchmarks: the gateway measured side by side with direct calls, nginx and HAProxy, in one run."""
