"""Drift monitoring: reference bins (frozen at training time), mergeable counts, PSI."""
