"""Benchmark helpers for panadapter_qgis (peer tools, metrics, runners).

Nothing in this package imports qgis.
"""
