"""The quality algorithms as QGIS users run them: panadapter:degrade and panadapter:assess through
processing.run (toolbox, modeler, scripts) and qgis_process --json."""
import json
import shutil

import pytest
from conftest import REPO_ROOT  # noqa: F401 (tests/ on sys.path)
from osgeo import gdal
from qgis.core import (QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingParameterDefinition)
from test_qgis_process import QGIS_PROCESS, qgis_env, qgis_process

REDUCED_OUTPUTS = {"SAM", "ERGAS", "Q2N", "Q_AVG", "SCC", "PSNR"}
FULL_OUTPUTS = {"D_LAMBDA", "D_S", "HQNR", "QNR"}


def test_parameters_and_outputs_follow_the_contract(panadapter_provider):
    registry = QgsApplication.processingRegistry()
    degrade = registry.algorithmById("panadapter:degrade")
    assess = registry.algorithmById("panadapter:assess")
    for algorithm in (degrade, assess):
        assert algorithm.group() == "Quality assessment" and algorithm.groupId() == "quality"
    assert [p.name() for p in degrade.parameterDefinitions()] == [
        "PAN", "MS", "MS_BANDS", "SENSOR", "PAN_MODE", "OUTPUT_FLOAT32", "SCHEDULER", "OUTPUT_PAN", "OUTPUT_MS",
        "OUTPUT_REFERENCE"]
    assert degrade.parameterDefinition("SCHEDULER").flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert degrade.parameterDefinition("PAN_MODE").options()[1].startswith("Bicubic")
    parameters = {p.name(): p for p in assess.parameterDefinitions()}
    assert list(parameters) == ["FUSED", "REFERENCE", "PAN", "MS", "SENSOR", "DIM_CUT", "RATIO", "OUTPUT_HTML",
                                "OUTPUT_CSV", "SCHEDULER"]
    assert parameters["SCHEDULER"].flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert parameters["FUSED"].type() == "multilayer"
    assert parameters["DIM_CUT"].defaultValue() == 21
    assert parameters["SENSOR"].options()[9].startswith("Sentinel-2")
    outputs = {o.name() for o in assess.outputDefinitions()}
    assert REDUCED_OUTPUTS | FULL_OUTPUTS | {"RESULTS", "OUTPUT_HTML", "OUTPUT_CSV"} <= outputs


@pytest.mark.slow
def test_degrade_fuse_assess_in_processing(panadapter_provider, backend_ready, data_dir, tmp_path):
    import processing

    scene = data_dir / "pansharpening" / "wv3_cristianics"
    pan, ms = str(scene / "pan.tif"), str(scene / "ms.tif")
    reduced = processing.run("panadapter:degrade", {
        "PAN": pan, "MS": ms, "SENSOR": 2, "PAN_MODE": 0,
        "OUTPUT_PAN": str(tmp_path / "pan_lr.tif"), "OUTPUT_MS": str(tmp_path / "ms_lr.tif")})
    assert gdal.Open(reduced["OUTPUT_MS"]).RasterXSize == 36
    fused = {}
    for method in ("upsample", "mtf_glp_fs"):
        fused[method] = processing.run(f"panadapter:{method}", {
            "PAN": reduced["OUTPUT_PAN"], "MS": reduced["OUTPUT_MS"], "SENSOR": 2, "OUTPUT_FLOAT32": True,
            "OUTPUT": str(tmp_path / f"{method}.tif")})["OUTPUT"]

    # one raster: the numbers are outputs; the original MS is the reference (same grid here)
    one = processing.run("panadapter:assess", {"FUSED": [fused["mtf_glp_fs"]], "REFERENCE": ms,
                                               "OUTPUT_HTML": str(tmp_path / "one.html")})
    assert REDUCED_OUTPUTS <= set(one)
    assert 0.5 < one["Q2N"] <= 1 and one["SAM"] > 0 and one["ERGAS"] > 0
    assert not FULL_OUTPUTS & set(one)
    assert "<table>" in open(one["OUTPUT_HTML"], encoding="utf-8").read()

    # several rasters: one row each in RESULTS, and the CSV
    both = processing.run("panadapter:assess", {
        "FUSED": [fused["upsample"], fused["mtf_glp_fs"]], "REFERENCE": ms,
        "OUTPUT_HTML": str(tmp_path / "both.html"), "OUTPUT_CSV": str(tmp_path / "both.csv")})
    rows = json.loads(both["RESULTS"])["rows"]
    assert [r["name"] for r in rows] == ["upsample", "mtf_glp_fs"]
    assert rows[1]["ergas"] == pytest.approx(one["ERGAS"])
    assert rows[0]["ergas"] > rows[1]["ergas"]
    assert len(open(both["OUTPUT_CSV"]).read().splitlines()) == 3

    # full resolution: the PAN and MS the raster was made from
    full_fused = processing.run("panadapter:mtf_glp_fs", {"PAN": pan, "MS": ms, "SENSOR": 2,
                                                          "OUTPUT": str(tmp_path / "full.tif")})["OUTPUT"]
    full = processing.run("panadapter:assess", {"FUSED": [full_fused], "PAN": pan, "MS": ms, "SENSOR": 2})
    assert FULL_OUTPUTS <= set(full) and not REDUCED_OUTPUTS & set(full)
    assert full["HQNR"] == pytest.approx((1 - full["D_LAMBDA"]) * (1 - full["D_S"]))


