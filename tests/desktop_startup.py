"""Startup script of the desktop test (``tests/test_desktop.py``): QGIS runs it with ``--code`` in the real window.

It drives QGIS as a user does, one step after the other, from timers (the GUI thread never sleeps): a real
scene in the project, Raster > PanAdapter > Pansharpening preview, PAN and MS picked, Preview, "Run on whole
scene..." and the algorithm dialog's Run button, the styled output in the project, Raster > PanAdapter > Device
and dependencies, an algorithm's batch dialog from the Processing toolbox (three rows, Fill Down for the sensor),
the graphical modeler with the degrade -> sharpen -> assess model (saved, then run from the modeler), and quits
through Project > Exit QGIS. Each step is a generator: it yields ``Wait`` objects (or milliseconds) and the
driver resumes it from a QTimer; what opens a modal dialog is started from a zero timer, so that the dialog's
event loop never runs inside a step.

Input: the JSON file named by $PANADAPTER_DESKTOP_CONFIG. Output, in its "out" folder: report.json (each step:
ok, seconds, details, error; the message log's errors) and one or more screenshots per step (NN_step.png).
"""
import json
import math
import os
import sys
import time
import traceback

from qgis.core import QgsApplication, QgsProcessingContext, QgsProject, QgsRasterLayer, Qgis
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QMenu, QMessageBox, QTabWidget
from qgis.utils import iface

CONFIG = json.load(open(os.environ["PANADAPTER_DESKTOP_CONFIG"]))
OUT = CONFIG["out"]
sys.path.insert(0, CONFIG["tests_dir"])  # desktop_model


class StepTimeout(Exception):
    pass


class Wait:
    """Resume the step when ``predicate()`` is true; fail it after ``timeout`` seconds."""

    def __init__(self, predicate, timeout, what):
        self.predicate, self.timeout, self.what = predicate, timeout, what
        self.deadline = time.monotonic() + timeout


