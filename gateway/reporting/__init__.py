"""Failure reporting: codes, records, the FDXML poster and the portal."""
