# PanAdapter: pansharpening for the QGIS Processing Toolbox.
# SPDX-License-Identifier: GPL-2.0-or-later
"""QGIS entry point. Importing this package does no work: QGIS calls ``classFactory`` when it loads the plugin."""


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    """Return the plugin object QGIS drives (``initProcessing``, ``initGui``, ``unload``)."""
    from .plugin import PanAdapterPlugin

    return PanAdapterPlugin(iface)