class Driver:
    POLL_MS = 100

    def __init__(self):
        self.steps = []
        self.report = {"steps": [], "log": [], "log_errors": [], "finished": False, "config": CONFIG}
        self.current = None
        self.generator = None
        self.waiting = None
        self.sleep_until = 0.0
        self.busy = False
        self.shot_count = 0
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self._tick)
        QgsApplication.messageLog().messageReceived.connect(self._message)

    # ------------------------------------------------------------------------------------- recording
    def _message(self, message, tag, level):
        entry = {"tag": tag, "level": int(level), "message": message[:4000]}
        if len(self.report["log"]) < 400:
            self.report["log"].append(entry)
        if level == Qgis.Critical or "Traceback" in message or tag == "Python error":
            self.report["log_errors"].append(entry)

    def write_report(self):
        path = os.path.join(OUT, "report.json")
        with open(path + ".part", "w") as handle:
            json.dump(self.report, handle, indent=1, default=str)
        os.replace(path + ".part", path)

    def shot(self, name, widget=None):
        """A screenshot of the whole screen (every window, as a user sees it), or of one widget."""
        QApplication.processEvents()
        self.shot_count += 1
        path = os.path.join(OUT, f"{self.shot_count:02d}_{name}.png")
        if widget is None:
            pixmap = QApplication.primaryScreen().grabWindow(0)
        else:
            pixmap = widget.grab()
        ok = pixmap.save(path)
        self.current["screenshots"].append({"file": os.path.basename(path), "saved": bool(ok),
                                            "size": [pixmap.width(), pixmap.height()]})
        return path

    # ---------------------------------------------------------------------------------------- driving
    def add(self, name, function):
        self.steps.append((name, function))

    def start(self):
        self.write_report()
        self.timer.start(0)

    def _tick(self):
        if self.busy:  # a nested event loop inside a step: come back later
            self.timer.start(self.POLL_MS)
            return
        self.busy = True
        try:
            self._advance()
        except Exception:  # noqa: BLE001 (the driver itself must never stop silently)
            self.report.setdefault("driver_errors", []).append(traceback.format_exc())
            self.write_report()
        finally:
            self.busy = False

    def _advance(self):
        if self.generator is None:
            if not self.steps:
                return
            name, function = self.steps.pop(0)
            self.current = {"name": name, "ok": None, "seconds": None, "details": {}, "error": None,
                            "screenshots": [], "started": time.monotonic()}
            self.report["steps"].append(self.current)
            self.write_report()
            try:
                self.generator = function(self.current["details"])
            except Exception:  # noqa: BLE001
                self._end(traceback.format_exc())
                return
            self._resume(None)
            return
        now = time.monotonic()
        if self.waiting is not None:
            try:
                done = bool(self.waiting.predicate())
            except Exception:  # noqa: BLE001
                self._resume_throw(sys.exc_info()[1])
                return
            if done:
                self.waiting = None
                self._resume(True)
            elif now > self.waiting.deadline:
                what, timeout = self.waiting.what, self.waiting.timeout
                self.waiting = None
                self._resume_throw(StepTimeout(f"waited {timeout} s for {what}"))
            else:
                self.timer.start(self.POLL_MS)
            return
        if now < self.sleep_until:
            self.timer.start(self.POLL_MS)
            return
        self._resume(None)

    def _resume(self, value):
        try:
            request = self.generator.send(value)
        except StopIteration:
            self._end(None)
            return
        except Exception:  # noqa: BLE001
            self._end(traceback.format_exc())
            return
        self._schedule(request)

    def _resume_throw(self, error):
        try:
            request = self.generator.throw(error)
        except StopIteration:
            self._end(None)
            return
        except Exception:  # noqa: BLE001
            self._end(traceback.format_exc())
            return
        self._schedule(request)

    def _schedule(self, request):
        if isinstance(request, Wait):
            self.waiting = request
        else:
            self.sleep_until = time.monotonic() + (request or 0) / 1000.0
        self.timer.start(self.POLL_MS)

    def _end(self, error):
        step = self.current
        step["seconds"] = round(time.monotonic() - step.pop("started"), 2)
        step["ok"] = error is None
        step["error"] = error
        if error is not None:
            try:
                self.shot("failed_" + step["name"])
            except Exception:  # noqa: BLE001
                pass
        self.generator = None
        self.write_report()
        self.timer.start(0)


D = Driver()


# ------------------------------------------------------------------------------------------------ helpers
def plugin():
    from qgis.utils import plugins
    return plugins.get("panadapter_qgis")


def processing_plugin():
    from qgis.utils import plugins
    return plugins.get("processing")


def plain(text):
    return text.replace("&", "").replace("…", "...").strip()


def menu_action(menu, *path):
    """The action at ``path`` (texts without '&') under ``menu``."""
    for action in menu.actions():
        if plain(action.text()) == plain(path[0]):
            if len(path) == 1:
                return action
            if action.menu() is not None:
                return menu_action(action.menu(), *path[1:])
    raise LookupError(f"no menu entry {' > '.join(path)} in {plain(menu.title())}: "
                      f"{[plain(a.text()) for a in menu.actions()]}")


def main_menu(title):
    for action in iface.mainWindow().menuBar().actions():
        if action.menu() is not None and plain(action.text()) == title:
            return action.menu()
    raise LookupError(f"no {title} menu")


def modal(class_name):
    """The visible top-level window of that class (the dialog a step opened), or None."""
    for widget in QApplication.topLevelWidgets():
        if type(widget).__name__ == class_name and widget.isVisible():
            return widget
    return None


def later(function):
    """Run ``function`` from the event loop (what opens a modal dialog must not run inside a step)."""
    QTimer.singleShot(0, function)


def canvas_idle():
    canvas = iface.mapCanvas()
    return not canvas.isDrawing()


def wait_canvas(timeout=30):
    iface.mapCanvas().refreshAllLayers()
    return Wait(canvas_idle, timeout, "the map to render")


