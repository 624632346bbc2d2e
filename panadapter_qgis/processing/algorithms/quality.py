# SPDX-License-Identifier: GPL-2.0-or-later
"""Quality assessment: ``panadapter:degrade`` (Wald's protocol) and ``panadapter:assess`` (the indices).

Thin algorithms over ``backend.wald.degrade`` and ``backend.assess`` (docs/BACKEND_API.md): they translate
parameters, progress and errors; the backend does the work.
"""
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from .common import (TableAlgorithm, band_list, check_outputs, layer_file, require_backend, scheduler,
                     scheduler_parameter, sensor_choice, tr)
from ..help import QUALITY_ALGORITHMS, quality_parameter_help

GROUP = "Quality assessment"
GROUP_ID = "quality"
PAN_MODE_LABELS = ("MTF: sensor panchromatic MTF, then decimation", "Bicubic: MATLAB imresize (antialiased)")


def load_backend():
    """Check PyTorch, then import the backend modules (QgsProcessingException with instructions otherwise)."""
    require_backend()
    from ...backend import assess, wald
    from ...backend.errors import PansharpenError
    return assess, wald, PansharpenError


class QualityAlgorithm(TableAlgorithm):
    """What the two quality algorithms share: group, help table and parameter help."""

    HELP = QUALITY_ALGORITHMS
    GROUP = GROUP
    GROUP_ID = GROUP_ID
    ADVANCED = ()

    def add_parameters(self, parameters):
        advanced = QgsProcessingParameterDefinition.FlagAdvanced
        for parameter in parameters:
            if parameter.name() in self.ADVANCED:
                parameter.setFlags(parameter.flags() | advanced)
            parameter.setHelp(tr(quality_parameter_help(self.ALGORITHM_ID, parameter.name())))
            self.addParameter(parameter)


class DegradeAlgorithm(QualityAlgorithm):
    """Wald's protocol: the reduced-resolution pair of a full-resolution PAN/MS pair."""

    ALGORITHM_ID = "degrade"
    PAN = "PAN"
    MS = "MS"
    MS_BANDS = "MS_BANDS"
    SENSOR = "SENSOR"
    PAN_MODE = "PAN_MODE"
    OUTPUT_FLOAT32 = "OUTPUT_FLOAT32"
    OUTPUT_PAN = "OUTPUT_PAN"
    OUTPUT_MS = "OUTPUT_MS"
    OUTPUT_REFERENCE = "OUTPUT_REFERENCE"
    ADVANCED = (OUTPUT_FLOAT32,)

    def tags(self):
        return ["wald", "protocol", "reduced resolution", "degrade", "quality", "pansharpening", "mtf"]

    def initAlgorithm(self, config=None):  # noqa: N802
        from ...backend.sensors import SENSORS

        self.add_parameters([
            QgsProcessingParameterRasterLayer(self.PAN, tr("Panchromatic image (PAN)")),
            QgsProcessingParameterRasterLayer(self.MS, tr("Multispectral image (MS)")),
            QgsProcessingParameterBand(self.MS_BANDS, tr("Multispectral bands to keep (default: all)"),
                                       None, self.MS, optional=True, allowMultiple=True),
            QgsProcessingParameterEnum(self.SENSOR, tr("Sensor"), options=[s.label for s in SENSORS],
                                       optional=True),
            QgsProcessingParameterEnum(self.PAN_MODE, tr("Panchromatic degradation"),
                                       options=[tr(label) for label in PAN_MODE_LABELS], defaultValue=0),
            QgsProcessingParameterBoolean(self.OUTPUT_FLOAT32, tr("Write 32-bit float outputs"),
                                          defaultValue=True),
            scheduler_parameter(),
            QgsProcessingParameterRasterDestination(self.OUTPUT_PAN, tr("Reduced panchromatic image")),
            QgsProcessingParameterRasterDestination(self.OUTPUT_MS, tr("Reduced multispectral image")),
            QgsProcessingParameterRasterDestination(self.OUTPUT_REFERENCE,
                                                    tr("Reference (multispectral image on the processing grid)"),
                                                    optional=True, createByDefault=False),
        ])

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        outputs = check_outputs(self, parameters, context)
        pan_path = layer_file(self.parameterAsRasterLayer(parameters, self.PAN, context), self.PAN)
        ms_path = layer_file(self.parameterAsRasterLayer(parameters, self.MS, context), self.MS)
        ms_bands = band_list(self, parameters, self.MS_BANDS, context)
        sensor = sensor_choice(self, parameters, context, feedback, pan_path, ms_path)
        pan_mode = self.parameterAsEnum(parameters, self.PAN_MODE, context)
        float32 = self.parameterAsBoolean(parameters, self.OUTPUT_FLOAT32, context)
        out_pan, out_ms = outputs[self.OUTPUT_PAN], outputs[self.OUTPUT_MS]
        out_ref = outputs[self.OUTPUT_REFERENCE] or None

        _, wald, PansharpenError = load_backend()
        try:
            result = wald.degrade(
                pan_path, ms_path, out_pan, out_ms, sensor=sensor, pan_mode=pan_mode, ms_bands=ms_bands,
                float32=float32, out_reference=out_ref,
                progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                is_cancelled=feedback.isCanceled, log=feedback.pushWarning,
                scheduler=scheduler(self, parameters, context))
        except PansharpenError as error:
            raise QgsProcessingException(str(error)) from error
        feedback.pushInfo(f"Wrote the reduced pair (ratio {result['ratio']}): multispectral {result['cols']} x "
                          f"{result['rows']} x {result['bands']}, panchromatic on the multispectral grid, in "
                          f"{result['seconds']:.1f} s. Reference for the assessment: {result['reference']}.")
        outputs = {self.OUTPUT_PAN: out_pan, self.OUTPUT_MS: out_ms}
        if out_ref:
            outputs[self.OUTPUT_REFERENCE] = out_ref
        return outputs


