"""The desktop experience with pytest-qgis: the preview dock, its pickers and methods, previews of a real scene
on the map canvas (the pixels of the Processing algorithm), RGB styling of Processing outputs, device status,
"Run on whole scene", and an unload that leaves nothing behind. Screenshots go to tests/artifacts/."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import CLASSICAL_IDS, REPO_ROOT
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QSize, QTimer
from qgis.PyQt.QtGui import QColor

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
PAN_PIXEL = 0.3
# The WorldView-3 scene's PAN grid origin (EPSG:32642) and the canvas window used below: rows 120..269,
# cols 100..299 of the PAN, on a 200 x 150 pixel canvas at the PAN's native 0.3 m.
ORIGIN_X, ORIGIN_Y = 400430.4, 4217661.6
ROW0, COL0, WIDTH, HEIGHT = 120, 100, 200, 150


def window_extent(row0, col0, rows, cols, pixel=PAN_PIXEL):
    x0, y1 = ORIGIN_X + col0 * PAN_PIXEL, ORIGIN_Y - row0 * PAN_PIXEL
    return QgsRectangle(x0, y1 - rows * pixel, x0 + cols * pixel, y1)


def process_events(seconds=0.05):
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


@pytest.fixture
def wv3(data_dir):
    scene = data_dir / "pansharpening" / "wv3_cristianics"
    if not (scene / "pan.tif").is_file():
        pytest.skip(f"missing scene {scene}")
    return scene / "pan.tif", scene / "ms.tif"


@pytest.fixture
def plugin(qgis_iface, qgis_processing, qgis_new_project):
    """The plugin as QGIS loads it (initProcessing, initGui); unloaded after the test."""
    from panadapter_qgis import classFactory

    registry = QgsApplication.processingRegistry()
    if registry.providerById("panadapter") is not None:  # left by another test's fixture
        registry.removeProvider("panadapter")
    instance = classFactory(qgis_iface)
    instance.initProcessing()
    instance.initGui()
    yield instance
    instance.unload()
    process_events()


@pytest.fixture
def wv3_layers(wv3, qgis_new_project):
    pan, ms = (QgsRasterLayer(str(path), name, "gdal") for path, name in zip(wv3, ("wv3 pan", "wv3 ms")))
    assert pan.isValid() and ms.isValid()
    qgis_new_project.addMapLayers([pan, ms])
    return pan, ms


@pytest.fixture
def canvas(qgis_canvas, qgis_parent):
    """The map canvas shown (offscreen) with a 200 x 150 pixel map in the PAN's CRS; restored afterwards."""
    qgis_parent.show()
    frame = qgis_canvas.frameWidth()
    qgis_canvas.resize(WIDTH + 2 * frame, HEIGHT + 2 * frame)
    process_events()
    assert qgis_canvas.mapSettings().outputSize() == QSize(WIDTH, HEIGHT)
    qgis_canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32642"))
    yield qgis_canvas
    qgis_canvas.setLayers([])
    qgis_parent.hide()
    qgis_canvas.resize(600, 600)


def set_view(canvas, extent):
    canvas.setExtent(extent)
    process_events()
    return canvas.extent()


def choose(dock, pan, ms, method="mtf_glp_fs", sensor=2):
    dock.pan_combo.setLayer(pan)
    dock.ms_combo.setLayer(ms)
    dock.method_combo.setCurrentIndex(dock.method_combo.findData(method))
    dock.sensor_combo.setCurrentIndex(sensor)


def press_preview(dock):
    dock.preview_button.click()
    return dock.task is not None


def wait_for_preview(dock, start=press_preview, timeout=180):
    """``start(dock)`` (default: press Preview; True when a task started) and run the event loop until the
    task's result is on the map."""
    finished = []
    loop = QEventLoop()

    def done(ok, message):
        finished.append((ok, message))
        loop.quit()

    dock.previewFinished.connect(done)
    try:
        assert start(dock), dock.status_label.text()
        if not finished:
            QTimer.singleShot(timeout * 1000, loop.quit)
            loop.exec_()
    finally:
        dock.previewFinished.disconnect(done)
    assert finished, "the preview did not finish in time"
    return finished[-1]


def preview_layers():
    from panadapter_qgis.gui.preview_dock import PREVIEW_PROPERTY

    return [layer for layer in QgsProject.instance().mapLayers().values()
            if layer.customProperty(PREVIEW_PROPERTY)]


