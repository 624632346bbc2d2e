"""Reduced-resolution quality on real scenes (Wald's protocol): our methods against upsampling and the peers.

Each scene is degraded by the sensor MTF (``backend.wald``); the original MS is the reference. Indices are
the toolbox's (``backend.metrics``) with the 21-pixel border cut. Peers run on the very same degraded files.
"""
import numpy as np
import pytest
from osgeo import gdal

from bench import peers
from panadapter_qgis.backend import metrics
from panadapter_qgis.backend.classical import METHODS
from panadapter_qgis.backend.pipeline import pansharpen
from panadapter_qgis.backend.wald import degrade_pair

# scene, sensor index, the three bands GRASS i.pansharpen gets (red, green, blue)
SCENES = {
    "wv3_cristianics": (2, (5, 3, 2)),
    "landsat8_istanbul": (8, (3, 2, 1)),
    "landsat7_fusebox/scene_05": (8, (1, 2, 3)),
    "landsat7_fusebox/scene_20": (8, (1, 2, 3)),
}
# GIHS, GS and PCA assume the PAN is (close to) the mean of the MS bands. The ETM+ PAN (0.52-0.90 um) is
# NIR-dominated and FuseBox's MS includes two SWIR bands, so on those scenes these three methods are
# worse than upsampling: a known property of the methods (Vivone et al. 2015), not a defect to hide.
CS_NEEDS_MATCHING_PAN = {"ihs", "gs", "pca"}
LANDSAT7 = {"landsat7_fusebox/scene_05", "landsat7_fusebox/scene_20"}


def _read(path):
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


def _indices(reference, fused, ratio):
    ref, fus = metrics.cut_border(reference), metrics.cut_border(np.nan_to_num(fused))
    return metrics.ergas(ref, fus, ratio), metrics.sam(ref, fus)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory, data_dir):
    """scene -> dict(ratio, reference, ours={method: (ergas, sam)}, ours_rgb, peers={name: (ergas, sam)})."""
    cache = {}

    def get(name):
        if name in cache:
            return cache[name]
        sensor, rgb = SCENES[name]
        src = data_dir / "pansharpening" / name
        if not src.is_dir():
            pytest.skip(f"missing scene {src}")
        d = tmp_path_factory.mktemp(name.replace("/", "_"))
        pan_lr, ms_lr = str(d / "pan_lr.tif"), str(d / "ms_lr.tif")
        info, reference = degrade_pair(str(src / "pan.tif"), str(src / "ms.tif"), pan_lr, ms_lr, sensor)
        reference = reference.astype(np.float64)
        ratio = info.ratio
        rgb_ref = reference[[b - 1 for b in rgb]]
        result = dict(ratio=ratio, ours={}, ours_rgb={}, peers={}, skipped={})
        for method in METHODS:
            out = d / f"{method}.tif"
            pansharpen(pan_lr, ms_lr, str(out), method, sensor=sensor, float32=True)
            result["ours"][method] = _indices(reference, _read(out), ratio)
        for method in ("upsample", "mtf_glp_fs", "bdsd_pc"):
            out = d / f"{method}_rgb.tif"
            pansharpen(pan_lr, ms_lr, str(out), method, sensor=sensor, float32=True, ms_bands=list(rgb))
            result["ours_rgb"][method] = _indices(rgb_ref, _read(out), ratio)
        for peer, run in peers.PEERS.items():
            if not peers.available(peer):
                result["skipped"][peer] = "not installed"
                continue
            out = d / f"peer_{peer}.tif"
            grass = peer.startswith("grass")
            run(pan_lr, ms_lr, str(out), **({"rgb_bands": rgb} if grass else {}))
            result["peers"][peer] = _indices(rgb_ref if grass else reference, _read(out), ratio)
        cache[name] = result
        return result

    return get


@pytest.mark.slow
@pytest.mark.parametrize("scene", sorted(SCENES))
def test_every_sharpening_method_beats_upsampling(reduced, scene):
    r = reduced(scene)
    up_ergas, up_sam = r["ours"]["upsample"]
    for method, (ergas, sam) in r["ours"].items():
        if method == "upsample" or (scene in LANDSAT7 and method in CS_NEEDS_MATCHING_PAN):
            continue
        assert ergas < up_ergas or sam < up_sam, (method, ergas, sam, up_ergas, up_sam)


@pytest.mark.slow
@pytest.mark.parametrize("scene", sorted(SCENES))
@pytest.mark.parametrize("method", ["mtf_glp_fs", "bdsd_pc"])
def test_best_classical_methods_beat_every_installed_peer_on_ergas(reduced, scene, method):
    r = reduced(scene)
    if not r["peers"]:
        pytest.skip(f"no peer tool installed: {r['skipped']}")
    for peer, (ergas, _) in r["peers"].items():
        ours = r["ours_rgb" if peer.startswith("grass") else "ours"][method][0]
        assert ours < ergas, (peer, ergas, method, ours)


@pytest.mark.slow
def test_sharpening_improves_a_lot_on_worldview3(reduced):
    """The toolbox's MTF-GLP-FS typically cuts the EXP ERGAS by a third or more on WorldView-3 data."""
    r = reduced("wv3_cristianics")
    assert r["ours"]["mtf_glp_fs"][0] < 0.67 * r["ours"]["upsample"][0]
