# SPDX-License-Identifier: GPL-2.0-or-later
"""What every algorithm of the provider shares: layer files for GDAL, the PyTorch check, output suffixes."""
from qgis.core import QgsProcessingException, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication

from ...dependencies import MissingDependencyError, require_torch

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


def require_backend():
    """PyTorch present and the backend importable, or a QgsProcessingException that says what to do."""
    try:
        require_torch()
    except MissingDependencyError as error:
        raise QgsProcessingException(str(error)) from error
    try:
        from ...backend import errors  # noqa: F401
    except ImportError as error:
        raise QgsProcessingException(
            f"The PanAdapter backend could not be loaded ({error}). Reinstall the plugin.") from error
