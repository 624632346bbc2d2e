"""make bench-quality, on one small real scene and two methods: the Markdown tables it writes."""
import pytest
import torch

from bench import bench_quality


@pytest.mark.slow
def test_bench_quality_writes_a_table_per_scene_and_a_mean_table(data_dir, tmp_path, capsys):
    out = tmp_path / "quality.md"
    code = bench_quality.main(["--scenes", "wv3_cristianics", "--no-peers", "--methods", "upsample,mtf_glp_fs",
                               "--adapt-iterations", "20", "--ssdiff-iterations", "10", "--out", str(out),
                               "--spectral-form", "khan", "--spectral-weight", "1", "--spatial-weight", "0",
                               "--ssdiff-steps", "2",
                               "--work", str(tmp_path / "work")])
    assert code == 0
    text = out.read_text(encoding="utf-8")
    assert "## wv3_cristianics (sensor index 2)" in text and "## Mean over 1 scenes" in text
    assert "Peers: skipped" in text
    rows = [line for line in text.splitlines() if line.startswith("| mtf_glp_fs |")]
    assert len(rows) == 2  # the scene and the mean
    cells = rows[0].strip("|").split("|")
    assert len(cells) == 1 + 12 and all(cell.strip() not in ("", "n/a") for cell in cells)
    # the scene-adapted PanAdapter row, and its comparison with the best classical method
    deep = [line for line in text.splitlines() if line.startswith("| panadapter (scene-adapted) |")]
    assert len(deep) == 2 and all(cell.strip() not in ("", "n/a") for cell in deep[0].strip("|").split("|"))
    assert "## Scene-adapted PanAdapter against the best classical method" in text
    assert "| wv3_cristianics | " in text and "Mean ERGAS gain over the best classical method" in text
    # and SSDiff's, adapted by L-BAF
    ssdiff = [line for line in text.splitlines() if line.startswith("| ssdiff (scene-adapted) |")]
    assert len(ssdiff) == 2 and all(c.strip() not in ("", "n/a") for c in ssdiff[0].strip("|").split("|"))
    assert "## Scene-adapted SSDiff against the best classical method" in text
    assert "spectral term in Khan's form (weight 1), D_s term weight 0; sampled with 2 DDIM steps, seed 0." in text
    assert text.count("Mean ERGAS gain over the best classical method") == 2
    assert "Total wall time" in capsys.readouterr().out
    # --spectral-form, --spectral-weight and --spatial-weight reach every adaptation, at both resolutions and
    # for both models
    for res in ("reduced", "full"):
        for model in ("panadapter", "ssdiff"):
            card = torch.load(tmp_path / "work" / "wv3_cristianics" / res / f"{model}.pt", weights_only=True)["card"]
            assert (card["spectral_form"], card["consistency"]) == ("khan", 1.0), (res, model)
            assert (card["spatial"], card["spatial_tolerance"]) == (0.0, None), (res, model)


def test_bench_quality_rejects_an_unknown_spectral_form(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_quality.main(["--scenes", "wv3_cristianics", "--spectral-form", "qnr", "--adapt-iterations", "5"])
    assert exc.value.code == 2 and "--spectral-form: use one of wald, khan" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench_quality.main(["--scenes", "wv3_cristianics", "--ssdiff-steps", "0"])
    assert exc.value.code == 2 and "--ssdiff-steps: at least 1" in capsys.readouterr().err


def test_scene_selection_and_sensors(tmp_path):
    assert [bench_quality.sensor_for(n) for n in ("wv3_cristianics", "landsat7_fusebox/scene_05",
                                                  "sentinel2/T33UUB", "zhengzhou_4band")] == [2, 8, 9, 0]
    scenes = bench_quality.scenes_for("default", str(tmp_path))
    names = [s.name for s in scenes]
    if not names:
        pytest.skip("shared data not found")
    assert [n for n in names if n.startswith("landsat7")] == [f"landsat7_fusebox/scene_{i:02d}"
                                                              for i in (5, 10, 15, 20, 25, 30)]
    assert [s.informational for s in scenes if s.name == "zhengzhou_4band"] == [True]
    sentinel = [s for s in scenes if s.name.startswith("sentinel2/")]
    assert sentinel and all(s.pan.endswith("_B8.vrt") and s.ms.endswith("b20m.tif") for s in sentinel)
    ali = [s for s in scenes if s.name == "eo1_ali_paris"]   # the ratio-3 pair, scored
    assert len(ali) == 1 and not ali[0].informational and ali[0].pan.endswith("paris_hyperion_ali/pan.tif")


@pytest.mark.slow
def test_bench_projection_scores_the_projected_rasters_of_a_quality_run(data_dir, tmp_path):
    """bench_projection.py on a quality run's work folder: a row per raster and strength; the exact projection
    lowers every method's reduced-resolution ERGAS (Wald's reference degrades to the reduced MS)."""
    from bench import bench_projection

    work = str(tmp_path / "work")
    assert bench_quality.main(["--scenes", "wv3_cristianics", "--no-peers", "--methods", "upsample,brovey",
                               "--adapt-iterations", "0", "--ssdiff-iterations", "0", "--work", work,
                               "--out", str(tmp_path / "quality.md")]) == 0
    out = tmp_path / "projection.md"
    assert bench_projection.main(["--work", work, "--scenes", "wv3_cristianics", "--methods",
                                  "upsample,brovey,panadapter", "--strengths", "0,0.4", "--out", str(out)]) == 0
    rows = {}
    for line in out.read_text(encoding="utf-8").splitlines()[4:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1]] = [float(c) for c in cells[2:]]
    assert set(rows) == {f"{m}{s}" for m in ("upsample", "brovey")
                         for s in ("", " + projection 0", " + projection 0.4")}  # no panadapter raster: skipped
    for m in ("upsample", "brovey"):
        assert rows[f"{m} + projection 0"][0] < rows[f"{m} + projection 0.4"][0] < rows[m][0]
        assert all(0 <= v <= 1 for v in rows[f"{m} + projection 0"][2:])
