# SPDX-License-Identifier: GPL-2.0-or-later
"""Classical pansharpening algorithms: one Processing algorithm per id in ``backend.classical.METHODS``.

All methods take the same parameters, so one class (``ClassicalPansharpenAlgorithm``) declares and reads
them, and a subclass per method id only fixes ``METHOD``. The class translates parameters and feedback;
the work is done by ``backend.pipeline.pansharpen`` (docs/BACKEND_API.md).
"""
import os

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from ...plugin_files import icon_path
from .common import (band_list, check_number_ranges, check_outputs, layer_file, require_backend, scheduler,
                     scheduler_parameter, sensor_choice, SensorFromMetadata, tr, with_range)
from ..help import PARAMETER_HELP, algorithm_help_html, first_sentence, method_help

GROUP = "Classical pansharpening"
GROUP_ID = "classical"
DEVICES = ("auto", "cpu", "cuda")  # DESIGN.md enum order
DEVICE_LABELS = ("Automatic (GPU when available, else CPU)", "CPU", "CUDA GPU")


def method_specs():
    """``backend.classical.METHODS`` (id -> MethodSpec), or {} when the backend cannot be imported.

    The toolbox must list the algorithms even when the backend cannot load (torch missing, say): the
    error is then reported, with instructions, when an algorithm runs.
    """
    try:
        from ...backend.classical import METHODS
    except Exception as error:  # noqa: BLE001 (any failure must leave the toolbox usable)
        QgsMessageLog.logMessage(
            f"PanAdapter: the classical methods could not be loaded ({type(error).__name__}: {error}); "
            "listing the algorithms from the help table.", "Processing", Qgis.Warning)
        return {}
    return dict(METHODS)