def render(layers, extent, crs, path, size=QSize(600, 450)):
    """Render layers as the canvas would, into a PNG test artefact."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setOutputSize(size)
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert image.save(str(path))
    return image


def save_dock_screenshot(dock, path, expand=(), height=560):
    dock.setFloating(True)
    dock.resize(360, height)
    dock.show()
    for box in (dock.help_box, dock.device_box):  # a hidden group box ignores setCollapsed
        box.setCollapsed(box not in expand)
    process_events(0.2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert dock.grab().save(str(path))
    dock.hide()


# ------------------------------------------------------------------------------------------- the dock

def test_the_dock_loads_with_a_toolbar_button_and_a_raster_menu_entry(plugin, qgis_iface):
    from panadapter_qgis.gui.preview_dock import PreviewDock

    dock = plugin.dock
    assert isinstance(dock, PreviewDock) and dock.windowTitle() == "Pansharpening preview"
    menu_calls = [call.args for call in qgis_iface.addPluginToRasterMenu.call_args_list]
    assert ("&PanAdapter", plugin.preview_action) in menu_calls
    assert ("&PanAdapter", plugin.device_action) in menu_calls
    assert plugin.preview_action.text() == "Pansharpening preview"
    assert plugin.device_action.text() == "Device and dependencies"
    assert dock.isHidden()
    plugin.preview_action.setChecked(True)
    assert not dock.isHidden()
    dock.close()
    assert not plugin.preview_action.isChecked()


def test_the_methods_are_the_providers_sharpening_algorithms(plugin):
    dock = plugin.dock
    methods = [dock.method_combo.itemData(i) for i in range(dock.method_combo.count())
               if dock.method_combo.itemData(i)]
    assert set(CLASSICAL_IDS) <= set(methods)
    assert "assess" not in methods and "degrade" not in methods  # not sharpening algorithms
    assert dock.method_id() == "mtf_glp_fs"
    assert dock.sensor_combo.count() == 10 and dock.sensor_combo.itemText(2).startswith("WorldView-3")
    assert [dock.device_combo.itemText(i).split()[0] for i in range(3)] == ["Automatic", "CPU", "CUDA"]


def test_the_method_list_follows_the_provider(plugin):
    dock = plugin.dock
    dock.method_combo.setCurrentIndex(dock.method_combo.findData("pracs"))
    plugin.provider.refreshAlgorithms()  # new algorithm objects: the dock must not hold the old ones
    assert dock.method_id() == "pracs"
    dock.method_combo.setCurrentIndex(dock.method_combo.findData("gs"))
    assert dock.sensor_combo.count() == 10
    QgsApplication.processingRegistry().removeProvider(plugin.provider)
    plugin.provider = None
    assert dock.method_combo.count() == 0 and dock.method_id() is None
    plugin.initProcessing()
    assert dock.method_id() == "gs" and dock.method_combo.count() >= len(CLASSICAL_IDS)


def test_the_pickers_list_only_rasters(plugin, wv3_layers, qgis_new_project):
    pan, ms = wv3_layers
    vector = QgsVectorLayer("Point?crs=EPSG:32642", "points", "memory")
    assert vector.isValid()
    qgis_new_project.addMapLayer(vector)
    dock = plugin.dock

    def listed(combo):
        return [combo.layer(i) for i in range(combo.count())]

    assert listed(dock.pan_combo) == [pan]   # single-band rasters
    assert listed(dock.ms_combo) == [ms]     # rasters with several bands
    assert vector not in listed(dock.pan_combo) + listed(dock.ms_combo)
    assert dock.pan_layer() is pan and dock.ms_layer() is ms
    assert dock.bands_combo.count() == 8 and dock.ms_bands() == list(range(1, 9))


# -------------------------------------------------------------------------------------- the preview

def test_a_native_resolution_preview_has_the_pixels_of_the_processing_algorithm(
        plugin, wv3, wv3_layers, canvas, tmp_path):
    import processing

    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "mtf_glp_fs", sensor=2)
    view = set_view(canvas, window_extent(ROW0, COL0, HEIGHT, WIDTH))
    assert canvas.mapUnitsPerPixel() == pytest.approx(PAN_PIXEL)

    ok, message = wait_for_preview(dock)
    assert ok, message
    layers = preview_layers()
    assert len(layers) == 1
    layer = layers[0]
    assert layer is dock.preview_layer() and layer.crs() == pan.crs()
    half = PAN_PIXEL / 2
    for got, want in zip((layer.extent().xMinimum(), layer.extent().yMinimum(), layer.extent().xMaximum(),
                          layer.extent().yMaximum()),
                         (view.xMinimum(), view.yMinimum(), view.xMaximum(), view.yMaximum())):
        assert abs(got - want) < half
    assert (layer.width(), layer.height()) == (WIDTH, HEIGHT)
    renderer = layer.renderer()
    assert renderer.type() == "multibandcolor"
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (5, 3, 2)
    root = QgsProject.instance().layerTreeRoot()
    assert root.children()[0].name() == "PanAdapter preview"
    assert root.findLayer(layer.id()).parent().name() == "PanAdapter preview"

    # the Processing algorithm over the whole scene, same parameters, Float32
    output = str(tmp_path / "whole.tif")
    processing.run("panadapter:mtf_glp_fs", {"PAN": str(wv3[0]), "MS": str(wv3[1]), "SENSOR": 2,
                                             "OUTPUT_FLOAT32": True, "OUTPUT": output})
    whole = gdal.Open(output).ReadAsArray()[:, ROW0:ROW0 + HEIGHT, COL0:COL0 + WIDTH]
    shown = gdal.Open(layer.source()).ReadAsArray()
    np.testing.assert_allclose(shown, whole, rtol=1e-4, atol=1e-4 * float(np.abs(whole).max()))

    render([layer], view, canvas.mapSettings().destinationCrs(), ARTIFACTS / "canvas_preview_native.png")
    render([pan], view, canvas.mapSettings().destinationCrs(), ARTIFACTS / "canvas_pan_native.png")
    save_dock_screenshot(dock, ARTIFACTS / "dock.png")

    # a second preview replaces the first: one preview layer, the first file deleted
    first_path = layer.source()
    set_view(canvas, window_extent(ROW0 + 60, COL0 + 80, HEIGHT, WIDTH))
    ok, message = wait_for_preview(dock)
    assert ok, message
    assert len(preview_layers()) == 1 and preview_layers()[0].source() != first_path
    assert not os.path.exists(first_path)


def test_a_zoomed_out_preview_never_has_more_pixels_than_the_canvas(plugin, wv3_layers, canvas):
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "gsa", sensor=2)
    center = window_extent(0, 0, 572, 576).center()

    set_view(canvas, QgsRectangle.fromCenterAndSize(center, WIDTH * 0.5, HEIGHT * 0.5))  # 0.5 m per pixel
    ok, message = wait_for_preview(dock)
    assert ok, message
    layer = dock.preview_layer()
    assert layer.width() <= WIDTH and layer.height() <= HEIGHT
    assert "1:2" in layer.name() and "averaged to 1:2" in message
    assert layer.rasterUnitsPerPixelX() == pytest.approx(2 * PAN_PIXEL)

    canvas.zoomToFullExtent()
    set_view(canvas, window_extent(0, 0, 572, 576).buffered(20))
    ok, message = wait_for_preview(dock)
    assert ok, message
    layer = dock.preview_layer()
    assert layer.width() <= WIDTH and layer.height() <= HEIGHT
    assert "multispectral only" in layer.name()
    assert len(preview_layers()) == 1
    render([layer], canvas.extent(), canvas.mapSettings().destinationCrs(),
           ARTIFACTS / "canvas_preview_zoomed_out.png")


def test_a_canvas_in_another_crs_gets_a_preview_in_the_pan_crs(plugin, wv3_layers, canvas):
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "brovey", sensor=2)
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    to_mercator = QgsCoordinateTransform(pan.crs(), mercator, QgsProject.instance())
    canvas.setDestinationCrs(mercator)
    view = set_view(canvas, to_mercator.transformBoundingBox(window_extent(ROW0, COL0, HEIGHT, WIDTH)))
    ok, message = wait_for_preview(dock)
    assert ok, message
    layer = dock.preview_layer()
    assert layer.crs() == pan.crs() and layer.crs() != canvas.mapSettings().destinationCrs()
    shown = to_mercator.transformBoundingBox(view, QgsCoordinateTransform.ReverseTransform)
    assert layer.extent().buffered(1e-6).contains(shown)   # everything the map shows ...
    assert shown.buffered(2 * layer.rasterUnitsPerPixelX()).contains(layer.extent())  # ... and little more
    assert layer.width() <= WIDTH + 1 and layer.height() <= HEIGHT + 1
    render([layer], view, mercator, ARTIFACTS / "canvas_preview_web_mercator.png")


def test_the_preview_follows_the_map_when_asked(plugin, wv3_layers, canvas):
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "brovey", sensor=2)
    set_view(canvas, window_extent(0, 0, HEIGHT, WIDTH))
    dock.auto_check.setChecked(True)
    def pan_the_map(dock):
        canvas.setExtent(window_extent(200, 300, HEIGHT, WIDTH))
        return dock.auto_timer.isActive()

    ok, message = wait_for_preview(dock, start=pan_the_map)
    assert ok, message
    extent = dock.preview_layer().extent()
    assert extent.xMinimum() == pytest.approx(ORIGIN_X + 300 * PAN_PIXEL)
    dock.auto_check.setChecked(False)
    canvas.setExtent(window_extent(10, 10, HEIGHT, WIDTH))
    process_events()
    assert not dock.auto_timer.isActive() and dock.task is None


def test_cancel_stops_the_preview_and_adds_nothing(plugin, wv3_layers, canvas):
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "pracs", sensor=2)
    set_view(canvas, window_extent(0, 0, HEIGHT, WIDTH))

    def start_and_cancel(dock):
        started = press_preview(dock)
        dock.cancel_button.click()
        return started

    ok, message = wait_for_preview(dock, start=start_and_cancel)
    assert not ok and "cancel" in message.lower()
    assert preview_layers() == []
    process_events(0.5)
    assert not [f for f in os.listdir(dock.temp_dir.path()) if f.endswith(".tif")]


@pytest.fixture(scope="module")
def wv3_adapter(data_dir, tmp_path_factory):
    """A PanAdapter adapter file for the WorldView-3 pair (8 bands: the bundled weights alone cannot sharpen
    it), from a short panadapter:finetune run: what a user points the dock to."""
    from panadapter_qgis.backend.adapt import finetune_scene

    scene = data_dir / "pansharpening" / "wv3_cristianics"
    if not (scene / "pan.tif").is_file():
        pytest.skip(f"missing scene {scene}")
    path = str(tmp_path_factory.mktemp("wv3_adapter") / "wv3.pt")
    finetune_scene(str(scene / "pan.tif"), str(scene / "ms.tif"), path, sensor=2, iterations=8, device="cpu")
    return path


def test_the_deep_models_show_their_own_inputs(plugin, wv3_layers):
    pan, ms = wv3_layers
    dock = plugin.dock
    methods = [dock.method_combo.itemData(i) for i in range(dock.method_combo.count())]
    assert {"panadapter", "ssdiff"} <= set(methods)
    assert not {"finetune", "train", "inf_fusion"} & set(methods)   # no PAN/MS -> raster algorithms

    def shown():
        return {name for name, label, widget in dock.model_rows if not widget.isHidden() and not label.isHidden()}

    choose(dock, pan, ms, "mtf_glp_fs")
    assert shown() == set() and dock.bands_combo.isEnabled()
    choose(dock, pan, ms, "panadapter")
    assert shown() == {"ADAPTER"}
    assert not dock.bands_combo.isEnabled() and dock.ms_bands() == list(range(1, 9))  # every band
    choose(dock, pan, ms, "ssdiff")
    assert shown() == {"ADAPTER", "STEPS", "SEED"}
    dock.adapter_widget.setFilePath("/nonexistent/adapter.pt")
    assert dock.start_preview() is False and "does not exist" in dock.status_label.text()


def test_a_deep_preview_has_the_pixels_of_its_algorithm(plugin, wv3, wv3_layers, wv3_adapter, canvas, tmp_path):
    import processing

    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "panadapter", sensor=2)
    dock.adapter_widget.setFilePath(wv3_adapter)
    view = set_view(canvas, window_extent(ROW0, COL0, HEIGHT, WIDTH))
    ok, message = wait_for_preview(dock)
    assert ok, message
    layer = dock.preview_layer()
    assert (layer.width(), layer.height()) == (WIDTH, HEIGHT) and "PanAdapter" in layer.name()
    output = str(tmp_path / "whole.tif")
    processing.run("panadapter:panadapter", {"PAN": str(wv3[0]), "MS": str(wv3[1]), "SENSOR": 2,
                                             "ADAPTER": wv3_adapter, "OUTPUT_FLOAT32": True, "OUTPUT": output})
    whole = gdal.Open(output).ReadAsArray()[:, ROW0:ROW0 + HEIGHT, COL0:COL0 + WIDTH]
    shown = gdal.Open(layer.source()).ReadAsArray()
    np.testing.assert_allclose(shown, whole, rtol=1e-4, atol=1e-4 * float(np.abs(whole).max()))
    render([layer], view, canvas.mapSettings().destinationCrs(), ARTIFACTS / "canvas_preview_panadapter.png")
    # "Run on whole scene" hands the adapter over, and no parameter the algorithm lacks
    parameters = dock.processing_parameters()
    assert parameters == {"PAN": pan.id(), "MS": ms.id(), "SENSOR": 2, "DEVICE": 0, "ADAPTER": wv3_adapter}


def test_a_method_without_window_fusion_or_missing_inputs_explain_themselves(plugin, wv3_layers, canvas):
    dock = plugin.dock
    dock.pan_combo.setLayer(None)
    assert dock.start_preview() is False
    assert "Choose a PAN and an MS layer" in dock.status_label.text()


# ---------------------------------------------------------------------- Processing, whole scene, device

def test_run_on_whole_scene_opens_the_algorithm_dialog_with_the_dock_choices(plugin, wv3_layers, monkeypatch):
    import processing

    calls = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg, params: calls.append((alg, params)))
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "bdsd_pc", sensor=2)
    dock.device_combo.setCurrentIndex(1)
    dock.bands_combo.setItemCheckState(0, 0)  # uncheck band 1 (Qt.Unchecked)
    dock.whole_scene_button.click()
    assert calls == [("panadapter:bdsd_pc", {"PAN": pan.id(), "MS": ms.id(), "MS_BANDS": [2, 3, 4, 5, 6, 7, 8],
                                             "SENSOR": 2, "DEVICE": 1})]


def test_the_real_algorithm_dialog_is_filled_with_the_dock_choices(plugin, wv3_layers, qgis_iface, monkeypatch):
    """What execAlgorithmDialog shows: QGIS 3.22's dialog built from the same parameters reads them back."""
    import processing

    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None, raising=False)  # missing from the stub
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "gsa", sensor=2)
    dock.device_combo.setCurrentIndex(1)
    dock.bands_combo.setItemCheckState(7, 0)  # uncheck band 8
    parameters = dock.processing_parameters()
    dialog = processing.createAlgorithmDialog("panadapter:gsa", parameters)
    try:
        shown = dialog.createProcessingParameters()
    finally:
        dialog.close()
    assert {name: shown[name] for name in parameters} == parameters
    assert shown["PAN"] == pan.id() and shown["MS_BANDS"] == [1, 2, 3, 4, 5, 6, 7]


