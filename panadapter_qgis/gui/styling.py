# SPDX-License-Identifier: GPL-2.0-or-later
"""True-colour styling of fused rasters: the preview layer, and the outputs Processing adds to the project.

A fused raster has one band per MS band, so QGIS would show it as a grey first band. This module gives it a
``QgsMultiBandColorRenderer`` on the red, green and blue bands (``backend.preview.rgb_bands``) with a 2-98 %
cumulative-cut stretch (``backend.preview.stretch_limits``). Only ``qgis.core`` is used: Processing runs the
post-processor's constructor in its worker thread.
"""
import re

from qgis.core import (
    Qgis,
    QgsContrastEnhancement,
    QgsMessageLog,
    QgsMultiBandColorRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
)

LOG_TAG = "PanAdapter"


def band_descriptions(layer):
    """The band descriptions of a raster layer (GDAL's, without QGIS's "Band n: " prefix)."""
    count = layer.bandCount()
    if layer.providerType() == "gdal":
        try:
            from osgeo import gdal
            gdal.UseExceptions()
            ds = gdal.Open(layer.source())
            if ds is not None and ds.RasterCount == count:
                return [ds.GetRasterBand(i).GetDescription() for i in range(1, count + 1)]
        except RuntimeError:
            pass
    return [re.sub(r"^Band \d+:?\s*", "", layer.bandName(i)) for i in range(1, count + 1)]


def apply_rgb_style(layer, rgb, limits):
    """Show ``layer`` as a colour composite of the 1-based bands ``rgb`` = (red, green, blue), each stretched
    linearly between its (low, high) pair of ``limits``."""
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *rgb)
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, (low, high), setter in zip(rgb, limits, setters):
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum, True)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        setter(enhancement)
    # Record how the limits were found, so the layer properties show "Cumulative count cut 2-98 %".
    origin = QgsRasterMinMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.CumulativeCut)
    origin.setExtent(QgsRasterMinMaxOrigin.WholeRaster)
    origin.setCumulativeCutLower(0.02)
    origin.setCumulativeCutUpper(0.98)
    renderer.setMinMaxOrigin(origin)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return renderer


def style_fused_layer(layer, sensor=0, source_bands=None, source_count=None):
    """True-colour style of a fused raster layer: bands from its descriptions, the sensor or the band count
    (``source_bands``: the MS band numbers its bands come from; ``source_count``: the MS band count)."""
    from ..backend.preview import file_stretch_limits, rgb_bands

    rgb = rgb_bands(band_descriptions(layer), sensor, source_bands, source_count)
    if layer.providerType() == "gdal":
        limits = file_stretch_limits(layer.source(), rgb)
    else:
        provider = layer.dataProvider()
        limits = [tuple(provider.cumulativeCut(band, 0.02, 0.98)) for band in rgb]
    return apply_rgb_style(layer, rgb, limits)


class RgbStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a fused output when Processing adds it to the project (``processAlgorithm`` sets it on the
    output's ``QgsProcessingContext.LayerDetails``)."""

    # QGIS keeps only a C++ pointer to a post-processor: without a Python reference the object, and with it
    # postProcessLayer, would be garbage-collected before the layer is loaded (the PyQGIS cookbook's advice).
    _alive = []
    KEEP = 64

    def __init__(self, sensor=0, source_bands=None, source_count=None):
        super().__init__()
        self.sensor = sensor
        self.source_bands = list(source_bands) if source_bands else None
        self.source_count = source_count

    @classmethod
    def create(cls, sensor=0, source_bands=None, source_count=None):
        processor = cls(sensor, source_bands, source_count)
        cls._alive.append(processor)
        del cls._alive[:-cls.KEEP]
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return
        try:
            style_fused_layer(layer, self.sensor, self.source_bands, self.source_count)
        except Exception as error:  # noqa: BLE001 (a style must never fail a finished run)
            QgsMessageLog.logMessage(f"Could not style '{layer.name()}' as true colour: {error}", LOG_TAG,
                                     Qgis.Warning)
