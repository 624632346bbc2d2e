"""The sensor found for the user (issue 30): small GeoTIFFs with each kind of product metadata GDAL reads (the
sidecar files written here), the sensor each gives, the algorithms' log when SENSOR is left out, the warning
when the user's SENSOR contradicts the metadata (and the user obeyed), and the preview dock's preselection."""
import numpy as np
import pytest
from osgeo import gdal, osr
from qgis.core import QgsProcessingFeedback, QgsRasterLayer

from panadapter_qgis.backend.sensor_detect import detect_sensor, sensor_index, sensor_of_file

PAN_SIZE, RATIO = 64, 4


def write_tif(path, bands, size, pixel, seed):
    """A georeferenced uint16 GeoTIFF of smooth random texture (EPSG:32632)."""
    rng = np.random.default_rng(seed)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, gdal.GDT_UInt16)
    ds.SetGeoTransform((500000.0, pixel, 0.0, 4500000.0, 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    base = rng.uniform(200, 1800, (size, size))
    for band in range(1, bands + 1):
        ds.GetRasterBand(band).WriteArray((base * (0.6 + 0.1 * band) + rng.normal(0, 40, base.shape))
                                          .clip(1, 4000).astype(np.uint16))
    ds = None
    return str(path)


def write_pair(folder, pan_name="pan.tif", ms_name="ms.tif"):
    folder.mkdir(parents=True, exist_ok=True)
    return (write_tif(folder / pan_name, 1, PAN_SIZE, 0.5, 1),
            write_tif(folder / ms_name, 4, PAN_SIZE // RATIO, 0.5 * RATIO, 2))


def set_imagery(path, satellite):
    """SATELLITEID written straight into the IMAGERY domain (GTiff keeps it in its GDAL_METADATA tag)."""
    ds = gdal.Open(path, gdal.GA_Update)
    ds.SetMetadata({"SATELLITEID": satellite}, "IMAGERY")
    ds = None


def digitalglobe_imd(tif, satellite):
    """The .IMD beside a DigitalGlobe/Maxar GeoTIFF (ODL groups; GDAL reads IMAGE_1.satId)."""
    with open(tif[:-4] + ".IMD", "w") as handle:
        handle.write(f'version = "28.3";\nBEGIN_GROUP = IMAGE_1\n\tsatId = "{satellite}";\n'
                     "\tcloudCover = 0.0;\nEND_GROUP = IMAGE_1\nEND;\n")


def digitalglobe_xml(tif, satellite):
    """The .XML of a DigitalGlobe/Maxar product: GDAL needs the <isd> root and reads IMD/IMAGE/SATID."""
    with open(tif[:-4] + ".XML", "w") as handle:
        handle.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<isd>\n<IMD>\n<IMAGE>\n<SATID>{satellite}</SATID>\n'
                     "</IMAGE>\n</IMD>\n</isd>\n")


def dimap(folder, stem, mission, index):
    """A Pleiades/SPOT 6-7 DIMAP document. GDAL looks for DIM_<name>.XML beside IMG_<name>_R<r>C<c>.<ext>
    (the name without its IMG_ prefix and tile suffix) and joins MISSION and MISSION_INDEX."""
    with open(folder / f"DIM_{stem}.XML", "w") as handle:
        handle.write('<?xml version="1.0" encoding="UTF-8"?>\n<Dimap_Document>\n<Dataset_Sources>\n'
                     "<Source_Identification>\n<Strip_Source>\n"
                     f"<MISSION>{mission}</MISSION>\n<MISSION_INDEX>{index}</MISSION_INDEX>\n"
                     "</Strip_Source>\n</Source_Identification>\n</Dataset_Sources>\n</Dimap_Document>\n")


def landsat_mtl(folder, scene, spacecraft, group="L1_METADATA_FILE"):
    """<scene>_MTL.txt beside <scene>_B<n>.TIF. GDAL maps Collection 1 (L1_METADATA_FILE) to SATELLITEID;
    Collection 2 (LANDSAT_METADATA_FILE) is only in its IMD domain."""
    section = "PRODUCT_METADATA" if group == "L1_METADATA_FILE" else "IMAGE_ATTRIBUTES"
    with open(folder / f"{scene}_MTL.txt", "w") as handle:
        handle.write(f'GROUP = {group}\n  GROUP = {section}\n    SPACECRAFT_ID = "{spacecraft}"\n'
                     f"  END_GROUP = {section}\nEND_GROUP = {group}\nEND\n")


# ------------------------------------------------------------------------------------------- detection
def test_a_digitalglobe_imd_names_worldview3(tmp_path):
    pan, ms = write_pair(tmp_path)
    digitalglobe_imd(pan, "WV03")
    digitalglobe_imd(ms, "WV03")
    assert gdal.Open(ms).GetMetadata("IMAGERY")["SATELLITEID"] == "WV03"
    found = detect_sensor(pan, ms)
    assert found.index == 2
    assert found.where == "IMAGERY SATELLITEID=WV03 of pan.tif; IMAGERY SATELLITEID=WV03 of ms.tif"
    assert "WorldView-3" in found.message


def test_a_digitalglobe_xml_names_geoeye1(tmp_path):
    pan, ms = write_pair(tmp_path)
    digitalglobe_xml(ms, "GE01")
    found = detect_sensor(pan, ms)  # the PAN names nothing: the MS alone decides
    assert (found.index, found.where) == (5, "IMAGERY SATELLITEID=GE01 of ms.tif")


@pytest.mark.parametrize("mission, index, expected", [("PHR", "1A", 6), ("PHR", "1B", 6), ("PNEO", "3", 6),
                                                      ("SPOT", "6", 0)])
def test_a_dimap_document_names_pleiades(tmp_path, mission, index, expected):
    stem = f"{mission}{index}_MS_001"
    pan, ms = write_pair(tmp_path, f"IMG_{mission}{index}_P_001_R1C1.tif", f"IMG_{stem}_R1C1.tif")
    dimap(tmp_path, stem, mission, index)
    assert gdal.Open(ms).GetMetadata("IMAGERY")["SATELLITEID"] == f"{mission} {index}"
    found = detect_sensor(pan, ms)
    assert found.index == expected
    assert found.where == f"IMAGERY SATELLITEID={mission} {index} of IMG_{stem}_R1C1.tif"


def test_landsat_mtl_files_name_landsat(tmp_path):
    scene1, scene2 = "LC08_L1TP_001002_20200101_01_T1", "LC09_L1TP_001002_20220101_02_T1"
    pan, _ = write_pair(tmp_path / "c1", f"{scene1}_B8.TIF", f"{scene1}_B2.TIF")
    landsat_mtl(tmp_path / "c1", scene1, "LANDSAT_8")
    assert gdal.Open(pan).GetMetadata("IMAGERY")["SATELLITEID"] == "LANDSAT_8"
    assert sensor_of_file(pan).index == 8
    _, ms = write_pair(tmp_path / "c2", f"{scene2}_B8.TIF", f"{scene2}_B2.TIF")
    landsat_mtl(tmp_path / "c2", scene2, "LANDSAT_9", group="LANDSAT_METADATA_FILE")
    found = sensor_of_file(ms)
    assert found.index == 8
    assert found.where == f"IMD LANDSAT_METADATA_FILE.IMAGE_ATTRIBUTES.SPACECRAFT_ID=LANDSAT_9 of {scene2}_B2.TIF"


@pytest.mark.parametrize("satellite, index", [("WV02", 1), ("WV03", 2), ("QB02", 3), ("IK02", 4), ("GE01", 5),
                                              ("PHR1B", 6), ("GF2", 7), ("LE07", 8), ("LC09", 8), ("S2A", 9),
                                              ("S2C", 9), ("WV04", 0)])
def test_imagery_satellite_ids(tmp_path, satellite, index):
    pan, ms = write_pair(tmp_path)
    set_imagery(pan, satellite)
    set_imagery(ms, satellite)
    found = detect_sensor(pan, ms)
    assert found.index == index
    assert found.where.endswith(f"IMAGERY SATELLITEID={satellite} of ms.tif")


def test_worldview4_is_generic_and_says_why(tmp_path):
    pan, ms = write_pair(tmp_path)
    set_imagery(ms, "WV04")
    assert "WV04, a satellite without an entry of its own (Generic" in detect_sensor(pan, ms).message


def test_the_default_domain_and_band_descriptions_name_it_too(tmp_path):
    pan, ms = write_pair(tmp_path)
    ds = gdal.Open(ms, gdal.GA_Update)
    ds.SetMetadata({"SPACECRAFT_NAME": "Sentinel-2B", "PRODUCT_TYPE": "S2MSI1C"})  # as the SENTINEL2 driver
    ds = None
    assert sensor_of_file(ms).where == "metadata SPACECRAFT_NAME=Sentinel-2B of ms.tif"
    ds = gdal.Open(pan, gdal.GA_Update)
    ds.GetRasterBand(1).SetDescription("WorldView-2 panchromatic")
    ds = None
    assert sensor_of_file(pan) == (1, "WorldView-2 panchromatic",
                                   "band 1 description=WorldView-2 panchromatic of pan.tif")


def test_the_metadata_only_never_the_file_names(tmp_path):
    pan, ms = write_pair(tmp_path, "WV03_pan.tif", "WV03_ms.tif")
    assert detect_sensor(pan, ms) is None
    assert detect_sensor(None, "", str(tmp_path / "missing.tif")) is None


def test_a_pair_from_two_satellites_gives_none_and_says_so(tmp_path):
    pan, ms = write_pair(tmp_path)
    digitalglobe_imd(pan, "WV03")
    digitalglobe_imd(ms, "GE01")
    found = detect_sensor(pan, ms)
    assert found.index is None
    assert found.message == ("The images name different satellites: WorldView-3 (IMAGERY SATELLITEID=WV03 of "
                             "pan.tif) and GeoEye-1 (IMAGERY SATELLITEID=GE01 of ms.tif).")


@pytest.mark.parametrize("text, index", [("WorldView-3", 2), ("World View 2", 1), ("QuickBird", 3),
                                         ("Pléiades 1A", 6), ("GAOFEN-2", 7), ("LANDSAT_7", 8),
                                         ("Landsat-7 ETM+", 8), ("SENTINEL-2A", 9), ("SPOT 7", 0),
                                         ("LANDSAT_5", None), ("WV031", None), ("MSI", None), ("", None)])
def test_satellite_names(text, index):
    assert sensor_index(text) == index


# ------------------------------------------------------------------------------------------ algorithms
class LogFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos, self.warnings = [], []

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802
        self.warnings.append(warning)
        super().pushWarning(warning)


@pytest.fixture
def quickbird(tmp_path):
    """A QuickBird pair (DigitalGlobe .IMD sidecars) and the same pixels without metadata. QuickBird's MTF
    gains differ from GeoEye-1's and the default, so mtf_glp_fs shows which sensor ran."""
    pan, ms = write_pair(tmp_path / "qb")
    digitalglobe_imd(pan, "QB02")
    digitalglobe_imd(ms, "QB02")
    return (pan, ms), write_pair(tmp_path / "plain")


def run(algorithm, parameters, tmp_path, name):
    import processing

    feedback = LogFeedback()
    out = str(tmp_path / f"{name}.tif")
    processing.run(algorithm, dict(parameters, OUTPUT=out), feedback=feedback)
    return gdal.Open(out).ReadAsArray(), feedback


def test_an_algorithm_without_sensor_uses_the_metadata_and_says_so(panadapter_provider, quickbird, tmp_path):
    (pan, ms), (plain_pan, plain_ms) = quickbird
    found, log = run("panadapter:mtf_glp_fs", {"PAN": pan, "MS": ms}, tmp_path, "found")
    assert ("SENSOR not given: QuickBird. The image metadata names QuickBird (IMAGERY SATELLITEID=QB02 of "
            "pan.tif; IMAGERY SATELLITEID=QB02 of ms.tif).") in log.infos
    assert not log.warnings
    given, _ = run("panadapter:mtf_glp_fs", {"PAN": plain_pan, "MS": plain_ms, "SENSOR": 3}, tmp_path, "qb")
    generic, log = run("panadapter:mtf_glp_fs", {"PAN": plain_pan, "MS": plain_ms}, tmp_path, "generic")
    assert np.array_equal(found, given)
    assert not np.array_equal(found, generic)
    assert any("names no satellite: Generic" in info for info in log.infos)


def test_a_sensor_the_metadata_contradicts_warns_and_is_obeyed(panadapter_provider, quickbird, tmp_path):
    (pan, ms), (plain_pan, plain_ms) = quickbird
    obeyed, log = run("panadapter:mtf_glp_fs", {"PAN": pan, "MS": ms, "SENSOR": 5}, tmp_path, "obeyed")
    assert log.warnings == ["The image metadata names QuickBird (IMAGERY SATELLITEID=QB02 of pan.tif; IMAGERY "
                            "SATELLITEID=QB02 of ms.tif). SENSOR is GeoEye-1: using it, as asked."]
    geoeye, _ = run("panadapter:mtf_glp_fs", {"PAN": plain_pan, "MS": plain_ms, "SENSOR": 5}, tmp_path, "ge")
    assert np.array_equal(obeyed, geoeye)
    _, log = run("panadapter:brovey", {"PAN": pan, "MS": ms, "SENSOR": 3}, tmp_path, "agrees")
    assert not log.warnings


def test_two_satellites_without_sensor_run_generic_with_a_warning(panadapter_provider, tmp_path):
    pan, ms = write_pair(tmp_path)
    set_imagery(pan, "WV02")
    set_imagery(ms, "GF2")
    _, log = run("panadapter:brovey", {"PAN": pan, "MS": ms}, tmp_path, "mixed")
    assert log.warnings == ["The images name different satellites: WorldView-2 (IMAGERY SATELLITEID=WV02 of "
                            "pan.tif) and GaoFen-2 (IMAGERY SATELLITEID=GF2 of ms.tif). SENSOR not given: "
                            "Generic (toolbox default MTF). Set SENSOR to choose."]


def test_degrade_finds_the_sensor_too(panadapter_provider, quickbird, tmp_path):
    import processing

    (pan, ms), _ = quickbird
    log = LogFeedback()
    processing.run("panadapter:degrade", {"PAN": pan, "MS": ms, "OUTPUT_PAN": str(tmp_path / "p.tif"),
                                          "OUTPUT_MS": str(tmp_path / "m.tif")}, feedback=log)
    assert any(info.startswith("SENSOR not given: QuickBird.") for info in log.infos)


# ------------------------------------------------------------------------------------------------ dock
def test_the_dock_preselects_the_sensor_until_the_user_chooses(panadapter_provider, qgis_iface, qgis_new_project,
                                                               quickbird, tmp_path):
    from panadapter_qgis.gui.preview_dock import PreviewDock

    (pan, ms), (plain_pan, _) = quickbird
    gf2_ms = write_pair(tmp_path / "gf2")[1]
    set_imagery(gf2_ms, "GF2")
    layers = [QgsRasterLayer(path, name, "gdal") for path, name in
              ((pan, "qb pan"), (ms, "qb ms"), (plain_pan, "plain pan"), (gf2_ms, "gf2 ms"))]
    assert all(layer.isValid() for layer in layers)
    qgis_new_project.addMapLayers(layers)
    dock = PreviewDock(qgis_iface)
    try:
        dock.pan_combo.setLayer(layers[2])
        dock.ms_combo.setLayer(layers[1])
        assert dock.sensor_combo.currentIndex() == 3
        assert "QuickBird (IMAGERY SATELLITEID=QB02 of ms.tif)" in dock.status_label.text()
        assert dock.processing_parameters()["SENSOR"] == 3
        dock.ms_combo.setLayer(layers[3])
        assert dock.sensor_combo.currentIndex() == 7
        dock.sensor_combo.setCurrentIndex(5)  # the user picks GeoEye-1 by hand
        dock.sensor_combo.activated[int].emit(5)
        dock.ms_combo.setLayer(layers[1])
        assert dock.sensor_combo.currentIndex() == 5
    finally:
        dock.cleanup()
        dock.deleteLater()


def test_the_algorithm_dialog_preselects_the_sensor_of_the_metadata(panadapter_provider, qgis_iface,
                                                                   qgis_new_project, quickbird, tmp_path,
                                                                   monkeypatch):
    """The toolbox's dialog (and "Run on whole scene...") preselects the sensor that the PAN and MS name, and
    follows the layers as they change; a sensor passed in (as the dock does) is kept, and so is one the user
    picks by hand; without metadata SENSOR stays empty ("[Not selected]") and the run says what it used."""
    import processing

    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None, raising=False)  # missing from the stub
    (pan, ms), (plain_pan, plain_ms) = quickbird
    for parameters, expected in (({"PAN": pan, "MS": ms}, 3), ({"PAN": pan, "MS": ms, "SENSOR": 5}, 5),
                                 ({"PAN": plain_pan, "MS": plain_ms}, None)):
        dialog = processing.createAlgorithmDialog("panadapter:brovey", parameters)
        try:
            shown = dialog.createProcessingParameters()
        finally:
            dialog.close()
        assert shown.get("SENSOR") == expected, (parameters, shown.get("SENSOR"))
    dialog = processing.createAlgorithmDialog("panadapter:panadapter", {"PAN": plain_pan, "MS": plain_ms})
    try:
        wrappers = dialog.mainWidget().wrappers
        context = dialog.mainWidget().processing_context
        wrappers["PAN"].setParameterValue(pan, context)
        wrappers["MS"].setParameterValue(ms, context)
        assert dialog.createProcessingParameters().get("SENSOR") == 3   # followed the new layers
        combo = wrappers["SENSOR"].wrappedWidget()
        assert "QuickBird" in combo.toolTip()
        wrappers["SENSOR"].setParameterValue(5, context)
        combo.activated.emit(combo.currentIndex())                   # the user picks GeoEye-1 by hand
        wrappers["MS"].setParameterValue(plain_ms, context)
        wrappers["MS"].setParameterValue(ms, context)
        assert dialog.createProcessingParameters().get("SENSOR") == 5
    finally:
        dialog.close()