class ClassicalPansharpenAlgorithm(SensorFromMetadata, QgsProcessingAlgorithm):
    """Fuse a PAN and an MS raster with the classical method ``METHOD`` (set by the subclass)."""

    PAN = "PAN"
    MS = "MS"
    MS_BANDS = "MS_BANDS"
    SENSOR = "SENSOR"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OUTPUT_FLOAT32 = "OUTPUT_FLOAT32"
    OUTPUT = "OUTPUT"

    METHOD = None  # method id, fixed per subclass
    SPEC = None  # backend MethodSpec when the backend loaded, else None

    def createInstance(self):  # noqa: N802
        return type(self)()

    def name(self):
        return self.METHOD

    def _help(self):
        spec = self.SPEC
        return method_help(self.METHOD, getattr(spec, "name", ""), getattr(spec, "help", ""))

    def displayName(self):  # noqa: N802
        return tr(self._help().title)

    def group(self):
        return tr(GROUP)

    def groupId(self):  # noqa: N802
        return GROUP_ID

    def tags(self):
        return [self.METHOD, "pansharpening", "pan-sharpening", "fusion", "panchromatic", "multispectral"]

    def shortDescription(self):  # noqa: N802
        return tr(first_sentence(self._help().summary))

    def shortHelpString(self):  # noqa: N802
        notes = []
        min_bands = getattr(self.SPEC, "min_bands", None)
        if min_bands and min_bands > 1:
            notes.append(f"Needs at least {min_bands} multispectral bands.")
        notes.append("Requires PyTorch; if it is missing, running the algorithm explains how to install it.")
        parameters = [(p.description(), p.help()) for p in self.parameterDefinitions()]
        return algorithm_help_html(self._help().summary, parameters, notes)

    def icon(self):
        return QIcon(icon_path())

    def svgIconPath(self):  # noqa: N802
        return icon_path()

    def initAlgorithm(self, config=None):  # noqa: N802
        from ...backend.sensors import SENSORS

        advanced = QgsProcessingParameterDefinition.FlagAdvanced
        parameters = [
            QgsProcessingParameterRasterLayer(self.PAN, tr("Panchromatic image (PAN)")),
            QgsProcessingParameterRasterLayer(self.MS, tr("Multispectral image (MS)")),
            QgsProcessingParameterBand(self.MS_BANDS, tr("Multispectral bands to sharpen (default: all)"),
                                       None, self.MS, optional=True, allowMultiple=True),
            QgsProcessingParameterEnum(self.SENSOR, tr("Sensor"), options=[s.label for s in SENSORS],
                                       optional=True),
            QgsProcessingParameterEnum(self.DEVICE, tr("Compute device"),
                                       options=[tr(label) for label in DEVICE_LABELS], defaultValue=0),
            QgsProcessingParameterNumber(self.TILE_SIZE, tr("Tile size (panchromatic pixels)"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=1024,
                                         minValue=64),
            QgsProcessingParameterBoolean(self.OUTPUT_FLOAT32, tr("Write 32-bit float output"),
                                          defaultValue=False),
            scheduler_parameter(),
            QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Pansharpened image")),
        ]
        for parameter in parameters:
            if parameter.name() in (self.DEVICE, self.TILE_SIZE, self.OUTPUT_FLOAT32):
                parameter.setFlags(parameter.flags() | advanced)
            parameter.setHelp(with_range(parameter, tr(PARAMETER_HELP[parameter.name()])))
            self.addParameter(parameter)

    def _gdal_path(self, parameters, name, context):
        """File path of a raster layer parameter; the backend reads files through GDAL only."""
        return layer_file(self.parameterAsRasterLayer(parameters, name, context), name)

    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = check_number_ranges(self, parameters)
        return (ok, message) if not ok else super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        output_path = check_outputs(self, parameters, context)[self.OUTPUT]
        pan_path = self._gdal_path(parameters, self.PAN, context)
        ms_path = self._gdal_path(parameters, self.MS, context)
        ms_bands = band_list(self, parameters, self.MS_BANDS, context)
        sensor = sensor_choice(self, parameters, context, feedback, pan_path, ms_path)
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        float32 = self.parameterAsBoolean(parameters, self.OUTPUT_FLOAT32, context)

        require_backend(wait=False)  # torch imports while GDAL opens the pair
        from ...backend.errors import PansharpenError
        from ...backend.pipeline import pansharpen

        feedback.pushInfo(f"{self.displayName()}: sharpening {os.path.basename(ms_path)} "
                          f"with {os.path.basename(pan_path)}.")
        try:
            result = pansharpen(
                pan_path, ms_path, output_path, method=self.METHOD, sensor=sensor, ms_bands=ms_bands,
                device=device, tile_size=tile_size, float32=float32,
                progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                is_cancelled=feedback.isCanceled,
                log=feedback.pushInfo,
                scheduler=scheduler(self, parameters, context),
            )
        except PansharpenError as error:  # Cancelled included: its message says nothing was written
            raise QgsProcessingException(str(error)) from error

        feedback.pushInfo(run_summary(result))
        if context.willLoadLayerOnCompletion(output_path):
            # Shown in true colour when QGIS adds it to the project, not as a grey first band.
            from ...gui.styling import RgbStylePostProcessor

            ms_layer = self.parameterAsRasterLayer(parameters, self.MS, context)
            context.layerToLoadOnCompletionDetails(output_path).setPostProcessor(
                RgbStylePostProcessor.create(sensor, ms_bands, ms_layer.bandCount() if ms_layer else None))
        return {self.OUTPUT: output_path}


def run_summary(result):
    """One line about a finished run, from the backend's result dict."""
    get = (result or {}).get
    seconds = get("seconds")
    return (f"Wrote {get('bands', '?')} bands of {get('width', '?')} x {get('height', '?')} pixels "
            f"(resolution ratio {get('ratio', '?')}) on {get('device', '?')}"
            + (f" in {seconds:.1f} s." if isinstance(seconds, (int, float)) else "."))


_CLASSES = {}


def algorithm_class(method_id, spec=None):
    """The ``ClassicalPansharpenAlgorithm`` subclass of one method id (created once, then reused)."""
    cls = _CLASSES.get(method_id)
    if cls is None or cls.SPEC is not spec:
        class_name = "".join(part.capitalize() for part in method_id.split("_")) + "Algorithm"
        cls = type(class_name, (ClassicalPansharpenAlgorithm,),
                   {"METHOD": method_id, "SPEC": spec, "__module__": __name__,
                    "__doc__": f"Classical pansharpening with the '{method_id}' method."})
        _CLASSES[method_id] = cls
    return cls


def classical_algorithms():
    """Fresh algorithm instances, one per classical method id (the backend's list, else the help table's)."""
    from ..help import CLASSICAL_METHODS

    specs = method_specs()
    ids = list(specs) if specs else list(CLASSICAL_METHODS)
    return [algorithm_class(method_id, specs.get(method_id))() for method_id in ids]
