"""The plugin zip users install: one folder panadapter_qgis/ holding everything QGIS needs, nothing else."""
import configparser
import shutil
import subprocess
import zipfile

import pytest
from conftest import REPO_ROOT
from test_qgis_process import QGIS_PROCESS, qgis_env, qgis_process

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which("make"), reason="make not installed")]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    work = tmp_path_factory.mktemp("zip")
    built = subprocess.run(["make", "-s", "zip", f"DIST={work / 'dist'}", f"ZIP_BUILD={work / 'build'}"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    zips = list((work / "dist").glob("panadapter_qgis-*.zip"))
    assert len(zips) == 1
    return zips[0]


def test_zip_layout(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as archive:
        names = archive.namelist()
        files = [n for n in names if not n.endswith("/")]
        assert {n.split("/")[0] for n in names} == {"panadapter_qgis"}
        for required in ("__init__.py", "metadata.txt", "LICENSE", "resources/icon.svg", "plugin.py",
                         "processing/provider.py", "backend/pipeline.py"):
            assert f"panadapter_qgis/{required}" in files, required
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read_string(archive.read("panadapter_qgis/metadata.txt").decode("utf-8"))
        total = sum(info.file_size for info in archive.infolist())

    general = metadata["general"]
    assert plugin_zip.name == f"panadapter_qgis-{general['version']}.zip"
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                "repository", "tracker", "homepage", "icon"):
        assert general.get(key, "").strip(), key
    assert general["hasProcessingProvider"] == "yes"
    assert f"panadapter_qgis/{general['icon']}" in files

    for name in files:
        assert "__pycache__" not in name and not name.endswith((".pyc", ".pyo")), name
        assert "/tests/" not in name and not name.rsplit("/", 1)[-1].startswith("test_"), name
        assert not name.endswith((".tif", ".tiff", ".h5", ".npy", ".npz", ".mat")), name
        if "/backend/weights/" in name:
            assert name.endswith((".pt", ".json", ".py")), name
    assert total < 25e6  # DESIGN.md: keep the plugin zip under 25 MB


@pytest.mark.skipif(not shutil.which(QGIS_PROCESS), reason=f"{QGIS_PROCESS} not installed")
def test_unzipped_plugin_loads_and_runs_in_qgis_process(plugin_zip, backend_ready, istanbul, tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(plugins)
    env = qgis_env(tmp_path / "profile")
    env["QGIS_PLUGINPATH"] = str(plugins)  # the unzipped copy; the checkout is not on QGIS's path
    enabled = qgis_process(env, "plugins", "enable", "panadapter_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr

    pan, ms = istanbul
    output = tmp_path / "upsample.tif"
    ran = qgis_process(env, "run", "panadapter:upsample", f"--PAN={pan}", f"--MS={ms}",
                       f"--OUTPUT={output}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert output.is_file()