def geotiff_info(path):
    from osgeo import gdal
    import numpy as np
    ds = gdal.Open(path)
    if ds is None:
        return {"path": path, "valid": False}
    data = ds.ReadAsArray().astype("float64")
    return {"path": path, "valid": ds.GetDriver().ShortName == "GTiff", "driver": ds.GetDriver().ShortName,
            "size": [ds.RasterXSize, ds.RasterYSize], "bands": ds.RasterCount,
            "finite": bool(np.isfinite(data).all()), "std": float(np.nanstd(data)),
            "georeferenced": bool(ds.GetProjection())}


def run_dialog(dialog, details, key, timeout):
    """Press the dialog's Run button and wait for its algorithmFinished signal."""
    state = {}
    dialog.algorithmFinished.connect(lambda ok, results: state.update(ok=ok, results=results))
    later(dialog.runButton().click)
    yield Wait(lambda: "ok" in state, timeout, f"{dialog.windowTitle()} to finish")
    details[key] = {"ok": bool(state["ok"]),
                    "results": {k: v for k, v in state["results"].items()
                                if k not in ("CHILD_RESULTS", "CHILD_INPUTS")}}
    if not state["ok"]:
        raise AssertionError(f"{dialog.windowTitle()} failed: {state['results']}")
    yield 500  # the log, the layers loaded
    tabs = dialog.findChild(QTabWidget)
    details[key]["dialog_after_run"] = {"visible": dialog.isVisible(),
                                        "tab": tabs.tabText(tabs.currentIndex()) if tabs else None}
    if tabs is not None and dialog.isVisible():
        tabs.setCurrentIndex(1)  # the Log tab (QGIS shows it by itself only for runs in a background task)
        yield 200
    return state["results"]


def set_wrapper(dialog, name, value):
    wrapper = dialog.mainWidget().wrappers[name]
    wrapper.setParameterValue(value, QgsProcessingContext())


# --------------------------------------------------------------------------------------------------- steps
LAYERS = {}


def step_start(details):
    window = iface.mainWindow()
    window.setGeometry(0, 0, *CONFIG["screen"])
    yield Wait(lambda: window.isVisible() and plugin() is not None, 30, "the main window and the plugin")
    registry = QgsApplication.processingRegistry()
    yield Wait(lambda: registry.providerById("panadapter") is not None, 30, "the panadapter provider")
    details["qgis"] = Qgis.QGIS_VERSION
    details["python"] = sys.version.split()[0]
    details["algorithms"] = sorted(a.id() for a in registry.providerById("panadapter").algorithms())
    details["platform"] = QApplication.platformName()
    yield 500
    D.shot("qgis_started")


def step_load_scene(details):
    pan = iface.addRasterLayer(CONFIG["pan"], "scene PAN")
    ms = iface.addRasterLayer(CONFIG["ms"], "scene MS")
    assert pan is not None and pan.isValid(), f"PAN layer: {CONFIG['pan']}"
    assert ms is not None and ms.isValid(), f"MS layer: {CONFIG['ms']}"
    LAYERS.update(pan=pan, ms=ms)
    iface.setActiveLayer(pan)
    iface.mapCanvas().setExtent(pan.extent())
    yield wait_canvas()
    details.update(pan_bands=pan.bandCount(), ms_bands=ms.bandCount(), crs=pan.crs().authid())
    D.shot("scene_loaded")


def step_open_preview_dock(details):
    raster = main_menu("Raster")
    entries = [plain(a.text()) for a in menu_action(raster, "PanAdapter").menu().actions()]
    details["raster_panadapter_menu"] = entries
    # show the menu as a user opens it, for the screenshot (non-blocking popups)
    bar = iface.mainWindow().menuBar()
    raster.popup(bar.mapToGlobal(bar.actionGeometry(raster.menuAction()).bottomLeft()))
    submenu_action = menu_action(raster, "PanAdapter")
    raster.setActiveAction(submenu_action)
    yield 400
    sub = submenu_action.menu()
    if not sub.isVisible():
        sub.popup(raster.mapToGlobal(raster.actionGeometry(submenu_action).topRight()))
    yield 300
    D.shot("raster_menu")
    sub.hide()
    raster.hide()
    yield 200
    menu_action(raster, "PanAdapter", "Pansharpening preview").trigger()
    dock = plugin().dock
    yield Wait(lambda: dock.isVisible(), 10, "the preview dock")
    details["dock_title"] = dock.windowTitle()
    D.shot("preview_dock")


