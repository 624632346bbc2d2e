"""The README a user reads in five minutes, the documents it links and the changelog QGIS shows (issue 30.3)."""
import configparser
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
BENCHMARKS = DOCS / "BENCHMARKS.md"
DOCUMENTS = [README, REPO_ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


def test_readme_is_short_and_has_what_a_new_user_needs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    for needed in ("Install from ZIP", "OSGeo4W", "QGIS.app", "download.pytorch.org/whl/cu", "qgis_process run",
                   "Processing > Toolbox", "Which method to use", "make demo", "make test",
                   "docs/BENCHMARKS.md", "docs/USER_GUIDE.md", "CHANGELOG.md"):
        assert needed in text, needed


def test_readme_picture_is_there_and_small():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text(encoding="utf-8"))
    assert pictures
    for picture in pictures:
        path = REPO_ROOT / picture
        assert path.is_file(), picture
        assert path.stat().st_size <= 300 * 1024, (picture, path.stat().st_size)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_resolve(document):
    for target in LINK.findall(document.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (document.parent / file_part).resolve() if file_part else document
        assert path.exists(), (document.name, target)
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), (document.name, target)


def test_make_targets_the_readme_names_exist():
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README.read_text(encoding="utf-8")))
    assert {"demo", "test"} <= named
    assert named <= targets, named - targets
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_changelog_matches_metadata():
    metadata = configparser.ConfigParser()
    metadata.read(REPO_ROOT / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    version = general["version"]
    changelog = general["changelog"].strip()
    assert changelog.splitlines()[0].startswith(version + " ")
    assert len(changelog.splitlines()) <= 12  # the plugin manager shows all of it: the last few versions only
    assert "<" not in changelog  # QGIS shows it as HTML
    versions = re.findall(r"^## (\S+)", (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert versions and versions[0] == version


def test_the_packaged_metadata_is_the_repository_metadata():
    """QGIS reads panadapter_qgis/metadata.txt from a checkout, the zip ships the repository's: one text."""
    assert (REPO_ROOT / "panadapter_qgis" / "metadata.txt").read_bytes() == (REPO_ROOT / "metadata.txt").read_bytes()


def test_no_script_writes_the_readme():
    """Measurements go to docs/BENCHMARKS.md (or bench/out/), never into the README."""
    for folder in ("bench", "scripts"):
        for script in (REPO_ROOT / folder).glob("*.py"):
            assert "README.md" not in script.read_text(encoding="utf-8"), script


def test_bench_multisensor_rewrites_only_its_section_of_benchmarks(tmp_path):
    """update_section replaces what lies between its markers in docs/BENCHMARKS.md and nothing else."""
    copy = tmp_path / "BENCHMARKS.md"
    shutil.copy(BENCHMARKS, copy)
    begin, end = "<!-- bench_multisensor: begin -->", "<!-- bench_multisensor: end -->"
    text = copy.read_text(encoding="utf-8")
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    code = ("import sys; sys.path.insert(0, 'bench'); import bench_multisensor as b; "
            "assert (b.BEGIN, b.END) == (%r, %r); b.update_section(sys.argv[1], ['# New table', 'row'])"
            % (begin, end))
    subprocess.run([sys.executable, "-c", code, str(copy)], cwd=REPO_ROOT, check=True, timeout=300)
    after = copy.read_text(encoding="utf-8")
    assert after[:after.index(begin)] == text[:text.index(begin)]
    assert after[after.index(end):] == text[text.index(end):]
    assert "## New table\nrow" in after
