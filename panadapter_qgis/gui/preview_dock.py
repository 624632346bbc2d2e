# SPDX-License-Identifier: GPL-2.0-or-later
"""The "Pansharpening preview" dock: pick PAN, MS and a method, fuse what the map shows, run the whole scene.

The work runs in a ``QgsTask`` (``backend.preview.render_preview`` on a worker thread: no widget is touched
there); the finished preview is added on the main thread as one temporary layer in the group
"PanAdapter preview", replacing the previous one. The methods are the provider's sharpening algorithms as
registered in Processing, so algorithms added later appear without changes here; the rows of the deep models'
own inputs (adapter file, DDIM steps, seed) show when the chosen algorithm has those parameters.
"""
import os
import traceback

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsCsException,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsTask,
)
from qgis.gui import (
    QgsCheckableComboBox,
    QgsCollapsibleGroupBoxBasic,
    QgsDockWidget,
    QgsFileWidget,
    QgsMapLayerComboBox,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QDir, Qt, QTemporaryDir, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..backend.preview import DEEP_MAX_FUSED_PIXELS, MAX_FUSED_PIXELS, MULTISPECTRAL, previewable, remove_raster
from ..backend.sensor_detect import detect_sensor
from ..plugin_files import icon_path
from ..processing.provider import PROVIDER_ID
from .device_status import DeviceStatusWidget
from .styling import LOG_TAG, apply_rgb_style

PREVIEW_GROUP = "PanAdapter preview"
PREVIEW_PROPERTY = "panadapter/preview"   # custom property marking the preview layer
DEFAULT_METHOD = "mtf_glp_fs"
AUTO_REFRESH_MS = 600                     # the map must rest this long before an automatic preview


def tr(text):
    return QCoreApplication.translate("PanAdapter", text)


SENSOR_TIP = tr("The sensor sets the MTF filters and the true-colour bands; it is chosen from the images' "
                "metadata when that names the satellite.")


HELP_HTML = tr("""
<p>The preview fuses only what the map shows, in the background: keep working while it runs, or press
Cancel.</p>
<ul>
<li><b>At the PAN's resolution or zoomed in</b> (a screen pixel no larger than a PAN pixel): the PAN pixels
under the map are fused at full resolution. They are the pixels the algorithm writes for the whole scene, since
the method's statistics come from the whole image (computed once, on the first preview of a pair, method and
sensor).</li>
<li><b>Zoomed out</b>: the preview is k times coarser than the PAN, so it never has more pixels than the map.
While k is below the PAN/MS resolution ratio and the view holds at most {max_mp} million PAN pixels, the view is
fused at full resolution and each k &times; k block is averaged.</li>
<li><b>Zoomed out further</b> (a screen pixel covers a whole MS pixel, where sharpening cannot be seen, or
the view holds more than {max_mp} million PAN pixels): the preview shows the multispectral image averaged to
the screen's resolution, not sharpened, and its layer name says "multispectral only". Zoom in to see the
sharpening.</li>
</ul>
<p><b>Deep models</b> (PanAdapter, SSDiff) preview with the adapter file that "Fine-tune a deep model to
the scene" wrote for this pair (or, without one, their pre-trained weights, which fit 6-band images only), and
show the pixels of their algorithm. They are much slower than the classical methods on a CPU (SSDiff most, in
proportion to its steps): zoomed out they fuse at most {deep_mp:.2f} million PAN pixels.</p>
<p>The preview is a temporary layer in the group "{group}" (in the PAN's CRS, true colour, 2&ndash;98 %
stretch). Each preview replaces the previous one and deletes its file. The lists show raster layers read by
GDAL: single-band rasters for the PAN, rasters with several bands for the MS. "Run on whole scene" opens the
algorithm's dialog with these inputs and settings.</p>
""").format(max_mp=MAX_FUSED_PIXELS // 2**20, deep_mp=DEEP_MAX_FUSED_PIXELS / 2**20, group=PREVIEW_GROUP)


def sharpening_algorithms(provider_id=PROVIDER_ID):
    """The provider's algorithms that sharpen a pair: raster inputs PAN and MS, raster output OUTPUT (the
    classical methods and the deep models). Sorted by group, then by name."""
    provider = QgsApplication.processingRegistry().providerById(provider_id)
    if provider is None:
        return []
    found = []
    for algorithm in provider.algorithms():
        types = {p.name(): p.type() for p in algorithm.parameterDefinitions()}
        if types.get("PAN") == "raster" and types.get("MS") == "raster" \
                and types.get("OUTPUT") == "rasterDestination":
            found.append(algorithm)
    return sorted(found, key=lambda a: (a.group(), a.displayName().lower()))


class PreviewTask(QgsTask):
    """Runs ``work(progress, is_cancelled)`` on a worker thread; ``on_finished(task, ok)`` on the main one."""

    def __init__(self, description, work, on_finished):
        super().__init__(description, QgsTask.CanCancel)
        self.work = work
        self.on_finished = on_finished
        self.result = None
        self.error = None
        self.was_cancelled = False
        self.missing_torch = False

    def run(self):
        from ..backend.errors import Cancelled, PansharpenError
        from ..dependencies import MissingDependencyError, require_torch
        try:
            require_torch()
            self.result = self.work(lambda fraction: self.setProgress(100.0 * fraction), self.isCanceled)
            return True
        except Cancelled:
            self.was_cancelled = True
        except MissingDependencyError as error:
            self.missing_torch = True
            self.error = str(error)
        except PansharpenError as error:
            self.error = str(error)
        except Exception as error:  # noqa: BLE001 (reported in the dock and the log, never a crash)
            self.error = f"The preview failed: {type(error).__name__}: {error}"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
        return False

    def finished(self, ok):
        callback, self.on_finished = self.on_finished, None
        _RUNNING.discard(self)
        if callback is None:
            return
        try:
            callback(self, ok)
        except Exception:  # noqa: BLE001 (an exception escaping a Qt virtual aborts QGIS)
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)


# Python references to the tasks that have not finished, even after their dock has gone (unload): QGIS holds
# only C++ pointers to them.
_RUNNING = set()


class PreviewDock(QgsDockWidget):
    """PAN/MS pickers, method, sensor, device; Preview, Cancel, automatic refresh, Run on whole scene."""

    previewFinished = pyqtSignal(bool, str)  # (a new preview layer was added, status message)

    def __init__(self, iface, parent=None):
        super().__init__(tr("Pansharpening preview"), parent)
        self.setObjectName("PanAdapterPreviewDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.task = None
        self.layer_id = None          # the preview layer in the project
        self.layer_path = None        # its file
        self.temp_dir = None          # QTemporaryDir holding preview files
        self.jobs = None              # backend.preview.JobCache, created with the first preview
        self.counter = 0
        self._watched_provider = None  # whose algorithmsLoaded refreshes the method list
        self._last_method = DEFAULT_METHOD  # chosen again when the provider comes back
        self.auto_timer = QTimer(self)
        self.auto_timer.setSingleShot(True)
        self.auto_timer.setInterval(AUTO_REFRESH_MS)
        self.auto_timer.timeout.connect(self._auto_preview)
        self._auto_connected = False
        self.sensor_by_hand = False   # the user chose the sensor: the images' metadata no longer changes it
        self._build()
        self.refresh_methods()
        project = QgsProject.instance()
        project.layersAdded.connect(self._update_layer_filters)
        project.layersRemoved.connect(self._update_layer_filters)
        registry = QgsApplication.processingRegistry()
        registry.providerAdded.connect(self.refresh_methods)
        registry.providerRemoved.connect(self.refresh_methods)
        self._update_layer_filters()

    # ------------------------------------------------------------------------------------------- widgets
    def _build(self):
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()
        excluded = [key for key in QgsProviderRegistry.instance().providerList() if key != "gdal"]
        self.pan_combo = QgsMapLayerComboBox(body)
        self.ms_combo = QgsMapLayerComboBox(body)
        for combo in (self.pan_combo, self.ms_combo):
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
            combo.setExcludedProviders(excluded)  # the backend reads files through GDAL
        self.pan_combo.setToolTip(tr("The panchromatic image: a single-band raster."))
        self.ms_combo.setToolTip(tr("The multispectral image to sharpen."))
        self.bands_combo = QgsCheckableComboBox(body)
        self.bands_combo.setToolTip(tr("The multispectral bands to sharpen (default: all)."))
        self.method_combo = QComboBox(body)
        self.method_combo.setToolTip(tr("Every pansharpening algorithm of the PanAdapter provider."))
        self.sensor_combo = QComboBox(body)
        self.sensor_combo.setToolTip(SENSOR_TIP)
        self.device_combo = QComboBox(body)
        self.adapter_widget = QgsFileWidget(body)
        self.adapter_widget.setFilter(tr("Adapter file (*.pt)"))
        self.adapter_widget.setDialogTitle(tr("Adapter file from scene fine-tuning"))
        self.adapter_widget.setToolTip(tr("The file 'Fine-tune a deep model to the scene' wrote for this pair and "
                                          "model; empty: the pre-trained weights (6-band images)."))
        self.steps_spin = QSpinBox(body)
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(10)
        self.steps_spin.setToolTip(tr("DDIM sampling steps: the time grows with them."))
        self.seed_spin = QSpinBox(body)
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip(tr("The same seed gives the same image."))
        for combo in (self.pan_combo, self.ms_combo, self.bands_combo, self.method_combo, self.sensor_combo,
                      self.device_combo):
            # long names (methods, band descriptions) must not widen the dock: they are elided instead
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        form.addRow(tr("Panchromatic (PAN)"), self.pan_combo)
        form.addRow(tr("Multispectral (MS)"), self.ms_combo)
        form.addRow(tr("MS bands"), self.bands_combo)
        form.addRow(tr("Method"), self.method_combo)
        form.addRow(tr("Sensor"), self.sensor_combo)
        form.addRow(tr("Device"), self.device_combo)
        # rows of the parameters only some algorithms have: (parameter, label, widget), shown with them
        self.model_rows = []
        for name, label, widget in (("ADAPTER", tr("Adapter file"), self.adapter_widget),
                                    ("STEPS", tr("Sampling steps"), self.steps_spin),
                                    ("SEED", tr("Seed"), self.seed_spin)):
            label_widget = QLabel(label, body)
            form.addRow(label_widget, widget)
            self.model_rows.append((name, label_widget, widget))
        layout.addLayout(form)

        self.preview_button = QPushButton(QIcon(icon_path()), tr("Preview"), body)
        self.preview_button.setToolTip(tr("Fuse the part of the images the map shows, at the map's resolution."))
        self.cancel_button = QPushButton(tr("Cancel"), body)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.auto_check = QCheckBox(tr("Update when the map moves"), body)
        self.auto_check.setToolTip(tr("A new preview starts when the map has not moved for {} ms.")
                                   .format(AUTO_REFRESH_MS))
        layout.addWidget(self.auto_check)
        self.status_label = QLabel(tr("Choose the PAN and MS layers, then press Preview."), body)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.whole_scene_button = QPushButton(tr("Run on whole scene…"), body)
        self.whole_scene_button.setToolTip(tr("Open the algorithm's dialog with these inputs and settings."))
        layout.addWidget(self.whole_scene_button)

        self.help_box = QgsCollapsibleGroupBoxBasic(tr("How the preview works"), body)
        help_layout = QVBoxLayout(self.help_box)
        self.help_label = QLabel(HELP_HTML, self.help_box)
        self.help_label.setWordWrap(True)
        help_layout.addWidget(self.help_label)
        self.help_box.setCollapsed(True)
        layout.addWidget(self.help_box)
        self.device_box = QgsCollapsibleGroupBoxBasic(tr("Device and dependencies"), body)
        device_layout = QVBoxLayout(self.device_box)
        self.device_status = DeviceStatusWidget(self.device_box)
        device_layout.addWidget(self.device_status)
        self.device_box.setCollapsed(True)
        layout.addWidget(self.device_box)
        layout.addStretch(1)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        self.setWidget(scroll)

        self.ms_combo.layerChanged.connect(self._fill_bands)
        self.pan_combo.layerChanged.connect(self.preselect_sensor)
        self.ms_combo.layerChanged.connect(self.preselect_sensor)
        self.sensor_combo.activated.connect(self._sensor_chosen)
        self.method_combo.currentIndexChanged.connect(self._fill_options)
        self.preview_button.clicked.connect(lambda: self.start_preview())
        self.cancel_button.clicked.connect(self.cancel_preview)
        self.auto_check.toggled.connect(self.set_auto_refresh)
        self.whole_scene_button.clicked.connect(self.run_whole_scene)

    def refresh_methods(self, *_):
        """List the provider's sharpening algorithms (again when the provider comes, goes or reloads them)."""
        provider = QgsApplication.processingRegistry().providerById(PROVIDER_ID)
        if provider is not None and provider is not self._watched_provider:
            provider.algorithmsLoaded.connect(self.refresh_methods)
            self._watched_provider = provider
        current = self.method_id() or self._last_method
        algorithms = sharpening_algorithms()
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        group = None
        for algorithm in algorithms:
            if group is not None and algorithm.group() != group:
                self.method_combo.insertSeparator(self.method_combo.count())
            group = algorithm.group()
            self.method_combo.addItem(algorithm.displayName(), algorithm.name())
            self.method_combo.setItemData(self.method_combo.count() - 1,
                                          f"{group}: {algorithm.shortDescription()}", Qt.ToolTipRole)
        index = self.method_combo.findData(current)
        self.method_combo.setCurrentIndex(max(index, 0) if self.method_combo.count() else -1)
        self.method_combo.blockSignals(False)
        self._fill_options()

    def algorithm(self):
        """The selected Processing algorithm, or None."""
        method = self.method_id()
        return QgsApplication.processingRegistry().algorithmById(f"{PROVIDER_ID}:{method}") if method else None

    def has_parameter(self, name):
        algorithm = self.algorithm()
        return algorithm is not None and algorithm.parameterDefinition(name) is not None

    def _fill_options(self, *_):
        """Sensor and device choices from the selected algorithm's own parameters (same order and labels);
        the rows of its other inputs (adapter, steps, seed) shown when it has them, the band choice enabled
        when it takes MS_BANDS (the deep models sharpen every band)."""
        method = self.method_id()
        if method:
            self._last_method = method
        algorithm = self.algorithm()
        for name, label, widget in self.model_rows:
            shown = algorithm is not None and algorithm.parameterDefinition(name) is not None
            label.setVisible(shown)
            widget.setVisible(shown)
        takes_bands = algorithm is None or algorithm.parameterDefinition("MS_BANDS") is not None
        self.bands_combo.setEnabled(takes_bands)
        self.bands_combo.setToolTip(tr("The multispectral bands to sharpen (default: all).") if takes_bands else
                                    tr("This algorithm sharpens every band of the MS."))
        for combo, name in ((self.sensor_combo, "SENSOR"), (self.device_combo, "DEVICE")):
            parameter = algorithm.parameterDefinition(name) if algorithm else None
            options = list(parameter.options()) if parameter is not None else []
            if [combo.itemText(i) for i in range(combo.count())] == options:
                continue
            current = combo.currentIndex()
            combo.clear()
            combo.addItems(options)
            combo.setCurrentIndex(current if 0 <= current < len(options) else 0)

    def _fill_bands(self, layer=None):
        layer = self.ms_layer()
        self.bands_combo.clear()
        if layer is None:
            return
        for band in range(1, layer.bandCount() + 1):
            self.bands_combo.addItemWithCheckState(layer.bandName(band), Qt.Checked, band)

    def _sensor_chosen(self, *_):
        self.sensor_by_hand = True

    def preselect_sensor(self, *_):
        """Select the sensor the metadata of the chosen PAN and MS names, unless the user chose one by hand."""
        if self.sensor_by_hand:
            return
        detection = detect_sensor(*(layer.source() for layer in (self.pan_layer(), self.ms_layer()) if layer))
        self.sensor_combo.setToolTip(SENSOR_TIP if detection is None else f"{SENSOR_TIP} {detection.message}")
        if detection is None:
            return
        if detection.index is not None and detection.index < self.sensor_combo.count():
            self.sensor_combo.setCurrentIndex(detection.index)
        self._set_status(detection.message)

    def _update_layer_filters(self, *_):
        """PAN: single-band rasters; MS: rasters with several bands; never the preview layer."""
        rasters = [layer for layer in QgsProject.instance().mapLayers().values()
                   if isinstance(layer, QgsRasterLayer)]
        preview = [layer for layer in rasters if layer.customProperty(PREVIEW_PROPERTY)]
        self.pan_combo.setExceptedLayerList(preview + [l for l in rasters if l.bandCount() != 1])
        self.ms_combo.setExceptedLayerList(preview + [l for l in rasters if l.bandCount() < 2])
        if self.bands_combo.count() == 0 or self.ms_layer() is None:
            self._fill_bands()

    # ---------------------------------------------------------------------------------- current values
    def pan_layer(self):
        return self.pan_combo.currentLayer()

    def ms_layer(self):
        return self.ms_combo.currentLayer()

    def method_id(self):
        return self.method_combo.currentData()

    def ms_bands(self):
        """The checked MS band numbers, in band order (every band for an algorithm without MS_BANDS)."""
        ms = self.ms_layer()
        if not self.bands_combo.isEnabled() and ms is not None:
            return list(range(1, ms.bandCount() + 1))
        return sorted(int(value) for value in self.bands_combo.checkedItemsData())

    def adapter_path(self):
        """The adapter file, or None (the pre-trained weights)."""
        return self.adapter_widget.filePath().strip() or None

    def processing_parameters(self):
        """The parameters of the selected algorithm that the dock's choices stand for (the PAN and MS by
        layer id)."""
        pan, ms = self.pan_layer(), self.ms_layer()
        values = {"PAN": pan.id() if pan else None, "MS": ms.id() if ms else None, "MS_BANDS": self.ms_bands(),
                  "SENSOR": max(0, self.sensor_combo.currentIndex()),
                  "DEVICE": max(0, self.device_combo.currentIndex()),
                  "ADAPTER": self.adapter_path(), "STEPS": self.steps_spin.value(), "SEED": self.seed_spin.value()}
        algorithm = self.algorithm()
        if algorithm is None:
            return values
        return {name: value for name, value in values.items()
                if algorithm.parameterDefinition(name) is not None and not (name == "ADAPTER" and value is None)}

    def _request(self):
        """(PreviewRequest, None) or (None, a sentence saying what is missing)."""
        from ..backend.preview import PreviewRequest
        pan, ms, method = self.pan_layer(), self.ms_layer(), self.method_id()
        if pan is None or ms is None:
            return None, tr("Choose a PAN and an MS layer.")
        if pan.id() == ms.id():
            return None, tr("The PAN and the MS must be two different layers.")
        bands = self.ms_bands()
        if not bands:
            return None, tr("Check at least one MS band.")
        if not method:
            return None, tr("No pansharpening algorithm is registered (is the provider enabled?).")
        all_bands = bands == list(range(1, ms.bandCount() + 1))
        devices = ("auto", "cpu", "cuda")
        adapter = self.adapter_path() if self.has_parameter("ADAPTER") else None
        if adapter is not None and not os.path.isfile(adapter):
            return None, tr("The adapter file '{}' does not exist.").format(adapter)
        return PreviewRequest(pan.source(), ms.source(), method, self.sensor_combo.currentIndex(),
                              None if all_bands else tuple(bands),
                              devices[min(max(0, self.device_combo.currentIndex()), 2)], adapter=adapter,
                              steps=self.steps_spin.value() if self.has_parameter("STEPS") else 10,
                              seed=self.seed_spin.value() if self.has_parameter("SEED") else 0), None

    def canvas_view(self, crs):
        """(extent (xmin, ymin, xmax, ymax) in ``crs``, width, height in screen pixels) of the map canvas."""
        settings = self.canvas.mapSettings()
        extent = settings.visibleExtent()
        size = settings.outputSize()
        source = settings.destinationCrs()
        if source.isValid() and crs.isValid() and source != crs:
            transform = QgsCoordinateTransform(source, crs, QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        return (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()), \
            size.width(), size.height()

    # ----------------------------------------------------------------------------------------- preview
    def start_preview(self, auto=False):
        """Start fusing what the map shows; returns False (and says why) when it cannot start."""
        request, problem = self._request()
        if problem is None and not previewable(request.method):
            problem = tr("{} has no map preview yet: use 'Run on whole scene'.").format(
                self.method_combo.currentText())
        view = None
        if problem is None:
            try:
                view = self.canvas_view(self.pan_layer().crs())
            except QgsCsException as error:
                problem = tr("The map extent cannot be transformed into the PAN's CRS: {}").format(error)
        if problem is not None:
            if not auto:
                self._set_status(problem)
            return False
        self.cancel_preview()
        from ..backend.preview import JobCache, render_preview
        if self.jobs is None:
            self.jobs = JobCache()
        if self.temp_dir is None or not self.temp_dir.isValid():
            self.temp_dir = QTemporaryDir(os.path.join(QDir.tempPath(), "panadapter-preview-XXXXXX"))
        self.counter += 1
        out_path = os.path.join(self.temp_dir.path(), f"preview_{self.counter}.tif")
        extent, width, height = view
        jobs = self.jobs

        def work(progress, is_cancelled):
            return render_preview(jobs, request, extent, width, height, out_path, progress, is_cancelled)

        task = PreviewTask(tr("Pansharpening preview ({})").format(self.method_combo.currentText()), work,
                           self._task_finished)
        task.out_path = out_path
        task.title = self.method_combo.currentText()
        task.progressChanged.connect(self._task_progress)
        self.task = task
        _RUNNING.add(task)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        self._set_status(tr("Fusing {} × {} screen pixels…").format(width, height))
        QgsApplication.taskManager().addTask(task)
        return True

    def cancel_preview(self):
        """Cancel the running preview, if any (its result, should it still arrive, is thrown away)."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        self.cancel_button.setEnabled(False)

    def _task_progress(self, value):
        if self.sender() is self.task:
            self.progress.setValue(int(value))

    def _task_finished(self, task, ok):
        if task is not self.task:  # cancelled, or replaced by a newer preview that is still running
            remove_raster(task.out_path)
            if self.task is None:
                self.progress.setValue(0)
                self._set_status(tr("Preview cancelled."))
                self.previewFinished.emit(False, tr("Preview cancelled."))
            return
        self.task = None
        self.cancel_button.setEnabled(False)
        if not ok or task.result is None:
            remove_raster(task.out_path)
            message = task.error or tr("Preview cancelled.")
            if task.missing_torch:
                QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Warning)
                message = tr("PyTorch is missing: 'Device and dependencies' below says how to install it.")
                self.device_box.setCollapsed(False)
                self.device_status.refresh()
            self.progress.setValue(0)
            self._set_status(message)
            self.previewFinished.emit(False, message)
            return
        try:
            message = self._show_result(task.result, task.title)
        except Exception as error:  # noqa: BLE001
            remove_raster(task.result.path)
            message = tr("The preview could not be displayed: {}").format(error)
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            self._set_status(message)
            self.previewFinished.emit(False, message)
            return
        self.progress.setValue(100)
        self._set_status(message)
        self.previewFinished.emit(True, message)

    def _show_result(self, result, title):
        plan = result.plan
        if plan.mode == MULTISPECTRAL:
            name = tr("Preview: multispectral only (1:{}; zoom in to sharpen)").format(plan.factor)
        elif plan.factor > 1:
            name = tr("Preview: {} (1:{})").format(title, plan.factor)
        else:
            name = tr("Preview: {}").format(title)
        layer = QgsRasterLayer(result.path, name, "gdal")
        if not layer.isValid():
            raise RuntimeError(tr("QGIS could not open {}").format(result.path))
        layer.setCustomProperty(PREVIEW_PROPERTY, True)
        limits = [result.limits[band - 1] for band in result.rgb]
        apply_rgb_style(layer, result.rgb, limits)
        old_id, old_path = self.layer_id, self.layer_path
        project = QgsProject.instance()
        root = project.layerTreeRoot()
        group = root.findGroup(PREVIEW_GROUP)
        if group is None:
            group = root.insertGroup(0, PREVIEW_GROUP)
        project.addMapLayer(layer, False)
        group.insertLayer(0, layer)
        self.layer_id, self.layer_path = layer.id(), result.path
        self._remove_layer(old_id, old_path)
        if plan.mode == MULTISPECTRAL:
            what = tr("multispectral image averaged to 1:{} (no sharpening at this zoom: zoom in to see it)") \
                .format(plan.factor)
        elif plan.factor > 1:
            what = tr("{} fused at full resolution, averaged to 1:{}").format(title, plan.factor)
        else:
            what = tr("{} at full resolution").format(title)
        return tr("Preview: {} × {} pixels, {}; {:.1f} s on {}.").format(
            plan.cols, plan.rows, what, result.seconds, result.device)

    def _remove_layer(self, layer_id, path):
        project = QgsProject.instance()
        if layer_id and project.mapLayer(layer_id) is not None:
            project.removeMapLayer(layer_id)  # deletes the layer, which closes its file
        if path:
            remove_raster(path)

    def remove_preview(self):
        """Remove the preview layer, its file and the (then empty) preview group."""
        self._remove_layer(self.layer_id, self.layer_path)
        self.layer_id = self.layer_path = None
        root = QgsProject.instance().layerTreeRoot()
        group = root.findGroup(PREVIEW_GROUP)
        if group is not None and not group.children():
            root.removeChildNode(group)

    def preview_layer(self):
        return QgsProject.instance().mapLayer(self.layer_id) if self.layer_id else None

    def _set_status(self, text):
        self.status_label.setText(text)

    # ------------------------------------------------------------------------------------ auto refresh
    def set_auto_refresh(self, enabled):
        if enabled and not self._auto_connected:
            self.canvas.extentsChanged.connect(self.auto_timer.start)
            self._auto_connected = True
        elif not enabled and self._auto_connected:
            self.canvas.extentsChanged.disconnect(self.auto_timer.start)
            self._auto_connected = False
            self.auto_timer.stop()
        if self.auto_check.isChecked() != bool(enabled):
            self.auto_check.setChecked(bool(enabled))

    def _auto_preview(self):
        if self.auto_check.isChecked():
            self.start_preview(auto=True)

    # ------------------------------------------------------------------------------------- whole scene
    def run_whole_scene(self):
        """Open the Processing dialog of the selected algorithm with the dock's inputs and settings."""
        method = self.method_id()
        if not method:
            self._set_status(tr("No pansharpening algorithm is registered (is the provider enabled?)."))
            return None
        import processing
        return processing.execAlgorithmDialog(f"{PROVIDER_ID}:{method}", self.processing_parameters())

    # ---------------------------------------------------------------------------------------- clean-up
    def cleanup(self):
        """Everything the dock created goes: the running task, signals, the preview layer, its files."""
        self.set_auto_refresh(False)
        self.auto_timer.stop()
        self.task = None
        for task in list(_RUNNING):  # this dock's running and cancelled tasks: their results have nowhere to go
            if task.on_finished is not None and getattr(task.on_finished, "__self__", None) is self:
                task.on_finished = None
                task.cancel()
        provider, self._watched_provider = self._watched_provider, None
        if provider is not None and not sip.isdeleted(provider):
            try:
                provider.algorithmsLoaded.disconnect(self.refresh_methods)
            except TypeError:
                pass
        for signal, slot in ((QgsProject.instance().layersAdded, self._update_layer_filters),
                             (QgsProject.instance().layersRemoved, self._update_layer_filters),
                             (QgsApplication.processingRegistry().providerAdded, self.refresh_methods),
                             (QgsApplication.processingRegistry().providerRemoved, self.refresh_methods)):
            try:
                signal.disconnect(slot)
            except TypeError:
                pass
        self.remove_preview()
        if self.temp_dir is not None:
            self.temp_dir.remove()
            self.temp_dir = None
        if self.jobs is not None:
            self.jobs.clear()
            self.jobs = None
