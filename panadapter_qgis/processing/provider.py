# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``panadapter`` Processing provider."""
from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..plugin_files import icon_path, plugin_version

PROVIDER_ID = "panadapter"
PROVIDER_NAME = "PanAdapter pansharpening"


class PanAdapterProvider(QgsProcessingProvider):
    def id(self):
        return PROVIDER_ID

    def name(self):
        return PROVIDER_NAME

    def longName(self):  # noqa: N802
        version = plugin_version()
        return f"{PROVIDER_NAME} {version}" if version else PROVIDER_NAME

    def versionInfo(self):  # noqa: N802
        return plugin_version()

    def icon(self):
        return QIcon(icon_path())

    def svgIconPath(self):  # noqa: N802
        return icon_path()

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        # The backend writes tiled, compressed GeoTIFF only.
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802
        return "tif"

    def loadAlgorithms(self):  # noqa: N802
        # QGIS calls this again on refreshAlgorithms(); every call must hand over new objects,
        # which the provider then owns.
        from .algorithms.classical import classical_algorithms
        from .algorithms.deep import deep_algorithms
        from .algorithms.quality import quality_algorithms

        for algorithm in classical_algorithms() + deep_algorithms() + quality_algorithms():
            self.addAlgorithm(algorithm)