class AssessAlgorithm(QualityAlgorithm):
    """Quality indices of fused rasters, at reduced resolution (reference) or full resolution (PAN + MS)."""

    ALGORITHM_ID = "assess"
    FUSED = "FUSED"
    REFERENCE = "REFERENCE"
    PAN = "PAN"
    MS = "MS"
    SENSOR = "SENSOR"
    DIM_CUT = "DIM_CUT"
    RATIO = "RATIO"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_CSV = "OUTPUT_CSV"
    RESULTS = "RESULTS"
    ADVANCED = (DIM_CUT, RATIO)
    # Processing output name -> backend key, in report order
    NUMBERS = {"SAM": "sam", "ERGAS": "ergas", "Q2N": "q2n", "Q_AVG": "q_avg", "SCC": "scc", "PSNR": "psnr",
               "SSIM": "ssim", "D_LAMBDA": "d_lambda", "D_S": "d_s", "HQNR": "hqnr", "QNR": "qnr"}
    NUMBER_LABELS = {"SAM": "SAM, degrees", "ERGAS": "ERGAS", "Q2N": "Q2n", "Q_AVG": "Q (band average)",
                     "SCC": "Spatial correlation coefficient", "PSNR": "PSNR, dB", "SSIM": "SSIM (mean)",
                     "D_LAMBDA": "D_lambda (Khan)",
                     "D_S": "D_s", "HQNR": "HQNR", "QNR": "QNR"}

    def tags(self):
        return ["quality", "assessment", "metrics", "indices", "sam", "ergas", "q2n", "q4", "q8", "scc", "psnr", "ssim",
                "qnr", "hqnr", "wald", "pansharpening"]

    def notes(self):
        return ["Choose exactly one mode: a reference (reduced resolution), or the panchromatic and "
                "multispectral images (full resolution).",
                "With one raster, every index is also an output number (SAM, ERGAS, Q2N, Q_AVG, SCC, PSNR, SSIM, or "
                "D_LAMBDA, D_S, HQNR, QNR); RESULTS holds every row as JSON."] + super().notes()

    def initAlgorithm(self, config=None):  # noqa: N802
        from ...backend.sensors import SENSORS

        self.add_parameters([
            QgsProcessingParameterMultipleLayers(self.FUSED, tr("Pansharpened rasters to assess"),
                                                 QgsProcessing.TypeRaster),
            QgsProcessingParameterRasterLayer(self.REFERENCE, tr("Reference image (reduced-resolution mode)"),
                                              optional=True),
            QgsProcessingParameterRasterLayer(self.PAN, tr("Panchromatic image (full-resolution mode)"),
                                              optional=True),
            QgsProcessingParameterRasterLayer(self.MS, tr("Multispectral image (full-resolution mode)"),
                                              optional=True),
            QgsProcessingParameterEnum(self.SENSOR, tr("Sensor"), options=[s.label for s in SENSORS],
                                       optional=True),
            QgsProcessingParameterNumber(self.DIM_CUT, tr("Border cut (pixels)"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=21, minValue=0),
            QgsProcessingParameterNumber(self.RATIO, tr("Resolution ratio for ERGAS (0: from metadata)"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0),
            QgsProcessingParameterFileDestination(self.OUTPUT_HTML, tr("Quality report"),
                                                  tr("HTML files (*.html)"), optional=True,
                                                  createByDefault=True),
            QgsProcessingParameterFileDestination(self.OUTPUT_CSV, tr("Quality table (CSV)"),
                                                  tr("CSV files (*.csv)"), optional=True,
                                                  createByDefault=False),
            scheduler_parameter(),
        ])
        for name, label in self.NUMBER_LABELS.items():
            self.addOutput(QgsProcessingOutputNumber(name, tr(label)))
        self.addOutput(QgsProcessingOutputString(self.RESULTS, tr("Every row, as JSON")))

    def _optional_file(self, parameters, name, context):
        layer = self.parameterAsRasterLayer(parameters, name, context)
        return layer_file(layer, name) if layer is not None else None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        outputs = check_outputs(self, parameters, context)
        layers = self.parameterAsLayerList(parameters, self.FUSED, context)
        if not layers:
            raise QgsProcessingException("Give at least one pansharpened raster to assess (FUSED).")
        fused = [layer_file(layer, self.FUSED) for layer in layers]
        reference = self._optional_file(parameters, self.REFERENCE, context)
        pan = self._optional_file(parameters, self.PAN, context)
        ms = self._optional_file(parameters, self.MS, context)
        if reference and (pan or ms):
            raise QgsProcessingException(
                "Choose one mode: a REFERENCE (reduced resolution) or the PAN and MS (full resolution), not "
                "both.")
        if not reference and not (pan and ms):
            if pan or ms:
                missing = "MS" if pan else "PAN"
                raise QgsProcessingException(
                    f"Full-resolution mode needs both the PAN and the MS; the {missing} is missing.")
            raise QgsProcessingException(
                "Give a REFERENCE (reduced-resolution mode) or the PAN and MS the rasters were made from "
                "(full-resolution mode).")
        sensor = sensor_choice(self, parameters, context, feedback, *((reference,) if reference else (pan, ms)))
        dim_cut = self.parameterAsInt(parameters, self.DIM_CUT, context)
        ratio = self.parameterAsInt(parameters, self.RATIO, context) or None
        html_path, csv_path = outputs[self.OUTPUT_HTML], outputs[self.OUTPUT_CSV]

        assess, _, PansharpenError = load_backend()
        common = dict(progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                      is_cancelled=feedback.isCanceled, log=feedback.pushInfo,
                      scheduler=scheduler(self, parameters, context))
        try:
            if reference:
                feedback.pushInfo(f"Reduced resolution: {len(fused)} raster(s) against "
                                  f"{os.path.basename(reference)}.")
                results = assess.assess_reduced(fused, reference, ratio=ratio, dim_cut=dim_cut, sensor=sensor,
                                                **common)
            else:
                feedback.pushInfo(f"Full resolution: {len(fused)} raster(s) against {os.path.basename(pan)} "
                                  f"and {os.path.basename(ms)}.")
                results = assess.assess_full(fused, pan, ms, sensor=sensor, **common)
            for note in results["notes"]:
                feedback.pushWarning(note)
            if html_path:
                assess.write_html_report(results, html_path)
            if csv_path:
                assess.write_csv(results, csv_path)
        except PansharpenError as error:
            raise QgsProcessingException(str(error)) from error
        feedback.pushInfo(assess.format_table(results))

        outputs = {self.RESULTS: assess.to_json(results)}
        if html_path:
            outputs[self.OUTPUT_HTML] = html_path
        if csv_path:
            outputs[self.OUTPUT_CSV] = csv_path
        if len(results["rows"]) == 1:
            row = results["rows"][0]
            for name, key in self.NUMBERS.items():
                if key in row:
                    outputs[name] = float(row[key])
        return outputs


def quality_algorithms():
    """Fresh instances of the quality algorithms."""
    return [DegradeAlgorithm(), AssessAlgorithm()]
