"""The Processing model of the desktop test: degrade -> mtf_glp_fs -> assess (Wald's protocol as one tool).

``build_model()`` makes it with the modeler's API (what the graphical modeler writes: inputs PAN, MS and an
optional SENSOR; the children ``degrade`` (the reduced pair), ``sharpen`` (MTF-GLP-FS on it) and ``assess``
(the fused raster against the original MS); the quality indices and the HTML report as model outputs). The
desktop test builds it in the real QGIS window, opens it in the graphical modeler and checks that it has the
structure of the committed ``tests/data/degrade_sharpen_assess.model3``, which qgis_process then runs.

Regenerate the committed file (after changing ``build_model``) with
``QT_QPA_PLATFORM=offscreen .venv/bin/python tests/desktop_model.py``.
"""
import os
import sys

MODEL_NAME = "degrade_sharpen_assess"
MODEL_GROUP = "PanAdapter tests"
MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", f"{MODEL_NAME}.model3")
SHARPEN_ID = "panadapter:mtf_glp_fs"
# assess's index outputs that the model exposes (all of them at reduced resolution)
INDEX_OUTPUTS = ("ERGAS", "SAM", "Q2N", "Q_AVG", "SCC", "PSNR", "SSIM")


def build_model():
    """The model (``QgsProcessingModelAlgorithm``); the ``panadapter`` provider must be registered."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterEnum,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    registry = QgsApplication.processingRegistry()
    degrade_alg = registry.algorithmById("panadapter:degrade")
    if degrade_alg is None:
        raise RuntimeError("the panadapter provider is not registered")
    sensor_options = degrade_alg.parameterDefinition("SENSOR").options()

    model = QgsProcessingModelAlgorithm(MODEL_NAME, MODEL_GROUP)
    model.setHelpContent({"ALG_DESC": "Wald's protocol in one model: degrade the pair, sharpen the reduced pair "
                                      "with MTF-GLP-FS, assess the result against the original multispectral "
                                      "image."})
    inputs = (
        ("PAN", QgsProcessingParameterRasterLayer("PAN", "Panchromatic image (PAN)"), QPointF(120, 60)),
        ("MS", QgsProcessingParameterRasterLayer("MS", "Multispectral image (MS)"), QPointF(340, 60)),
        ("SENSOR", QgsProcessingParameterEnum("SENSOR", "Sensor", options=sensor_options, optional=True),
         QPointF(560, 60)),
    )
    for name, definition, position in inputs:
        component = QgsProcessingModelParameter(name)
        component.setPosition(position)
        model.addModelParameter(definition, component)

    def child(child_id, algorithm_id, description, position, sources):
        """A child with the given sources and, as the modeler fills them in, the defaults of the others."""
        algorithm = registry.algorithmById(algorithm_id)
        if algorithm is None:
            raise RuntimeError(f"{algorithm_id} is not registered")
        component = QgsProcessingModelChildAlgorithm(algorithm_id)
        component.setChildId(child_id)
        component.setDescription(description)
        component.setPosition(position)
        for parameter in algorithm.parameterDefinitions():
            name = parameter.name()
            if name in sources:
                value = sources[name]
                component.addParameterSources(name, value if isinstance(value, list) else [value])
            elif not parameter.isDestination() and parameter.defaultValue() is not None:
                component.addParameterSources(name, [Source.fromStaticValue(parameter.defaultValue())])
        unknown = set(sources) - {p.name() for p in algorithm.parameterDefinitions()}
        if unknown:
            raise RuntimeError(f"{algorithm_id} has no parameter {sorted(unknown)}")
        return component

    degrade = child("degrade", "panadapter:degrade", "Degrade the pair (Wald's protocol)", QPointF(340, 220), {
        "PAN": Source.fromModelParameter("PAN"), "MS": Source.fromModelParameter("MS"),
        "SENSOR": Source.fromModelParameter("SENSOR"), "PAN_MODE": Source.fromStaticValue(0),
        "OUTPUT_FLOAT32": Source.fromStaticValue(True)})
    sharpen = child("sharpen", SHARPEN_ID, "Sharpen the reduced pair (MTF-GLP-FS)", QPointF(340, 380), {
        "PAN": Source.fromChildOutput("degrade", "OUTPUT_PAN"), "MS": Source.fromChildOutput("degrade", "OUTPUT_MS"),
        "SENSOR": Source.fromModelParameter("SENSOR"), "OUTPUT_FLOAT32": Source.fromStaticValue(True)})
    assess = child("assess", "panadapter:assess", "Assess against the original MS", QPointF(340, 540), {
        "FUSED": [Source.fromChildOutput("sharpen", "OUTPUT")], "REFERENCE": Source.fromModelParameter("MS"),
        "SENSOR": Source.fromModelParameter("SENSOR"), "DIM_CUT": Source.fromStaticValue(21),
        "RATIO": Source.fromStaticValue(0)})
    outputs = {}
    for index, name in enumerate(("OUTPUT_HTML",) + INDEX_OUTPUTS):
        model_name = "QUALITY_REPORT" if name == "OUTPUT_HTML" else name
        output = QgsProcessingModelOutput(model_name, "Quality report" if name == "OUTPUT_HTML" else model_name)
        output.setChildId("assess")
        output.setChildOutputName(name)
        output.setPosition(QPointF(640, 470 + 32 * index))
        outputs[model_name] = output
    assess.setModelOutputs(outputs)
    for component in (degrade, sharpen, assess):
        model.addChildAlgorithm(component)
    return model


def structure(model):
    """What must not change: the inputs, the children (algorithm and sources) and the model outputs."""
    children = {}
    for child_id, child in model.childAlgorithms().items():
        sources = {}
        for parameter, values in child.parameterSources().items():
            sources[parameter] = [(value.source(), value.parameterName(), value.outputChildId(), value.outputName(),
                                   value.staticValue()) for value in values]
        children[child_id] = {"algorithm": child.algorithmId(), "sources": sources,
                              "outputs": {name: output.childOutputName()
                                          for name, output in child.modelOutputs().items()}}
    return {"name": model.name(), "group": model.group(),
            "inputs": sorted((p.name(), p.type(), bool(p.flags() & p.FlagOptional))
                             for p in model.parameterDefinitions() if not p.isDestination()),
            "children": children,
            "outputs": sorted(o.name() for o in model.outputDefinitions())}


def main():
    """Regenerate ``tests/data/degrade_sharpen_assess.model3`` (run with QT_QPA_PLATFORM=offscreen)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from panadapter_qgis.processing.provider import PanAdapterProvider

    provider = PanAdapterProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    model = build_model()
    os.makedirs(os.path.dirname(MODEL_FILE), exist_ok=True)
    if not model.toFile(MODEL_FILE):
        raise SystemExit(f"could not write {MODEL_FILE}")
    print(f"Wrote {MODEL_FILE}")
    del model
    app.exitQgis()


if __name__ == "__main__":
    main()
