"""Paths between two trained networks: lines and trained curves with their barriers, and weight matching."""