def step_pick_layers(details):
    dock = plugin().dock
    dock.pan_combo.setLayer(LAYERS["pan"])
    dock.ms_combo.setLayer(LAYERS["ms"])
    index = dock.method_combo.findData(CONFIG["method"])
    assert index >= 0, f"{CONFIG['method']} not in the method list"
    dock.method_combo.setCurrentIndex(index)
    dock.sensor_combo.setCurrentIndex(CONFIG["sensor"])
    dock.sensor_combo.activated.emit(CONFIG["sensor"])  # chosen by hand
    yield 300
    assert dock.pan_layer() is LAYERS["pan"] and dock.ms_layer() is LAYERS["ms"]
    details.update(pan=dock.pan_combo.currentText(), ms=dock.ms_combo.currentText(),
                   method=dock.method_combo.currentText(), sensor=dock.sensor_combo.currentText(),
                   bands=dock.ms_bands())
    D.shot("layers_picked")


def step_preview(details):
    dock = plugin().dock
    state = {}
    dock.previewFinished.connect(lambda ok, message: state.update(ok=ok, message=message))
    dock.preview_button.click()
    yield Wait(lambda: "ok" in state, CONFIG["timeout_preview"], "the preview to finish")
    details.update(ok=state["ok"], message=state["message"], status=dock.status_label.text())
    assert state["ok"], f"preview failed: {state['message']}"
    layer = dock.preview_layer()
    assert layer is not None and layer.isValid(), "no preview layer in the project"
    details.update(layer=layer.name(), renderer=layer.renderer().type())
    yield wait_canvas()
    D.shot("preview_done")


def step_run_whole_scene(details):
    dock = plugin().dock
    output = os.path.join(CONFIG["work"], "whole_scene.tif")
    later(dock.whole_scene_button.click)
    yield Wait(lambda: modal("AlgorithmDialog") is not None, 30, "the algorithm dialog")
    dialog = modal("AlgorithmDialog")
    details["title"] = dialog.windowTitle()
    set_wrapper(dialog, "OUTPUT", output)
    parameters = dialog.createProcessingParameters()
    details["parameters"] = {k: str(v) for k, v in parameters.items()}
    yield 300
    D.shot("algorithm_dialog")
    results = yield from run_dialog(dialog, details, "run", CONFIG["timeout_run"])
    D.shot("algorithm_finished")
    if dialog.isVisible():
        dialog.close()
    yield Wait(lambda: modal("AlgorithmDialog") is None, 10, "the algorithm dialog to close")
    details["output"] = geotiff_info(output)
    assert details["output"]["valid"], f"not a GeoTIFF: {output}"
    assert os.path.samefile(results["OUTPUT"], output)


def step_styled_output(details):
    output = os.path.join(CONFIG["work"], "whole_scene.tif")
    found = [layer for layer in QgsProject.instance().mapLayers().values()
             if isinstance(layer, QgsRasterLayer) and os.path.exists(layer.source().split("|")[0])
             and os.path.samefile(layer.source().split("|")[0], output)]
    assert found, f"the output {output} is not in the project: " + \
        str([l.source() for l in QgsProject.instance().mapLayers().values()])
    layer = found[0]
    renderer = layer.renderer()
    details.update(layer=layer.name(), renderer=renderer.type())
    assert renderer.type() == "multibandcolor", f"the output is drawn with {renderer.type()}, not true colour"
    details["rgb_bands"] = [renderer.redBand(), renderer.greenBand(), renderer.blueBand()]
    details["rgb_names"] = [layer.bandName(band) for band in details["rgb_bands"]]
    # only the output is shown, as a user would check it
    root = QgsProject.instance().layerTreeRoot()
    for node in root.findLayers():
        node.setItemVisibilityChecked(node.layerId() == layer.id())
    iface.setActiveLayer(layer)
    yield wait_canvas()
    D.shot("styled_output")
    for node in root.findLayers():
        node.setItemVisibilityChecked(True)


