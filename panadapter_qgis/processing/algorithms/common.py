# SPDX-License-Identifier: GPL-2.0-or-later
"""What every algorithm of the provider shares: layer files for GDAL, the PyTorch check, the checks of
outputs, band lists, number ranges and weights files made before any pixel is read."""
import os
import re
import sys
import tempfile
import zipfile

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
)
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


def _source_file(source):
    """The file of a layer source ('path|layername=...' -> 'path'), or '' when it names none."""
    path = (source or "").split("|")[0]
    return path if path and os.path.exists(path) else ""


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def input_files(algorithm, parameters, context):
    """{file: parameter name} of every input that names a file (rasters, layer lists, plain files)."""
    files = {}
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        if definition.isDestination() or parameters.get(name) in (None, ""):
            continue
        paths = []
        if isinstance(definition, QgsProcessingParameterRasterLayer):
            layer = algorithm.parameterAsRasterLayer(parameters, name, context)
            paths = [layer.source()] if layer is not None else []
        elif isinstance(definition, QgsProcessingParameterMultipleLayers):
            paths = [layer.source() for layer in algorithm.parameterAsLayerList(parameters, name, context)]
        elif isinstance(definition, QgsProcessingParameterFile):
            paths = [algorithm.parameterAsFile(parameters, name, context)]
        for path in paths:
            path = _source_file(path)
            if path:
                files.setdefault(os.path.realpath(path), name)
    return files


def _extensions(definition):
    """The file name endings an output parameter accepts: GeoTIFF for rasters, its filter's for files."""
    if isinstance(definition, QgsProcessingParameterRasterDestination):
        return GDAL_SUFFIXES
    found = re.findall(r"\*(\.[A-Za-z0-9_]+)", definition.fileFilter() or "")
    return tuple(dict.fromkeys(e.lower() for e in found)) or ("." + definition.defaultFileExtension(),)