def test_processing_outputs_added_to_the_project_are_true_colour(plugin, wv3, tmp_path, qgis_new_project):
    import processing

    output = str(tmp_path / "brovey.tif")
    processing.runAndLoadResults("panadapter:brovey", {"PAN": str(wv3[0]), "MS": str(wv3[1]), "SENSOR": 2,
                                                       "OUTPUT": output})
    loaded = [layer for layer in qgis_new_project.mapLayers().values() if layer.source() == output]
    assert len(loaded) == 1
    renderer = loaded[0].renderer()
    assert renderer.type() == "multibandcolor"
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (5, 3, 2)
    red = renderer.redContrastEnhancement()
    assert red.minimumValue() < red.maximumValue()
    render([loaded[0]], loaded[0].extent(), loaded[0].crs(), ARTIFACTS / "processing_output_styled.png")


def test_device_and_dependencies_name_torch_and_the_device(plugin, qgis_iface):
    import torch

    dialog = plugin.show_device_status()
    report = dialog.status.refresh()
    text = dialog.status.browser.toPlainText()
    assert torch.__version__ in text and "Runs on" in text
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in text
    else:
        assert "Why not a GPU" in text and report.cpu_reason
    save_dock_screenshot(plugin.dock, ARTIFACTS / "dock_device_section.png", expand=(plugin.dock.device_box,),
                         height=760)
    save_dock_screenshot(plugin.dock, ARTIFACTS / "dock_help_section.png", expand=(plugin.dock.help_box,),
                         height=900)