def step_device_dialog(details):
    menu_action(main_menu("Raster"), "PanAdapter", "Device and dependencies").trigger()
    yield Wait(lambda: plugin().device_dialog is not None and plugin().device_dialog.isVisible(), 60,
               "the Device and dependencies window")
    dialog = plugin().device_dialog
    yield Wait(lambda: dialog.status.report is not None, 60, "the device report")
    details["title"] = dialog.windowTitle()
    details["report"] = dialog.status.report.as_text()
    assert dialog.status.report.torch_version is not None, "the window says PyTorch is missing"
    yield 300
    D.shot("device_dialog")
    dialog.close()


def step_batch(details):
    processing = processing_plugin()
    toolbox_action = processing.toolboxAction
    if not toolbox_action.isChecked():
        toolbox_action.trigger()  # Processing > Toolbox
    toolbox = processing.toolbox
    yield Wait(lambda: toolbox.isVisible(), 10, "the Processing toolbox")
    toolbox.searchBox.setText(CONFIG["batch_search"])
    yield 300
    tree = toolbox.algorithmTree
    tree.expandAll()
    target = f"panadapter:{CONFIG['method']}"

    def find(parent):
        model = tree.model()
        for row in range(model.rowCount(parent)):
            index = model.index(row, 0, parent)
            algorithm = tree.algorithmForIndex(index)
            if algorithm is not None and algorithm.id() == target:
                return index
            found = find(index)
            if found is not None:
                return found
        return None

    from qgis.PyQt.QtCore import QModelIndex
    index = find(QModelIndex())
    assert index is not None, f"{target} not found in the toolbox for '{CONFIG['batch_search']}'"
    tree.setCurrentIndex(index)
    tree.scrollTo(index)
    point = tree.visualRect(index).center()
    later(lambda: tree.customContextMenuRequested.emit(point))  # a right click on the algorithm
    yield Wait(lambda: isinstance(QApplication.activePopupWidget(), QMenu), 10, "the toolbox's context menu")
    menu = QApplication.activePopupWidget()
    details["context_menu"] = [plain(a.text()) for a in menu.actions() if a.text()]
    yield 200
    D.shot("toolbox_context_menu")
    batch_action = menu_action(menu, "Execute as Batch Process...")

    def choose():
        menu.hide()
        batch_action.trigger()
    later(choose)
    yield Wait(lambda: modal("BatchAlgorithmDialog") is not None, 30, "the batch dialog")
    dialog = modal("BatchAlgorithmDialog")
    details["title"] = dialog.windowTitle()
    dialog.setGeometry(40, 60, CONFIG["screen"][0] - 80, 560)  # wide enough to show every column
    panel = dialog.mainWidget()
    pairs = CONFIG["batch_pairs"]
    while panel.batchRowCount() < len(pairs):
        panel.btnAdd.click()  # the "+" button
    yield 200
    context = QgsProcessingContext()
    columns = panel.parameter_to_column
    outputs = []
    for row, (pan, ms) in enumerate(pairs):
        panel.wrappers[row][columns["PAN"]].setParameterValue(pan, context)
        panel.wrappers[row][columns["MS"]].setParameterValue(ms, context)
        output = os.path.join(CONFIG["work"], f"batch_{row + 1}.tif")
        panel.tblParameters.cellWidget(row + 1, columns["OUTPUT"]).setValue(output)
        outputs.append(output)
    # the sensor of the first row, then the column's Autofill... > Fill Down
    panel.wrappers[0][columns["SENSOR"]].setParameterValue(CONFIG["sensor"], context)
    fill = panel.tblParameters.cellWidget(0, columns["SENSOR"])
    fill.createMenu()
    menu_action(fill.menu, "Fill Down").trigger()
    details["rows"] = [{k: str(v) for k, v in panel.parametersForRow(row, warnOnInvalid=False)[0].items()}
                       for row in range(panel.batchRowCount())]
    assert [row["SENSOR"] for row in details["rows"]] == [str(CONFIG["sensor"])] * len(pairs), details["rows"]
    yield 300
    D.shot("batch_filled")
    state = {}
    original_finish = dialog.finish

    def finish(results, errors):  # the batch dialog emits no signal when the batch ends
        state.update(results=results, errors=errors)
        return original_finish(results, errors)
    dialog.finish = finish
    later(dialog.runButton().click)
    yield Wait(lambda: "results" in state, CONFIG["timeout_batch"], "the batch to finish")
    details["errors"] = [str(e) for e in state["errors"]]
    details["runs"] = len(state["results"])
    yield 300
    D.shot("batch_finished")
    details["outputs"] = [geotiff_info(path) for path in outputs]
    dialog.close()
    yield Wait(lambda: modal("BatchAlgorithmDialog") is None, 10, "the batch dialog to close")
    assert not state["errors"], state["errors"]
    assert len(state["results"]) == len(pairs)
    for info in details["outputs"]:
        assert info["valid"] and info["finite"], info


