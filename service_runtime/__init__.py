"""Plumbing shared by the monitors services: settings, database, auth, interceptors, server host, time-series port.

The three services never import one another; this package and the generated contracts in ``gen/`` are
what they have in common.
"""