def _check_writable_folder(name, path):
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not os.path.isdir(folder):
        raise QgsProcessingException(
            f"{name}: the folder '{folder}' does not exist. Create it, or choose another place for '{base}'.")
    if os.path.isdir(path):
        raise QgsProcessingException(f"{name}: '{path}' is a folder; give a file name.")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(base)) > name_max:
        raise QgsProcessingException(
            f"{name}: the file name '{base}' is {len(os.fsencode(base))} bytes long; the file system of "
            f"'{folder}' allows at most {name_max}.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".panadapter-", suffix=".check", dir=folder)
    except OSError as error:
        raise QgsProcessingException(
            f"{name}: PanAdapter cannot write in the folder '{folder}' ({error.strerror}). Choose a folder "
            "you can write to.") from None
    os.close(handle)
    os.remove(probe)


def check_outputs(algorithm, parameters, context):
    """Every output of ``algorithm`` resolved and checked before it reads a pixel or trains: an allowed
    extension, a folder that exists and can be written to, a name the file system allows, no input and no
    other output. Returns {parameter name: path} ('' for an optional output not asked for); use these
    paths, since resolving a temporary output again gives another file."""
    inputs = input_files(algorithm, parameters, context)
    outputs, seen = {}, {}
    for definition in algorithm.parameterDefinitions():
        if not definition.isDestination():
            continue
        name = definition.name()
        if isinstance(definition, QgsProcessingParameterRasterDestination):
            path = algorithm.parameterAsOutputLayer(parameters, name, context)
        elif isinstance(definition, QgsProcessingParameterFileDestination):
            path = algorithm.parameterAsFileOutput(parameters, name, context)
        else:
            continue
        if not path:
            if not definition.flags() & definition.FlagOptional:
                raise QgsProcessingException(f"{name}: give the file to write.")
            outputs[name] = ""
            continue
        allowed = _extensions(definition)
        if not path.lower().endswith(allowed):
            kind = "a GeoTIFF file" if allowed == GDAL_SUFFIXES else "a file"
            raise QgsProcessingException(
                f"{name}: the output must be {kind} ({' or '.join(allowed)}); got '{os.path.basename(path)}'.")
        _check_writable_folder(name, path)
        real = os.path.realpath(path)
        which = inputs.get(real) or next(
            (inputs[other] for other in inputs if os.path.exists(path) and _same_file(path, other)), None)
        if which:
            raise QgsProcessingException(
                f"{name}: '{path}' is also an input ({which}); writing it would destroy that input. Choose "
                "another output file.")
        if real in seen:
            raise QgsProcessingException(
                f"{name} and {seen[real]} are the same file '{path}'; give each output its own file.")
        seen[real] = name
        outputs[name] = path
    return outputs


def band_list(algorithm, parameters, name, context):
    """A band list parameter as ints (None when empty), each band once.

    Processing reads a text such as '5,5,3' (as qgis_process passes it) as the band 0, so text is split
    here on commas, semicolons or spaces."""
    value = parameters.get(name)
    if value in (None, "", []):
        return None
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        text = value if isinstance(value, str) else ",".join(value)
        items = [item for item in re.split(r"[,;\s]+", text.strip()) if item]
        try:
            bands = [int(item) for item in items]
        except ValueError:
            raise QgsProcessingException(
                f"{name}: '{text}' is not a list of band numbers (give them as 1,2,3).") from None
    else:
        bands = algorithm.parameterAsInts(parameters, name, context)
    repeated = sorted({b for b in bands if bands.count(b) > 1})
    if repeated:
        raise QgsProcessingException(
            f"{name}: the band list ({', '.join(map(str, bands))}) repeats band{'s' if len(repeated) > 1 else ''} "
            f"{', '.join(map(str, repeated))}; give each band once.")
    bad = [b for b in bands if b < 1]
    if bad:
        raise QgsProcessingException(f"{name}: band numbers start at 1; got {', '.join(map(str, bad))}.")
    return bands or None


def sensor_choice(algorithm, parameters, context, feedback, *paths):
    """The SENSOR index to use: the user's choice (obeyed, with a warning when the files' metadata names
    another satellite), else the satellite the metadata of ``paths`` names, else Generic; the log says which."""
    from ...backend.sensor_detect import detect_sensor
    from ...backend.sensors import SENSORS

    detection = detect_sensor(*paths)
    if parameters.get("SENSOR") not in (None, ""):
        sensor = algorithm.parameterAsEnum(parameters, "SENSOR", context)
        if detection is not None and detection.index != sensor:
            feedback.pushWarning(f"{detection.message} SENSOR is {SENSORS[sensor].label}: using it, as asked.")
        return sensor
    if detection is None:
        feedback.pushInfo(f"SENSOR not given and the image metadata names no satellite: {SENSORS[0].label}.")
        return 0
    if detection.index is None:
        feedback.pushWarning(f"{detection.message} SENSOR not given: {SENSORS[0].label}. Set SENSOR to choose.")
        return 0
    feedback.pushInfo(f"SENSOR not given: {SENSORS[detection.index].label}. {detection.message}")
    return detection.index


class SensorFromMetadata:
    """Mixin of the algorithms with a SENSOR: their dialog (the toolbox's, and "Run on whole scene...")
    preselects the sensor that the chosen PAN and MS name in their metadata, and follows the layers as they
    change, until the user picks a sensor by hand; a SENSOR given to the dialog is kept. The batch dialog and
    the modeler keep QGIS's own widgets: there the run takes the sensor from the metadata."""

    def createCustomParametersWidget(self, parent=None):  # noqa: N802 (QGIS API)
        from processing.gui.AlgorithmDialog import AlgorithmDialog

        dialog = AlgorithmDialog(self, parent=parent)
        wrappers = getattr(dialog.mainWidget(), "wrappers", {})
        if "SENSOR" in wrappers and "PAN" in wrappers and "MS" in wrappers:
            dialog.sensor_follower = _SensorFollower(wrappers, dialog.mainWidget().processing_context)
        return dialog


class _SensorFollower:
    def __init__(self, wrappers, context):
        from qgis.PyQt.QtWidgets import QComboBox

        self.sensor, self.inputs, self.context = wrappers["SENSOR"], [wrappers["PAN"], wrappers["MS"]], context
        self.chosen_by_hand = False
        combo = self.sensor.wrappedWidget()
        if isinstance(combo, QComboBox):
            combo.activated.connect(self._chosen)
        for wrapper in self.inputs:
            wrapper.widgetValueHasChanged.connect(self.follow)
        self.follow()

    def _chosen(self, *_):
        self.chosen_by_hand = True

    def follow(self, *_):
        from ...backend.sensor_detect import detect_sensor

        if self.chosen_by_hand:
            return
        paths = [_layer_path(w.parameterValue()) for w in self.inputs]
        if not all(paths):
            return
        try:
            detection = detect_sensor(*paths)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the run, not by the dialog
            return
        if detection is not None and detection.index is not None:
            self.sensor.setParameterValue(detection.index, self.context)
            self.sensor.wrappedWidget().setToolTip(detection.message)


def _layer_path(value):
    """The file behind a layer parameter's value (a layer, a layer id or a path), or None."""
    from qgis.core import QgsMapLayer, QgsProject

    if isinstance(value, QgsMapLayer):
        return value.source()
    if isinstance(value, str) and value:
        layer = QgsProject.instance().mapLayer(value)
        path = layer.source() if layer is not None else value
        return path if os.path.exists(path) else None
    return None


TORCH_PICKLE_START = b"\x80\x02\x8a\x0a"  # the magic number that PyTorch's legacy (non-zip) files begin with


def check_torch_file(name, path):
    """``path`` is a PyTorch file (a zip archive, or a legacy pickle), else a QgsProcessingException."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(TORCH_PICKLE_START))
    except OSError as error:
        raise QgsProcessingException(f"{name}: the file '{path}' cannot be read ({error.strerror}).") from None
    if not (start.startswith(TORCH_PICKLE_START) or zipfile.is_zipfile(path)):
        what = "it is empty" if not start else "it is neither the zip archive nor the pickle PyTorch writes"
        raise QgsProcessingException(
            f"{name}: '{path}' is not a PyTorch weights file ({what}). Give a .pt file written by "
            "PanAdapter (panadapter:finetune, panadapter:train or make weights).")
    return path


def check_number_ranges(algorithm, parameters):
    """(False, message) for a number parameter outside its range, naming the range; else (True, '')."""
    for definition in algorithm.parameterDefinitions():
        if not isinstance(definition, QgsProcessingParameterNumber):
            continue
        value = parameters.get(definition.name())
        if isinstance(value, bool) or value in (None, ""):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        low, high = definition.minimum(), definition.maximum()
        if number < low or number > high:
            return False, (f"{definition.name()} ({definition.description()}) must be {range_text(definition)}; "
                           f"got {value}.")
    return True, ""


def range_text(definition):
    """'at least 64', 'from 16 to 512' ... of a number parameter."""
    low, high = definition.minimum(), definition.maximum()
    integer = definition.dataType() == QgsProcessingParameterNumber.Integer
    show = (lambda v: str(int(v))) if integer else (lambda v: f"{v:g}")
    bounded_low, bounded_high = low > -1e300, high < 1e300
    if bounded_low and bounded_high:
        return f"from {show(low)} to {show(high)}"
    if bounded_low:
        return f"at least {show(low)}"
    if bounded_high:
        return f"at most {show(high)}"
    return "a number"


def with_range(definition, text):
    """A tile-size parameter's help with its limits ('At least 64.'), so help and check never disagree."""
    if isinstance(definition, QgsProcessingParameterNumber) and definition.name() == "TILE_SIZE":
        return f"{text} {range_text(definition)[0].upper()}{range_text(definition)[1:]} pixels."
    return text


def geotiff_output(algorithm, parameters, name, context):
    """The path of a raster destination parameter, which must be a GeoTIFF (the backend writes only that)."""
    path = algorithm.parameterAsOutputLayer(parameters, name, context)
    if not path.lower().endswith(GDAL_SUFFIXES):
        raise QgsProcessingException(f"The output must be a GeoTIFF file (.tif); got '{os.path.basename(path)}'.")
    return path


def scheduler_parameter():
    """SCHEDULER (advanced): the Dask scheduler that computes the tiles; its default, the environment's
    PANADAPTER_SCHEDULER, lets ``qgis_process`` batches use a cluster unchanged."""
    parameter = QgsProcessingParameterString("SCHEDULER", tr("Dask scheduler address (empty: this machine)"),
                                             defaultValue=os.environ.get("PANADAPTER_SCHEDULER", ""),
                                             optional=True)
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


def scheduler(algorithm, parameters, context):
    """The SCHEDULER address, or None for this machine."""
    return algorithm.parameterAsString(parameters, "SCHEDULER", context).strip() or None


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


class TableAlgorithm(SensorFromMetadata, QgsProcessingAlgorithm):
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

    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = check_number_ranges(self, parameters)
        return (ok, message) if not ok else super().checkParameterValues(parameters, context)

    def notes(self):
        return ["Requires PyTorch; if it is missing, running the algorithm explains how to install it."]

    def icon(self):
        return QIcon(icon_path())

    def svgIconPath(self):  # noqa: N802
        return icon_path()
