"""Shared fixtures: real data from ../shared/data, the panadapter provider in the Processing registry."""
import os

# Before anything imports Qt: no display on CI. (pytest-qgis also sets it when qgis_gui_enabled = false.)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"

# DESIGN.md: the classical algorithm ids users and models rely on.
CLASSICAL_IDS = ("upsample", "brovey", "ihs", "gs", "gsa", "pca", "mtf_glp", "mtf_glp_hpm", "mtf_glp_fs",
                 "bdsd_pc", "awlp", "pracs")


@pytest.fixture(autouse=True, scope="session")
def _collect_before_qgis_exits(qgis_app):
    """Python wrappers of Qt/QGIS objects must be collected while QGIS lives: pytest-qgis calls exitQgis()
    when its session fixture ends, and pytest (9.x) collects garbage at unconfigure, after that, where a
    leftover wrapper crashed the process (a segmentation fault after every test had passed)."""
    yield
    import gc

    for _ in range(3):
        gc.collect()


@pytest.fixture(scope="session")
def data_dir():
    """The shared real scenes (never copied into the repository); skips the test when absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared test data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def istanbul(data_dir):
    """Landsat 8 Istanbul pair: real georeference, ratio 2, 3 bands (blue, green, red)."""
    scene = data_dir / "pansharpening" / "landsat8_istanbul"
    if not (scene / "pan.tif").is_file():
        pytest.skip(f"scene not found: {scene}")
    return scene / "pan.tif", scene / "ms.tif"


@pytest.fixture(scope="session")
def wv3(data_dir):
    """WorldView-3 CristianICS pair: 8 bands, ratio 4, float32."""
    scene = data_dir / "pansharpening" / "wv3_cristianics"
    if not scene.is_dir():
        pytest.skip(f"missing scene {scene}")
    return str(scene / "pan.tif"), str(scene / "ms.tif")


def fusebox_crop(data_dir, folder, scene="scene_09", pan_size=256, bands=(1, 2, 3, 4)):
    """PAN (pan_size^2) and MS (half that, ``bands``) crops of a Landsat-7 FuseBox scene (ratio 2, uint8)."""
    from osgeo import gdal

    src = data_dir / "pansharpening" / "landsat7_fusebox" / scene
    pan, ms = str(folder / "pan.tif"), str(folder / "ms.tif")
    gdal.Translate(pan, str(src / "pan.tif"), srcWin=[0, 0, pan_size, pan_size])
    gdal.Translate(ms, str(src / "ms.tif"), srcWin=[0, 0, pan_size // 2, pan_size // 2], bandList=list(bands))
    return pan, ms


def ergas_sam(reference, path, ratio):
    """(ERGAS, SAM) of a fused GeoTIFF against the reference (21-pixel border cut)."""
    import numpy as np
    from osgeo import gdal

    from panadapter_qgis.backend import metrics

    fused = gdal.Open(str(path)).ReadAsArray().astype(np.float64)
    ref, fus = metrics.cut_border(reference), metrics.cut_border(np.nan_to_num(fused))
    return metrics.ergas(ref, fus, ratio), metrics.sam(ref, fus)


def reduced_pair(data_dir, folder, name, sensor, methods):
    """Wald's reduced pair of a real scene and the (ERGAS, SAM) of the given classical methods on it:
    (pan, ms, reference, ratio, {method: (ERGAS, SAM)})."""
    import numpy as np

    from panadapter_qgis.backend.pipeline import pansharpen
    from panadapter_qgis.backend.wald import degrade_pair

    scene = data_dir / "pansharpening" / name
    pan, ms = str(folder / "pan_lr.tif"), str(folder / "ms_lr.tif")
    info, reference = degrade_pair(str(scene / "pan.tif"), str(scene / "ms.tif"), pan, ms, sensor)
    reference = reference.astype(np.float64)
    classical = {}
    for method in methods:
        out = folder / f"{method}.tif"
        pansharpen(pan, ms, str(out), method, sensor=sensor, float32=True)
        classical[method] = ergas_sam(reference, out, info.ratio)
    return pan, ms, reference, info.ratio, classical


_REGISTERED = {}  # the Python provider object must stay referenced, or sip drops its Python overrides


def _provider():
    from qgis.core import QgsApplication

    from panadapter_qgis.processing.provider import PanAdapterProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("panadapter")
    if provider is None:
        provider = PanAdapterProvider()
        assert registry.addProvider(provider)
        _REGISTERED["panadapter"] = provider
    return provider


@pytest.fixture
def panadapter_provider(qgis_app, qgis_processing):
    """The ``panadapter`` provider, registered in ``QgsApplication.processingRegistry()``.

    Registered once per session; a test that unloads the plugin removes it (the registry deletes it), and
    the next test that asks for it registers a new one.
    """
    return _provider()


@pytest.fixture(scope="module")
def module_provider(qgis_app, qgis_processing):
    """The same, for module-scoped fixtures that run algorithms."""
    return _provider()


@pytest.fixture
def backend_ready():
    """Skip while the backend's pipeline has not landed yet; once its files exist, failures are real."""
    backend = REPO_ROOT / "panadapter_qgis" / "backend"
    if not (backend / "pipeline.py").is_file() or not (backend / "classical" / "__init__.py").is_file():
        pytest.skip("panadapter_qgis/backend (pipeline, classical) is not there yet")
