# SPDX-License-Identifier: GPL-2.0-or-later
"""Files shipped beside the code (icon, metadata.txt).

In the plugin zip they lie inside the package folder (``panadapter_qgis/resources/icon.svg``); in a git
checkout they lie at the repository top (``resources/icon.svg``), one level up. Look in that order.
"""
import configparser
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent


def plugin_file(*parts: str) -> Optional[Path]:
    """Path of a shipped file, or None when it is in neither place."""
    for base in (PACKAGE_DIR, PACKAGE_DIR.parent):
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return candidate
    return None


def icon_path() -> str:
    """The plugin icon (SVG) as a string path, '' when missing (QIcon('') is a null icon)."""
    path = plugin_file("resources", "icon.svg")
    return str(path) if path else ""


def plugin_version() -> str:
    """``version`` from metadata.txt, '' when it cannot be read."""
    path = plugin_file("metadata.txt")
    if path is None:
        return ""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
        return parser.get("general", "version", fallback="")
    except configparser.Error:
        return ""
