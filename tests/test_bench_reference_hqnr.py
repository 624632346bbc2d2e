"""bench/bench_reference_hqnr.py: HQNR of Wald's reference, the truth of a reduced pair, among the methods.

On FuseBox scene 15's reduced pair (Landsat-7: a PAN reaching into the NIR), plain upsampling, which adds no
PAN detail at all, scores a higher HQNR than the truth itself: the index rewards leaving detail out there, so
it cannot stand in for fidelity where a reference exists."""
from bench import bench_reference_hqnr
from panadapter_qgis.backend import wald
from panadapter_qgis.backend.pipeline import pansharpen

METHODS = ("upsample", "mtf_glp_fs", "pracs")


def test_the_reference_is_ranked_by_hqnr_among_the_methods(data_dir, tmp_path):
    src = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_15"
    folder = tmp_path / "landsat7_fusebox_scene_15"   # laid out as a bench_quality.py work folder
    (folder / "reduced").mkdir(parents=True)
    pan, ms = str(folder / "pan_lr.tif"), str(folder / "ms_lr.tif")
    wald.degrade(str(src / "pan.tif"), str(src / "ms.tif"), pan, ms, sensor=8,
                 out_reference=str(folder / "reference.tif"))
    for method in METHODS:
        pansharpen(pan, ms, str(folder / "reduced" / f"{method}.tif"), method, sensor=8, float32=True)
    rows = bench_reference_hqnr.reference_rows(str(folder), 8, list(METHODS))
    values = dict(rows)
    assert [name for name, _ in rows][0] != "reference" and set(values) == {"reference", *METHODS}
    assert [v["hqnr"] for _, v in rows] == sorted((v["hqnr"] for _, v in rows), reverse=True)
    truth = values["reference"]
    assert truth["ergas"] == 0.0 and all(values[m]["ergas"] > 1.0 for m in METHODS)
    # the truth is not the best-scored image: no-detail upsampling beats it, by its lower D_s
    assert values["upsample"]["hqnr"] > truth["hqnr"], values
    assert values["upsample"]["d_s"] < truth["d_s"]
    for name, v in rows:
        assert abs(v["hqnr"] - (1 - v["d_lambda"]) * (1 - v["d_s"])) < 1e-9
