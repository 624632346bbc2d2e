"""What SSDiff is for, on real scenes its bundled weights never saw (Wald's reduced-resolution test).

The bundled SSDiff weights (``make weights``) were trained on the FuseBox scenes whose number is not a
multiple of 5; these tests use scenes 10 and 15. Scene adaptation (L-BAF) sees only the reduced pair.
"""
import pytest

from conftest import ergas_sam, reduced_pair
from panadapter_qgis.backend import weights
from panadapter_qgis.backend.adapt import finetune_scene, ssdiff_scene
from panadapter_qgis.backend.classical import METHODS

pytestmark = pytest.mark.skipif(weights.bundled("ssdiff") is None, reason="no bundled SSDiff weights")


@pytest.mark.slow
def test_bundled_ssdiff_beats_mtf_glp_fs_on_an_unseen_landsat7_scene(data_dir, tmp_path):
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, "landsat7_fusebox/scene_15", 8,
                                                        ["upsample", "mtf_glp_fs"])
    out = tmp_path / "ssdiff.tif"
    ssdiff_scene(pan, ms, str(out), sensor=8, float32=True, device="cpu")
    ergas, sam = ergas_sam(reference, out, ratio)
    assert ergas < classical["mtf_glp_fs"][0] and sam < classical["mtf_glp_fs"][1], (ergas, sam, classical)


@pytest.mark.slow
def test_scene_adapted_ssdiff_beats_every_classical_method_on_an_unseen_scene(data_dir, tmp_path):
    """FuseBox scene 10: L-BAF on its own reduced pair, then 10 DDIM steps: better ERGAS and SAM than the
    best of the provider's twelve classical methods."""
    pan, ms, reference, ratio, classical = reduced_pair(data_dir, tmp_path, "landsat7_fusebox/scene_10", 8, METHODS)
    adapter, out = str(tmp_path / "a.pt"), tmp_path / "ssdiff.tif"
    finetune_scene(pan, ms, adapter, model="ssdiff", sensor=8, iterations=600, device="cpu")
    ssdiff_scene(pan, ms, str(out), adapter=adapter, sensor=8, float32=True, device="cpu")
    ergas, sam = ergas_sam(reference, out, ratio)
    assert ergas < min(v[0] for v in classical.values()), (ergas, classical)
    assert sam < min(v[1] for v in classical.values()), (sam, classical)