def test_without_torch_the_device_section_says_how_to_install_it(plugin, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    plugin.dock.device_status.refresh()
    text = plugin.dock.device_status.browser.toPlainText()
    assert "PyTorch: not available" in text
    assert "/usr/bin/python3 -m pip install --user torch" in text           # Linux
    assert "OSGeo4W Shell" in text and "python -m pip install torch" in text  # Windows
    assert "QGIS.app/Contents/MacOS/bin/python3" in text                   # macOS
    save_dock_screenshot(plugin.dock, ARTIFACTS / "dock_device_without_torch.png",
                         expand=(plugin.dock.device_box,), height=760)


def test_a_preview_without_torch_points_to_the_install_commands(plugin, wv3_layers, canvas, monkeypatch):
    pan, ms = wv3_layers
    dock = plugin.dock
    choose(dock, pan, ms, "brovey", sensor=2)
    set_view(canvas, window_extent(0, 0, HEIGHT, WIDTH))
    monkeypatch.setitem(sys.modules, "torch", None)
    ok, message = wait_for_preview(dock)
    assert not ok and "PyTorch is missing" in message
    assert "OSGeo4W Shell" in dock.device_status.browser.toPlainText()
    assert preview_layers() == []


# ------------------------------------------------------------------------------------------- unload

def test_unload_leaves_nothing_behind(qgis_iface, qgis_processing, qgis_new_project, wv3_layers, canvas,
                                      monkeypatch):
    from panadapter_qgis import classFactory
    from panadapter_qgis.gui.preview_dock import PREVIEW_GROUP

    registry = QgsApplication.processingRegistry()
    if registry.providerById("panadapter") is not None:
        registry.removeProvider("panadapter")
    removed_icons = []
    monkeypatch.setattr(qgis_iface, "removeToolBarIcon", removed_icons.append)
    receivers = canvas.receivers(canvas.extentsChanged)
    project = QgsProject.instance()
    project_receivers = project.receivers(project.layersAdded)
    registry_receivers = registry.receivers(registry.providerAdded)

    plugin = classFactory(qgis_iface)
    plugin.initProcessing()
    plugin.initGui()
    dock, actions = plugin.dock, (plugin.preview_action, plugin.device_action)
    choose(dock, *wv3_layers, "brovey", sensor=2)
    set_view(canvas, window_extent(0, 0, HEIGHT, WIDTH))
    dock.auto_check.setChecked(True)
    ok, message = wait_for_preview(dock)
    assert ok, message
    plugin.show_device_status()
    temp_dir, layer_path = dock.temp_dir.path(), dock.layer_path
    assert os.path.isfile(layer_path)

    plugin.unload()
    process_events()
    assert sip.isdeleted(dock)
    assert all(sip.isdeleted(action) for action in actions)
    assert removed_icons == [actions[0]]
    menu_removals = [call.args for call in qgis_iface.removePluginRasterMenu.call_args_list]
    assert ("&PanAdapter", actions[0]) in menu_removals and ("&PanAdapter", actions[1]) in menu_removals
    assert preview_layers() == []
    assert project.layerTreeRoot().findGroup(PREVIEW_GROUP) is None
    assert not os.path.exists(layer_path) and not os.path.exists(temp_dir)
    assert canvas.receivers(canvas.extentsChanged) == receivers
    assert project.receivers(project.layersAdded) == project_receivers
    assert registry.receivers(registry.providerAdded) == registry_receivers
    assert registry.providerById("panadapter") is None
    plugin.unload()  # a second unload is harmless


def test_init_gui_does_not_import_torch():
    script = textwrap.dedent("""
        import sys
        from qgis.core import QgsApplication
        from qgis.gui import QgsMapCanvas
        from qgis.PyQt.QtWidgets import QMainWindow
        from unittest.mock import MagicMock
        app = QgsApplication([], True)
        app.initQgis()
        window = QMainWindow()
        iface = MagicMock()
        iface.mainWindow.return_value = window
        iface.mapCanvas.return_value = QgsMapCanvas(window)
        import panadapter_qgis
        plugin = panadapter_qgis.classFactory(iface)
        plugin.initProcessing()
        plugin.initGui()
        print(plugin.dock.method_combo.count() >= 12, "torch" in sys.modules)
        plugin.unload()
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["True", "False"]
