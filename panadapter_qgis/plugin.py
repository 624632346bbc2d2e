# SPDX-License-Identifier: GPL-2.0-or-later
"""The plugin object: registers the Processing provider (initProcessing) and the desktop parts (initGui).

Nothing here imports torch: QGIS loads every enabled plugin at start-up, so loading must be cheap and must work
on a machine without PyTorch (the algorithms and the "Device and dependencies" window explain how to install
it).
"""
from qgis.core import QgsApplication

MENU = "&PanAdapter"  # the submenu of the Raster menu


class PanAdapterPlugin:
    def __init__(self, iface):
        self.iface = iface  # None under qgis_process
        self.provider = None
        self.dock = None
        self.device_dialog = None
        self.preview_action = None
        self.device_action = None

    def initProcessing(self):  # noqa: N802 (called by QGIS and qgis_process)
        """Register the ``panadapter`` provider once."""
        if self.provider is not None:
            return
        from .processing.provider import PanAdapterProvider

        self.provider = PanAdapterProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (called by QGIS)
        self.initProcessing()
        if self.iface is None or self.dock is not None:
            return
        from qgis.PyQt.QtCore import Qt
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        from .gui.preview_dock import PreviewDock
        from .plugin_files import icon_path

        window = self.iface.mainWindow()
        self.dock = PreviewDock(self.iface, window)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.preview_action = QAction(QIcon(icon_path()), "Pansharpening preview", window)
        self.preview_action.setObjectName("PanAdapterPreviewAction")
        self.preview_action.setToolTip("PanAdapter: preview pansharpening on the map")
        self.preview_action.setCheckable(True)
        self.preview_action.toggled.connect(self.dock.setUserVisible)
        self.dock.closedStateChanged.connect(self._dock_closed)
        self.device_action = QAction("Device and dependencies", window)
        self.device_action.setObjectName("PanAdapterDeviceAction")
        self.device_action.triggered.connect(self.show_device_status)
        self.iface.addToolBarIcon(self.preview_action)
        self.iface.addPluginToRasterMenu(MENU, self.preview_action)
        self.iface.addPluginToRasterMenu(MENU, self.device_action)

    def _dock_closed(self, closed):
        if self.preview_action is not None:
            self.preview_action.setChecked(not closed)

    def show_device_status(self):
        """The "Device and dependencies" window (created once, raised when asked again)."""
        if self.device_dialog is None:
            from .gui.device_status import DeviceStatusDialog
            self.device_dialog = DeviceStatusDialog(self.iface.mainWindow())
        self.device_dialog.show()
        self.device_dialog.raise_()
        return self.device_dialog

    def unload(self):
        if self.iface is not None:
            self._unload_gui()
        if self.provider is not None:
            # The registry owns the provider and deletes it.
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def _unload_gui(self):
        """Remove the actions, menu entries, dock, window, preview layer and temporary files."""
        for action in (self.preview_action, self.device_action):
            if action is None:
                continue
            self.iface.removePluginRasterMenu(MENU, action)
            if action is self.preview_action:
                self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.preview_action = self.device_action = None
        if self.dock is not None:
            self.dock.closedStateChanged.disconnect(self._dock_closed)
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.device_dialog is not None:
            self.device_dialog.close()
            self.device_dialog.deleteLater()
            self.device_dialog = None