def step_modeler(details):
    import desktop_model
    from qgis.core import QgsProcessingModelAlgorithm
    processing = processing_plugin()
    from processing.modeler.ModelerDialog import ModelerDialog
    before = list(ModelerDialog.dlgs)
    processing.modelerAction.trigger()  # Processing > Graphical Modeler...
    yield Wait(lambda: len(ModelerDialog.dlgs) > len(before) and ModelerDialog.dlgs[-1].isVisible(), 30,
               "the graphical modeler")
    designer = ModelerDialog.dlgs[-1]
    designer.setGeometry(60, 40, CONFIG["screen"][0] - 120, CONFIG["screen"][1] - 80)
    # built with the modeler's API, opened in the modeler as Model > Open Model... does (the designer owns the
    # model it reads: a Python-owned model handed to setModel() would be deleted under it)
    built = os.path.join(CONFIG["work"], "built.model3")
    assert desktop_model.build_model().toFile(built)
    designer.loadModel(built)
    model = designer.model()
    assert model is not None and model.name() == desktop_model.MODEL_NAME, "the modeler did not open the model"
    valid, errors = model.validate()
    details.update(valid=valid, validation=errors)
    assert valid, errors
    saved = os.path.join(OUT, os.path.basename(desktop_model.MODEL_FILE))
    model.setSourceFilePath(saved)
    assert designer.saveModel(False), "the modeler did not save the model"
    details["saved"] = saved
    committed = QgsProcessingModelAlgorithm()
    assert committed.fromFile(CONFIG["model_file"]), f"cannot read {CONFIG['model_file']}"
    reread = QgsProcessingModelAlgorithm()
    assert reread.fromFile(saved)
    details["structure_saved"] = desktop_model.structure(reread)
    details["structure_committed"] = desktop_model.structure(committed)
    details["same_structure"] = details["structure_saved"] == details["structure_committed"]
    yield 300
    designer.view().centerOn(350, 300)
    yield 300
    D.shot("modeler")
    # Run it from the modeler (its Run button opens the model's algorithm dialog)
    later(designer.actionRun().trigger)
    yield Wait(lambda: modal("AlgorithmDialog") is not None, 30, "the model's dialog")
    dialog = modal("AlgorithmDialog")
    set_wrapper(dialog, "PAN", CONFIG["pan"])
    set_wrapper(dialog, "MS", CONFIG["ms"])
    set_wrapper(dialog, "SENSOR", CONFIG["sensor"])
    set_wrapper(dialog, "assess:QUALITY_REPORT", os.path.join(CONFIG["work"], "model_report.html"))
    yield 300
    D.shot("model_dialog")
    results = yield from run_dialog(dialog, details, "run", CONFIG["timeout_run"])
    D.shot("model_finished")
    if dialog.isVisible():
        dialog.close()
    yield Wait(lambda: modal("AlgorithmDialog") is None, 10, "the model's dialog to close")
    details["indices"] = {k.split(":")[-1]: v for k, v in results.items() if isinstance(v, float)}
    designer.setDirty(False)
    designer.close()
    assert details["same_structure"], "the model built in the modeler differs from the committed .model3"
    ergas = details["indices"].get("ERGAS")
    assert ergas is not None and math.isfinite(ergas) and ergas > 0, details["indices"]


