# SPDX-License-Identifier: GPL-2.0-or-later
"""The plugin object: registers the Processing provider; the GUI parts come later.

Nothing here imports torch or the backend: QGIS loads every enabled plugin at start-up, so loading must be
cheap and must work on a machine without PyTorch (the algorithms explain how to install it when run).
"""
from qgis.core import QgsApplication


class PanAdapterPlugin:
    def __init__(self, iface):
        self.iface = iface  # None under qgis_process
        self.provider = None

    def initProcessing(self):  # noqa: N802 (called by QGIS and qgis_process)
        """Register the ``panadapter`` provider once."""
        if self.provider is not None:
            return
        from .processing.provider import PanAdapterProvider

        self.provider = PanAdapterProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (called by QGIS)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            # The registry owns the provider and deletes it.
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
