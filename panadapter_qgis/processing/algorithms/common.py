# SPDX-License-Identifier: GPL-2.0-or-later
"""What every algorithm of the provider shares: layer files for GDAL, the PyTorch check, output suffixes."""
import os
import sys

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ...dependencies import MissingDependencyError, require_torch, torch_installed
from ...plugin_files import icon_path
from ..help import algorithm_help_html, first_sentence

GDAL_SUFFIXES = (".tif", ".tiff")


def tr(text):
    return QCoreApplication.translate("PanAdapter", text)


def layer_file(layer, name):
    """File path of a raster layer; the backend reads files through GDAL only."""
    if layer is None:
        raise QgsProcessingException(f"The {name} layer could not be loaded.")
    if not isinstance(layer, QgsRasterLayer):
        raise QgsProcessingException(f"The {name} layer '{layer.name()}' is not a raster layer.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {name} layer '{layer.name()}' comes from the '{layer.providerType()}' data provider; "
            "PanAdapter reads raster files through GDAL only. Save the layer as a GeoTIFF "
            "(right-click > Export > Save As...) and use that file.")
    return layer.source()


def geotiff_output(algorithm, parameters, name, context):
    """The path of a raster destination parameter, which must be a GeoTIFF (the backend writes only that)."""
    path = algorithm.parameterAsOutputLayer(parameters, name, context)
    if not path.lower().endswith(GDAL_SUFFIXES):
        raise QgsProcessingException(f"The output must be a GeoTIFF file (.tif); got '{os.path.basename(path)}'.")
    return path


def require_backend(wait=True):
    """PyTorch present and the backend importable, or a QgsProcessingException that says what to do.

    ``wait=False`` (the classical methods, whose first seconds are GDAL's): torch need only be installed;
    the backend imports it in the background while the run opens its rasters (``backend.device.preload_torch``)
    and reports an install that is present but cannot be imported when it needs torch."""
    try:
        if wait or "torch" in sys.modules or not torch_installed():
            require_torch()
    except MissingDependencyError as error:
        raise QgsProcessingException(str(error)) from error
    try:
        from ...backend import errors  # noqa: F401
    except ImportError as error:
        raise QgsProcessingException(
            f"The PanAdapter backend could not be loaded ({error}). Reinstall the plugin.") from error


class TableAlgorithm(QgsProcessingAlgorithm):
    """An algorithm whose title and summary come from a help table (``HELP``: id -> MethodHelp), in the
    group ``GROUP``; subclasses set ``ALGORITHM_ID`` and declare their parameters."""

    ALGORITHM_ID = None
    HELP = {}
    GROUP = ""
    GROUP_ID = ""

    def createInstance(self):  # noqa: N802
        return type(self)()

    def name(self):
        return self.ALGORITHM_ID

    def displayName(self):  # noqa: N802
        return tr(self.HELP[self.ALGORITHM_ID].title)

    def group(self):
        return tr(self.GROUP)

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def shortDescription(self):  # noqa: N802
        return tr(first_sentence(self.HELP[self.ALGORITHM_ID].summary))

    def shortHelpString(self):  # noqa: N802
        parameters = [(p.description(), p.help()) for p in self.parameterDefinitions()]
        return algorithm_help_html(self.HELP[self.ALGORITHM_ID].summary, parameters, self.notes())

    def notes(self):
        return ["Requires PyTorch; if it is missing, running the algorithm explains how to install it."]

    def icon(self):
        return QIcon(icon_path())

    def svgIconPath(self):  # noqa: N802
        return icon_path()
