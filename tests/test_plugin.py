"""The plugin as QGIS sees it: loading, the provider, the algorithms, their help and parameters."""
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import CLASSICAL_IDS, REPO_ROOT
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
)

SENSOR_ORDER = ("generic", "worldview-2", "worldview-3", "quickbird", "ikonos", "geoeye-1", "pleiades",
                "gaofen-2", "landsat", "sentinel-2")


def test_class_factory_returns_a_plugin_that_registers_and_unloads_the_provider(qgis_iface, qgis_processing):
    from panadapter_qgis import classFactory

    registry = QgsApplication.processingRegistry()
    if registry.providerById("panadapter") is not None:  # left by another test's fixture
        registry.removeProvider("panadapter")

    plugin = classFactory(qgis_iface)
    plugin.initGui()
    plugin.initProcessing()  # QGIS calls both; the provider must be registered once
    provider = registry.providerById("panadapter")
    assert provider is not None
    assert provider.name() == "PanAdapter pansharpening"
    assert registry.algorithmById("panadapter:mtf_glp_fs") is not None

    plugin.unload()
    assert registry.providerById("panadapter") is None
    assert registry.algorithmById("panadapter:mtf_glp_fs") is None


def test_loading_the_plugin_does_not_import_torch():
    # A fresh interpreter: the test session itself may already have imported torch.
    script = textwrap.dedent("""
        import sys
        from qgis.core import QgsApplication
        app = QgsApplication([], False)
        app.initQgis()
        import panadapter_qgis
        plugin = panadapter_qgis.classFactory(None)
        plugin.initProcessing()
        provider = QgsApplication.processingRegistry().providerById("panadapter")
        print(len(provider.algorithms()), "torch" in sys.modules)
        plugin.unload()
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    count, torch_imported = result.stdout.split()[-2:]
    assert int(count) >= len(CLASSICAL_IDS)
    assert torch_imported == "False"


def test_provider_lists_every_classical_algorithm_id(panadapter_provider):
    assert panadapter_provider.id() == "panadapter"
    ids = {algorithm.name() for algorithm in panadapter_provider.algorithms()}
    assert set(CLASSICAL_IDS) <= ids
    for method_id in CLASSICAL_IDS:
        algorithm = QgsApplication.processingRegistry().algorithmById(f"panadapter:{method_id}")
        assert algorithm is not None, method_id
        assert algorithm.group() == "Classical pansharpening"
        assert algorithm.groupId() == "classical"


def test_algorithms_list_the_backend_methods(panadapter_provider, backend_ready):
    from panadapter_qgis.backend.classical import METHODS

    ids = {algorithm.name() for algorithm in panadapter_provider.algorithms() if algorithm.groupId() == "classical"}
    assert ids == set(METHODS) == set(CLASSICAL_IDS)


def test_every_algorithm_and_parameter_has_help(panadapter_provider):
    for algorithm in panadapter_provider.algorithms():
        name = algorithm.name()
        assert algorithm.displayName().strip(), name
        assert algorithm.shortDescription().strip(), name
        help_text = algorithm.shortHelpString()
        assert len(help_text) > 200, name
        assert not algorithm.helpUrl(), name
        assert not algorithm.icon().isNull(), name
        for parameter in algorithm.parameterDefinitions():
            assert parameter.description().strip(), (name, parameter.name())
            assert len(parameter.help().strip()) > 40, (name, parameter.name())
            assert parameter.description() in help_text, (name, parameter.name())


def test_create_instance_returns_a_fresh_algorithm_of_the_same_method(panadapter_provider):
    for algorithm in panadapter_provider.algorithms():
        instance = algorithm.createInstance()
        assert instance is not algorithm
        assert type(instance) is type(algorithm)
        assert instance.name() == algorithm.name()
        created = algorithm.create()  # what QGIS runs: a fresh, initialised copy
        assert created.id() == algorithm.id()
        assert [p.name() for p in created.parameterDefinitions()] == \
               [p.name() for p in algorithm.parameterDefinitions()]


def test_reloading_the_provider_creates_new_algorithms(panadapter_provider):
    before = {a.name(): a for a in panadapter_provider.algorithms()}
    classes_before = {name: type(a) for name, a in before.items()}
    panadapter_provider.refreshAlgorithms()
    after = {a.name(): a for a in panadapter_provider.algorithms()}
    assert set(after) == set(classes_before)
    assert all(type(after[name]) is classes_before[name] for name in after)


def test_parameters_follow_the_design(panadapter_provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("panadapter:brovey")
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == ["PAN", "MS", "MS_BANDS", "SENSOR", "DEVICE", "TILE_SIZE", "OUTPUT_FLOAT32", "SCHEDULER",
                     "OUTPUT"]
    p = {n: algorithm.parameterDefinition(n) for n in names}
    advanced = QgsProcessingParameterDefinition.FlagAdvanced
    optional = QgsProcessingParameterDefinition.FlagOptional
    assert [bool(p[n].flags() & advanced) for n in names] == [False, False, False, False, True, True, True, True,
                                                              False]

    assert p["PAN"].type() == "raster" and p["MS"].type() == "raster"
    assert p["MS_BANDS"].type() == "band"
    assert p["MS_BANDS"].parentLayerParameterName() == "MS"
    assert p["MS_BANDS"].allowMultiple() and p["MS_BANDS"].flags() & optional

    sensors = [option.lower() for option in p["SENSOR"].options()]
    assert len(sensors) == len(SENSOR_ORDER)
    for label, key in zip(sensors, SENSOR_ORDER):
        assert label.startswith(key), (label, key)
    assert p["SENSOR"].defaultValue() is None and p["SENSOR"].flags() & optional  # empty: from the metadata

    assert [o.split()[0].lower() for o in p["DEVICE"].options()] == ["automatic", "cpu", "cuda"]
    assert p["DEVICE"].defaultValue() == 0
    assert p["TILE_SIZE"].defaultValue() == 1024 and p["TILE_SIZE"].minimum() == 64
    assert p["OUTPUT_FLOAT32"].defaultValue() is False
    assert p["OUTPUT"].type() == "rasterDestination"
    assert p["OUTPUT"].defaultFileExtension() == "tif"


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos = []
        self.progress_values = []
        self.progressChanged.connect(self.progress_values.append)

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)
        super().pushInfo(info)


def _run_directly(algorithm_id, parameters, feedback=None):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    context = QgsProcessingContext()
    return algorithm.processAlgorithm(parameters, context, feedback or QgsProcessingFeedback())


def test_without_torch_running_explains_how_to_install_it(panadapter_provider, istanbul, tmp_path,
                                                           monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    pan, ms = istanbul
    output = tmp_path / "fused.tif"
    with pytest.raises(QgsProcessingException) as raised:
        _run_directly("panadapter:brovey", {"PAN": str(pan), "MS": str(ms), "OUTPUT": str(output)})
    message = str(raised.value)
    assert "PyTorch" in message
    assert "/usr/bin/python3 -m pip install --user torch" in message  # Linux
    assert "OSGeo4W Shell" in message and "python -m pip install torch" in message  # Windows
    assert "QGIS.app/Contents/MacOS/bin/python3" in message  # macOS
    assert not output.exists()


def test_dependency_status_does_not_import_torch(monkeypatch):
    from panadapter_qgis import dependencies

    monkeypatch.setitem(sys.modules, "torch", None)
    assert dependencies.torch_installed() is False
    with pytest.raises(dependencies.MissingDependencyError, match="pip install"):
        dependencies.require_torch()


def test_output_must_be_a_geotiff(panadapter_provider, istanbul, tmp_path):
    pan, ms = istanbul
    with pytest.raises(QgsProcessingException, match="GeoTIFF"):
        _run_directly("panadapter:brovey", {"PAN": str(pan), "MS": str(ms), "OUTPUT": str(tmp_path / "x.png")})


def test_run_in_qgis_writes_the_pan_grid(panadapter_provider, backend_ready, istanbul, tmp_path):
    """processing.run, as the toolbox, the modeler and scripts call it: the output is on the PAN grid."""
    from osgeo import gdal, osr
    import processing

    pan, ms = istanbul
    output = tmp_path / "brovey.tif"
    results = processing.run("panadapter:brovey", {"PAN": str(pan), "MS": str(ms), "SENSOR": 8,
                                                   "MS_BANDS": [3, 2, 1], "OUTPUT": str(output)})
    assert results["OUTPUT"] == str(output)
    fused, pan_ds, ms_ds = gdal.Open(str(output)), gdal.Open(str(pan)), gdal.Open(str(ms))
    assert fused.GetGeoTransform() == pytest.approx(pan_ds.GetGeoTransform())
    assert osr.SpatialReference(fused.GetProjection()).IsSame(osr.SpatialReference(pan_ds.GetProjection()))
    assert fused.RasterCount == 3
    assert [fused.GetRasterBand(i).GetDescription() for i in (1, 2, 3)] == \
           [ms_ds.GetRasterBand(i).GetDescription() for i in (3, 2, 1)]
    assert fused.GetRasterBand(1).DataType == ms_ds.GetRasterBand(1).DataType


def test_progress_and_messages_reach_the_feedback(panadapter_provider, backend_ready, istanbul, tmp_path):
    pan, ms = istanbul
    output = tmp_path / "gsa.tif"
    feedback = RecordingFeedback()
    results = _run_directly("panadapter:gsa", {"PAN": str(pan), "MS": str(ms), "TILE_SIZE": 128,
                                               "OUTPUT": str(output)}, feedback)
    assert results == {"OUTPUT": str(output)} and output.is_file()
    assert feedback.progress_values and max(feedback.progress_values) == pytest.approx(100.0)
    assert feedback.progress_values == sorted(feedback.progress_values)
    assert any("Wrote 3 bands" in info for info in feedback.infos)


def test_cancelling_stops_with_a_message_and_no_output(panadapter_provider, backend_ready, istanbul, tmp_path):
    pan, ms = istanbul
    output = tmp_path / "cancelled.tif"
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="cancel"):
        _run_directly("panadapter:mtf_glp", {"PAN": str(pan), "MS": str(ms), "TILE_SIZE": 128,
                                             "OUTPUT": str(output)}, feedback)
    assert not output.exists()
    assert not list(tmp_path.iterdir())


def test_a_layer_not_read_by_gdal_is_refused_with_advice(panadapter_provider, istanbul, tmp_path):
    from qgis.core import QgsRasterLayer

    pan, ms = istanbul
    # A QGIS virtual raster (raster calculator on the fly) has no file GDAL could read.
    uri = (f"?crs=EPSG:32635&extent=667642.5,4548607.5,676012.5,4554217.5&width=558&height=374"
           f"&formula=%22p@1%22&p:uri={pan}&p:provider=gdal")
    virtual = QgsRasterLayer(uri, "calculated PAN", "virtualraster")
    assert virtual.isValid()
    with pytest.raises(QgsProcessingException, match="GDAL only.*GeoTIFF"):
        _run_directly("panadapter:brovey", {"PAN": virtual, "MS": str(ms), "OUTPUT": str(tmp_path / "x.tif")})