def step_quit(details):
    # a window left open by a failed step would ask questions or block the exit
    window = iface.mainWindow()
    for _ in range(5):
        left = [w for w in QApplication.topLevelWidgets() if w.isVisible() and w is not window
                and w.isWindow() and type(w).__name__ not in ("QMenu", "QTipLabel")
                and w.windowType() in (Qt.Dialog, Qt.Window)]
        if not left:
            break
        for widget in left:
            details.setdefault("closed_windows", []).append(f"{type(widget).__name__}: {widget.windowTitle()}")
            if hasattr(widget, "setDirty"):
                widget.setDirty(False)  # the modeler: no "save changes?" question
            widget.reject() if hasattr(widget, "reject") else widget.close()
        yield 300
    details["layers"] = sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())
    D.shot("before_exit")
    QgsProject.instance().setDirty(False)  # no "save the project?" question
    D.report["finished"] = True
    D.report["exit_requested"] = "Project > Exit QGIS"
    D.write_report()

    def fallback():  # still alive: say so and end the loop, so that the test does not wait for its kill
        D.report["exit_fallback"] = "iface.actionExit() did not end QGIS within 30 s; windows: " + ", ".join(
            f"{type(w).__name__} '{w.windowTitle()}'" for w in QApplication.topLevelWidgets() if w.isVisible())
        D.current = {"screenshots": []}
        D.shot("exit_blocked")
        D.report["exit_blocked_screenshots"] = D.current["screenshots"]
        D.write_report()
        QgsApplication.exit(3)
    QTimer.singleShot(30000, fallback)
    later(iface.actionExit().trigger)
    # QGIS asks before closing a project with layers in the temporary folder (the preview, and here the outputs
    # too): answer Yes, as the user who quits does
    yield Wait(lambda: question() is not None, 15, "QGIS to ask before closing the project, or to end")
    box = question()
    details["question"] = f"{box.windowTitle()}: {box.text()}"
    D.report["exit_question"] = details["question"]
    D.write_report()
    box.button(QMessageBox.Yes).click()


def question():
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QMessageBox) and widget.isVisible():
            return widget
    return None


def step_watchdog():
    """The whole script's deadline: whatever hangs, the report is written and QGIS ends."""
    def expire():
        D.report["watchdog"] = f"the steps did not end within {CONFIG['deadline']} s"
        D.write_report()
        QgsApplication.exit(4)
    QTimer.singleShot(int(CONFIG["deadline"] * 1000), expire)


for _name, _function in (("start", step_start), ("load_scene", step_load_scene),
                         ("open_preview_dock", step_open_preview_dock), ("pick_layers", step_pick_layers),
                         ("preview", step_preview), ("run_whole_scene", step_run_whole_scene),
                         ("styled_output", step_styled_output), ("device_dialog", step_device_dialog),
                         ("batch", step_batch), ("modeler", step_modeler), ("quit", step_quit)):
    D.add(_name, _function)
try:
    step_watchdog()
    D.start()
except Exception:  # noqa: BLE001 (a report, and an end, rather than a Python error dialog nobody answers)
    D.report["driver_errors"] = [traceback.format_exc()]
    D.write_report()
    QTimer.singleShot(0, lambda: QgsApplication.exit(5))
