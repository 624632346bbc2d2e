# SPDX-License-Identifier: GPL-2.0-or-later
"""Deep-learning algorithms: ``panadapter`` and ``ssdiff`` (inference), ``finetune`` (scene adaptation of
either), ``train``.

Each class declares and reads its parameters, then calls one backend function of ``backend.adapt``
(docs/BACKEND_API.md); the backend reports progress, log lines and cancellation through callbacks.
"""
import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from ..help import DEEP_ALGORITHMS, deep_parameter_help
from .classical import DEVICE_LABELS, DEVICES, run_summary
from .common import (TableAlgorithm, check_outputs, check_torch_file, layer_file, require_backend, scheduler,
                     scheduler_parameter, sensor_choice, tr, with_range)

GROUP = "Deep learning"
GROUP_ID = "deep"
MODELS = ("panadapter", "ssdiff", "inf")  # enum order of MODEL (scripts rely on it)
MODEL_LABELS = ("PanAdapter", "SSDiff", "INF (hyperspectral: MSI as PAN, HSI as MS)")


def style_output(algorithm, parameters, context, output, sensor):
    """True-colour styling of the fused layer when Processing loads it."""
    if context.willLoadLayerOnCompletion(output):
        from ...gui.styling import RgbStylePostProcessor

        ms_layer = algorithm.parameterAsRasterLayer(parameters, "MS", context)
        context.layerToLoadOnCompletionDetails(output).setPostProcessor(
            RgbStylePostProcessor.create(sensor, None, ms_layer.bandCount() if ms_layer else None))