def test_assess_needs_exactly_one_mode(panadapter_provider, istanbul, tmp_path):
    pan, ms = (str(p) for p in istanbul)
    cases = [
        ({}, "REFERENCE.*or the PAN and MS"),
        ({"PAN": pan}, "MS is missing"),
        ({"MS": ms}, "PAN is missing"),
        ({"REFERENCE": ms, "PAN": pan, "MS": ms}, "not both"),
    ]
    for extra, message in cases:
        algorithm = QgsApplication.processingRegistry().createAlgorithmById("panadapter:assess")
        with pytest.raises(QgsProcessingException, match=message):
            algorithm.processAlgorithm({"FUSED": [ms], **extra}, QgsProcessingContext(), QgsProcessingFeedback())


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(QGIS_PROCESS), reason=f"{QGIS_PROCESS} not installed")
def test_qgis_process_assess_returns_the_numbers_as_json(backend_ready, data_dir, tmp_path):
    from panadapter_qgis.backend import wald
    from panadapter_qgis.backend.pipeline import pansharpen

    scene = data_dir / "pansharpening" / "landsat7_fusebox" / "scene_05"
    if not scene.is_dir():
        pytest.skip(f"scene not found: {scene}")
    pan_lr, ms_lr = str(tmp_path / "pan_lr.tif"), str(tmp_path / "ms_lr.tif")
    wald.degrade(str(scene / "pan.tif"), str(scene / "ms.tif"), pan_lr, ms_lr, sensor=8)
    fused = str(tmp_path / "fused.tif")
    pansharpen(pan_lr, ms_lr, fused, "mtf_glp_fs", sensor=8)

    env = qgis_env(tmp_path / "profile")
    assert qgis_process(env, "plugins", "enable", "panadapter_qgis").returncode == 0
    report = tmp_path / "report.html"
    ran = qgis_process(env, "run", "panadapter:assess", f"--FUSED={fused}", f"--REFERENCE={scene / 'ms.tif'}",
                       f"--OUTPUT_HTML={report}", "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = json.loads(ran.stdout)["results"]
    assert REDUCED_OUTPUTS <= set(results)
    assert all(isinstance(results[name], float) for name in REDUCED_OUTPUTS)
    assert 0 < results["Q2N"] < 1 and results["PSNR"] > 20  # 8-bit data: peak 255 from BIT_DEPTH
    assert report.is_file()
    row = json.loads(results["RESULTS"])["rows"][0]
    assert row["ergas"] == results["ERGAS"]
