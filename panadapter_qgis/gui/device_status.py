# SPDX-License-Identifier: GPL-2.0-or-later
"""The "Device and dependencies" panel: PyTorch, the CUDA GPU or why the CPU is used, how to install torch.

The report imports torch (a second or two the first time), so it is made when the panel is first shown or
when "Check again" is pressed, never when the plugin loads.
"""
import html

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..dependencies import device_report, torch_install_help


def tr(text):
    from qgis.PyQt.QtCore import QCoreApplication
    return QCoreApplication.translate("PanAdapter", text)


def report_html(report) -> str:
    """The report as HTML (one "label: value" line each, narrow docks wrap them), with the install instructions when torch is missing."""
    text = "".join(f"<p style='margin:0 0 4px 0'><b>{html.escape(label)}:</b> {html.escape(value)}</p>"
                   for label, value in report.lines())
    if report.torch_version is None:
        text += f"<p><b>{tr('How to install PyTorch')}</b></p><pre>{html.escape(torch_install_help())}</pre>"
    return text


class DeviceStatusWidget(QWidget):
    """A read-only report (text can be selected and copied) and a "Check again" button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.report = None
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(True)
        self.browser.setMinimumHeight(220)
        self.browser.setPlainText(tr("Not checked yet."))
        self.refresh_button = QPushButton(tr("Check again"), self)
        self.refresh_button.setToolTip(tr("Import PyTorch and list the devices it can use."))
        self.refresh_button.clicked.connect(self.refresh)
        self.copy_button = QPushButton(tr("Copy"), self)
        self.copy_button.setToolTip(tr("Copy this report (and the install commands) to the clipboard."))
        self.copy_button.clicked.connect(self.copy)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.browser)
        layout.addLayout(buttons)

    def showEvent(self, event):  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self.report is None:
            self.refresh()

    def refresh(self):
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            self.report = device_report()
        finally:
            QApplication.restoreOverrideCursor()
        self.browser.setHtml(report_html(self.report))
        return self.report

    def copy(self):
        report = self.report or self.refresh()
        QApplication.clipboard().setText(report.as_text())


class DeviceStatusDialog(QDialog):
    """The panel in a window of its own (Raster > PanAdapter > Device and dependencies)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle(tr("PanAdapter: device and dependencies"))
        self.status = DeviceStatusWidget(self)
        close = QDialogButtonBox(QDialogButtonBox.Close, self)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(close)
        self.resize(560, 380)