class DeepAlgorithm(TableAlgorithm):
    HELP = DEEP_ALGORITHMS
    GROUP = GROUP
    GROUP_ID = GROUP_ID
    ADVANCED = ()

    def tags(self):
        return ["pansharpening", "deep learning", "PanAdapter", "fine-tuning", "adapter", "PyTorch"]

    def add(self, parameter, help_key=""):
        if parameter.name() in self.ADVANCED:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        parameter.setHelp(with_range(parameter, tr(deep_parameter_help(parameter.name(), help_key))))
        self.addParameter(parameter)

    def add_pair(self):
        from ...backend.sensors import SENSORS

        self.add(QgsProcessingParameterRasterLayer("PAN", tr("Panchromatic image (PAN)")))
        self.add(QgsProcessingParameterRasterLayer("MS", tr("Multispectral image (MS)")))
        self.add(QgsProcessingParameterEnum("SENSOR", tr("Sensor"), options=[s.label for s in SENSORS],
                                            optional=True))

    def add_device(self):
        self.add(QgsProcessingParameterEnum("DEVICE", tr("Compute device"),
                                            options=[tr(label) for label in DEVICE_LABELS], defaultValue=0))

    def read_pair(self, parameters, context, feedback):
        pan = layer_file(self.parameterAsRasterLayer(parameters, "PAN", context), "PAN")
        ms = layer_file(self.parameterAsRasterLayer(parameters, "MS", context), "MS")
        return pan, ms, sensor_choice(self, parameters, context, feedback, pan, ms)

    def device(self, parameters, context):
        return DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]

    def optional_file(self, parameters, name, context):
        value = self.parameterAsFile(parameters, name, context)
        if value and not os.path.isfile(value):
            raise QgsProcessingException(f"{name}: the file '{value}' does not exist.")
        if value and self.parameterDefinition(name).extension() == "pt":
            check_torch_file(name, value)
        return value or None

    def optional_number(self, parameters, name, context):
        """An optional number parameter: None when it was left empty (the backend's default applies)."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsDouble(parameters, name, context)

    def sharpen(self, function, output, parameters, context, feedback, **extra):
        """The inference algorithms: the pair, the adapter or weights, device and tiles into ``function``
        (a backend ``*_scene``) writing ``output`` (from ``check_outputs``), then the run summary and the
        styling of the loaded output."""
        pan, ms, sensor = self.read_pair(parameters, context, feedback)
        result = self.call(function, pan, ms, output, feedback=feedback,
                           adapter=self.optional_file(parameters, "ADAPTER", context),
                           weights_path=self.optional_file(parameters, "WEIGHTS", context) or "bundled",
                           sensor=sensor, device=self.device(parameters, context),
                           tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
                           float32=self.parameterAsBoolean(parameters, "OUTPUT_FLOAT32", context),
                           scheduler=scheduler(self, parameters, context), **extra)
        feedback.pushInfo(run_summary(result))
        style_output(self, parameters, context, output, sensor)
        return {"OUTPUT": output}

    def call(self, function, *args, feedback, **kwargs):
        """Run a backend function with the feedback's progress, log and cancel; user errors become
        QgsProcessingExceptions."""
        require_backend()
        from ...backend.errors import PansharpenError

        try:
            return function(*args, progress=lambda f: feedback.setProgress(100.0 * f),
                            is_cancelled=feedback.isCanceled, log=feedback.pushInfo, **kwargs)
        except PansharpenError as error:
            raise QgsProcessingException(str(error)) from error


class PanAdapterAlgorithm(DeepAlgorithm):
    ALGORITHM_ID = "panadapter"
    ADVANCED = ("WEIGHTS", "DEVICE", "TILE_SIZE", "OUTPUT_FLOAT32")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_pair()
        self.add(QgsProcessingParameterFile("ADAPTER", tr("Adapter file from scene fine-tuning"),
                                            extension="pt", optional=True))
        self.add(QgsProcessingParameterFile("WEIGHTS", tr("Pre-trained weights (default: bundled)"),
                                            extension="pt", optional=True))
        self.add_device()
        self.add(QgsProcessingParameterNumber("TILE_SIZE", tr("Tile size (panchromatic pixels)"),
                                              QgsProcessingParameterNumber.Integer, minValue=32, optional=True))
        self.add(QgsProcessingParameterBoolean("OUTPUT_FLOAT32", tr("Write 32-bit float output"),
                                               defaultValue=False))
        self.add(scheduler_parameter())
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", tr("Pansharpened image")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        output = check_outputs(self, parameters, context)["OUTPUT"]
        require_backend()
        from ...backend.adapt import sharpen_scene

        return self.sharpen(sharpen_scene, output, parameters, context, feedback)


class SSDiffAlgorithm(DeepAlgorithm):
    ALGORITHM_ID = "ssdiff"
    ADVANCED = ("WEIGHTS", "DEVICE", "TILE_SIZE", "OUTPUT_FLOAT32")

    def tags(self):
        return super().tags() + ["SSDiff", "diffusion", "DDIM", "L-BAF"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_pair()
        self.add(QgsProcessingParameterFile("ADAPTER", tr("Adapter file from scene fine-tuning (model SSDiff)"),
                                            extension="pt", optional=True), "SSDIFF_ADAPTER")
        self.add(QgsProcessingParameterFile("WEIGHTS", tr("Pre-trained weights (default: bundled)"),
                                            extension="pt", optional=True), "SSDIFF_WEIGHTS")
        self.add(QgsProcessingParameterNumber("STEPS", tr("Sampling steps (DDIM)"),
                                              QgsProcessingParameterNumber.Integer, defaultValue=10, minValue=1,
                                              maxValue=1000))
        self.add(QgsProcessingParameterNumber("SEED", tr("Random seed"), QgsProcessingParameterNumber.Integer,
                                              defaultValue=0, minValue=0))
        self.add_device()
        self.add(QgsProcessingParameterNumber("TILE_SIZE", tr("Tile size (panchromatic pixels)"),
                                              QgsProcessingParameterNumber.Integer, defaultValue=64,
                                              minValue=16, maxValue=512), "SSDIFF_TILE_SIZE")
        self.add(QgsProcessingParameterBoolean("OUTPUT_FLOAT32", tr("Write 32-bit float output"),
                                               defaultValue=False))
        self.add(scheduler_parameter())
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", tr("Pansharpened image")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        output = check_outputs(self, parameters, context)["OUTPUT"]
        require_backend()
        from ...backend.adapt import ssdiff_scene

        return self.sharpen(ssdiff_scene, output, parameters, context, feedback,
                            steps=self.parameterAsInt(parameters, "STEPS", context),
                            seed=self.parameterAsInt(parameters, "SEED", context))


class FinetuneAlgorithm(DeepAlgorithm):
    ALGORITHM_ID = "finetune"
    ADVANCED = ("WEIGHTS", "MINUTES", "SPECTRAL_TERM", "SPECTRAL_TERM_WEIGHT", "SAM_WEIGHT", "SPATIAL_WEIGHT",
                "DEVICE")
    # enum order of SPECTRAL_TERM: backend.adapt.SPECTRAL_FORMS
    SPECTRAL_TERM_LABELS = ("Wald: the fused image, degraded to the MS scale, against the MS",
                            "Khan: the fused image, low-passed at the PAN scale, against the upsampled MS")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_pair()
        self.add(QgsProcessingParameterEnum("MODEL", tr("Model"), options=list(MODEL_LABELS), defaultValue=0))
        self.add(QgsProcessingParameterNumber("ITERATIONS", tr("Iterations (empty: the default of the model)"),
                                              QgsProcessingParameterNumber.Integer, optional=True, minValue=1),
                 "FINETUNE_ITERATIONS")
        self.add(QgsProcessingParameterNumber("MINUTES", tr("Time limit (minutes, 0 = none)"),
                                              QgsProcessingParameterNumber.Double, defaultValue=0, minValue=0))
        self.add(QgsProcessingParameterFile("WEIGHTS", tr("Pre-trained weights (default: bundled)"),
                                            extension="pt", optional=True))
        self.add(QgsProcessingParameterEnum("SPECTRAL_TERM", tr("Full-resolution spectral term"),
                                            options=[tr(label) for label in self.SPECTRAL_TERM_LABELS],
                                            defaultValue=0))
        self.add(QgsProcessingParameterNumber("SPECTRAL_TERM_WEIGHT",
                                              tr("Full-resolution spectral term weight (empty: the default)"),
                                              QgsProcessingParameterNumber.Double, optional=True, minValue=0))
        self.add(QgsProcessingParameterNumber("SAM_WEIGHT",
                                              tr("Spectral-angle weight (empty: the default of the model)"),
                                              QgsProcessingParameterNumber.Double, optional=True, minValue=0))
        self.add(QgsProcessingParameterNumber("SPATIAL_WEIGHT",
                                              tr("Full-resolution D_s term weight (empty: the default)"),
                                              QgsProcessingParameterNumber.Double, optional=True, minValue=0))
        self.add_device()
        self.add(QgsProcessingParameterFileDestination("OUTPUT", tr("Adapter file"), tr("PyTorch file (*.pt)")),
                 "FINETUNE_OUTPUT")
        self.addOutput(QgsProcessingOutputNumber("ITERATIONS_DONE", tr("Iterations done")))
        self.addOutput(QgsProcessingOutputNumber("FINAL_LOSS", tr("Final training loss (L1, normalised)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        output = check_outputs(self, parameters, context)["OUTPUT"]  # before minutes of training
        pan, ms, sensor = self.read_pair(parameters, context, feedback)
        model = MODELS[self.parameterAsEnum(parameters, "MODEL", context)]
        minutes = self.parameterAsDouble(parameters, "MINUTES", context) or None
        require_backend()
        from ...backend.adapt import SPECTRAL_FORMS, finetune_scene

        card = self.call(finetune_scene, pan, ms, output, feedback=feedback, model=model, sensor=sensor,
                         iterations=self.optional_number(parameters, "ITERATIONS", context), minutes=minutes,
                         base_weights=self.optional_file(parameters, "WEIGHTS", context) or "bundled",
                         spectral_form=SPECTRAL_FORMS[self.parameterAsEnum(parameters, "SPECTRAL_TERM", context)],
                         consistency=self.optional_number(parameters, "SPECTRAL_TERM_WEIGHT", context),
                         sam_weight=self.optional_number(parameters, "SAM_WEIGHT", context),
                         spatial=self.optional_number(parameters, "SPATIAL_WEIGHT", context),
                         device=self.device(parameters, context))
        return {"OUTPUT": output, "ITERATIONS_DONE": card["iterations"], "FINAL_LOSS": card["last_loss"]}


class TrainAlgorithm(DeepAlgorithm):
    ALGORITHM_ID = "train"
    ADVANCED = ("MAX_VALUE", "INIT_WEIGHTS", "DEVICE")

    def tags(self):
        return super().tags() + ["training", "PanCollection", "HDF5"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterFile("DATASET", tr("PanCollection HDF5 dataset"), extension="h5"))
        self.add(QgsProcessingParameterNumber("ITERATIONS", tr("Iterations"), QgsProcessingParameterNumber.Integer,
                                              defaultValue=2000, minValue=2))
        self.add(QgsProcessingParameterNumber("MAX_VALUE", tr("Maximum data value"),
                                              QgsProcessingParameterNumber.Double, defaultValue=2047.0,
                                              minValue=1e-6))
        self.add(QgsProcessingParameterFile("INIT_WEIGHTS", tr("Initial weights"), extension="pt", optional=True))
        self.add_device()
        self.add(QgsProcessingParameterFileDestination("OUTPUT", tr("Weights file"), tr("PyTorch file (*.pt)")),
                 "TRAIN_OUTPUT")
        self.addOutput(QgsProcessingOutputNumber("FINAL_LOSS", tr("Final training loss (L1, normalised)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        output = check_outputs(self, parameters, context)["OUTPUT"]
        dataset = self.optional_file(parameters, "DATASET", context)
        if not dataset:
            raise QgsProcessingException("DATASET: give a PanCollection HDF5 file.")
        require_backend()
        from ...backend.adapt import train_dataset

        card = self.call(train_dataset, dataset, output, feedback=feedback,
                         iterations=self.parameterAsInt(parameters, "ITERATIONS", context),
                         max_value=self.parameterAsDouble(parameters, "MAX_VALUE", context),
                         init_weights=self.optional_file(parameters, "INIT_WEIGHTS", context),
                         device=self.device(parameters, context))
        return {"OUTPUT": output, "FINAL_LOSS": card["last_loss"]}


HS_METHODS = ("inf", "glp", "upsample", "regression")   # enum order of METHOD in inf_fusion
HS_METHOD_LABELS = ("INF (scene-adapted)", "Detail injection (MTF-GLP hypersharpening)", "Upsampling (23-tap)",
                    "Detail injection from regressed MSI bands (hypersharpening)")


class InfFusionAlgorithm(DeepAlgorithm):
    ALGORITHM_ID = "inf_fusion"
    ADVANCED = ("ADAPTER", "SRF", "BACK_PROJECTION", "DEVICE", "OUTPUT_FLOAT32")

    def tags(self):
        return ["hyperspectral", "multispectral", "fusion", "HSI", "MSI", "INF", "implicit neural representation",
                "hypersharpening", "PyTorch"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("HSI", tr("Low-resolution hyperspectral image (HSI)")))
        self.add(QgsProcessingParameterRasterLayer("MSI", tr("High-resolution multispectral image (MSI)")))
        self.add(QgsProcessingParameterEnum("METHOD", tr("Method"), options=[tr(m) for m in HS_METHOD_LABELS],
                                            defaultValue=0))
        self.add(QgsProcessingParameterFile("SRF", tr("Spectral responses of the MSI bands (CSV)"), extension="csv",
                                            optional=True))
        self.add(QgsProcessingParameterNumber("ADAPT_ITERATIONS", tr("Scene adaptation iterations (INF)"),
                                              QgsProcessingParameterNumber.Integer, defaultValue=300,
                                              minValue=0))
        self.add(QgsProcessingParameterFile("ADAPTER", tr("INF adapter file (instead of adapting here)"),
                                            extension="pt", optional=True), "INF_ADAPTER")
        self.add(QgsProcessingParameterNumber("BACK_PROJECTION",
                                              tr("Back-projection onto the HSI (iterations, INF)"),
                                              QgsProcessingParameterNumber.Integer, defaultValue=3, minValue=0,
                                              maxValue=50))
        self.add_device()
        self.add(QgsProcessingParameterBoolean("OUTPUT_FLOAT32", tr("Write 32-bit float output"),
                                               defaultValue=False))
        self.add(scheduler_parameter())
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", tr("Fused hyperspectral image")), "HS_OUTPUT")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        output = check_outputs(self, parameters, context)["OUTPUT"]
        hsi = layer_file(self.parameterAsRasterLayer(parameters, "HSI", context), "HSI")
        msi = layer_file(self.parameterAsRasterLayer(parameters, "MSI", context), "MSI")
        method = HS_METHODS[self.parameterAsEnum(parameters, "METHOD", context)]
        require_backend()
        from ...backend import hyperspectral

        common = dict(device=self.device(parameters, context),
                      float32=self.parameterAsBoolean(parameters, "OUTPUT_FLOAT32", context),
                      scheduler=scheduler(self, parameters, context))
        if method == "inf":
            result = self.call(hyperspectral.inf_fusion, hsi, msi, output, feedback=feedback,
                               adapt_iterations=self.parameterAsInt(parameters, "ADAPT_ITERATIONS", context),
                               adapter=self.optional_file(parameters, "ADAPTER", context),
                               back_projection=self.parameterAsInt(parameters, "BACK_PROJECTION", context), **common)
        else:
            result = self.call(hyperspectral.fuse_baseline, hsi, msi, output, method, feedback=feedback,
                               srf=self.optional_file(parameters, "SRF", context), **common)
        feedback.pushInfo(run_summary(result))
        return {"OUTPUT": output}


def deep_algorithms():
    return [PanAdapterAlgorithm(), SSDiffAlgorithm(), FinetuneAlgorithm(), TrainAlgorithm(), InfFusionAlgorithm()]
