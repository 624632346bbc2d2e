"""The sensor of a PAN/MS pair, as the images' own metadata names it (GDAL only, never the file names).

GDAL's metadata readers fill the ``IMAGERY`` domain (``SATELLITEID``) from the products' sidecar files:
DigitalGlobe/Maxar ``.IMD`` and ``.XML``, Pleiades/SPOT DIMAP ``DIM_*.XML``, Landsat ``*_MTL.txt``; their raw
content is in the ``IMD`` domain (Landsat Collection 2, which GDAL's reader does not map to ``SATELLITEID``,
is found there). Drivers such as SENTINEL2 put the spacecraft in the default domain, and exported files often
keep it only in band descriptions. The first of these that names a known satellite wins, file by file.
"""
import os
import re
from typing import NamedTuple, Optional

# Satellite names -> index into sensors.SENSORS. WorldView-4 and SPOT 6/7 have no entry (the toolbox has no MTF
# gains for them, and borrowing another satellite's would be a guess): they are found, and sharpened as Generic.
_SEP = r"[-_ ]?"
_PATTERNS = (
    (rf"WV{_SEP}0?2|WORLD{_SEP}VIEW{_SEP}0?2", 1),
    (rf"WV{_SEP}0?3|WORLD{_SEP}VIEW{_SEP}0?3", 2),
    (rf"WV{_SEP}0?4|WORLD{_SEP}VIEW{_SEP}0?4", 0),
    (rf"QB{_SEP}0?2|QUICK{_SEP}BIRD(?:{_SEP}0?2)?", 3),
    (rf"IK{_SEP}0?2|IKONOS(?:{_SEP}0?2)?", 4),
    (rf"GE{_SEP}0?1|GEO{_SEP}EYE(?:{_SEP}0?1)?", 5),
    (rf"PHR{_SEP}1[AB]|PNEO(?:{_SEP}[34])?|PL[EÉ]IADES(?:{_SEP}NEO)?(?:{_SEP}[1-4][AB]?)?", 6),
    (rf"GF{_SEP}0?2|GAO{_SEP}FEN{_SEP}0?2", 7),
    (rf"L[COTE]0[789]|LANDSAT{_SEP}0?[789]", 8),
    (rf"S2[ABCD]|SENTINEL{_SEP}2[ABCD]?", 9),
    (rf"SPOT{_SEP}[67]", 0),
)
_MATCHERS = [(re.compile(rf"(?<![A-Z0-9])(?:{pattern})(?![A-Z0-9])", re.IGNORECASE), index)
             for pattern, index in _PATTERNS]
# Keys that name the satellite: last part of an IMD key ("IMAGE_1.satId"), or a default-domain key.
_IMD_KEYS = {"SATID", "SPACECRAFT_ID", "SPACECRAFT_NAME", "SATELLITEID"}
_DEFAULT_KEYS = {"SATELLITEID", "SATELLITE", "SATELLITE_ID", "SPACECRAFT", "SPACECRAFT_ID", "SPACECRAFT_NAME",
                 "DATATAKE_1_SPACECRAFT_NAME", "PLATFORM", "MISSION", "SENSOR", "TIFFTAG_IMAGEDESCRIPTION"}


class Found(NamedTuple):
    index: int        # into sensors.SENSORS
    satellite: str    # as the metadata writes it: "WV03"
    where: str        # "IMAGERY SATELLITEID=WV03 of ms.tif"


class SensorDetection(NamedTuple):
    index: Optional[int]  # into sensors.SENSORS; None when the images name different satellites
    where: str            # every place the satellite was found, joined with "; "
    message: str          # one sentence for a log or a status line


def sensor_index(text):
    """The SENSORS index of the satellite a metadata value names ("WV03", "PHR 1A", "LANDSAT_8"), or None."""
    for matcher, index in _MATCHERS:
        if matcher.search(text):
            return index
    return None


def _candidates(ds):
    """(place, value) pairs that may name the satellite, strongest first."""
    for key, value in (ds.GetMetadata("IMAGERY") or {}).items():
        if key.upper() == "SATELLITEID":
            yield f"IMAGERY {key}", value
    for key, value in (ds.GetMetadata("IMD") or {}).items():
        if key.rsplit(".", 1)[-1].upper() in _IMD_KEYS:
            yield f"IMD {key}", value
    for key, value in (ds.GetMetadata() or {}).items():
        if key.upper() in _DEFAULT_KEYS:
            yield f"metadata {key}", value
    for number in range(1, ds.RasterCount + 1):
        yield f"band {number} description", ds.GetRasterBand(number).GetDescription()


def sensor_of_file(path):
    """The satellite one raster's metadata names (``Found``), or None (none named, or not readable)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.OpenEx(path, gdal.OF_RASTER)
    except RuntimeError:
        ds = None
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        return None
    for place, value in _candidates(ds):
        value = (value or "").strip().strip('"')  # IMD values keep the quotes of the ODL file
        index = sensor_index(value)
        if index is not None:
            return Found(index, value, f"{place}={value} of {os.path.basename(path)}")
    return None


def _named(found):
    """The sensor's name for a message; a satellite sharpened as Generic is named as found, with why."""
    from .sensors import SENSORS

    label = SENSORS[found.index].label.split(" (")[0]
    if found.index == 0:
        return f"{found.satellite}, a satellite without an entry of its own (Generic: the toolbox's default MTF)"
    return label


def detect_sensor(*paths):
    """The sensor the metadata of the PAN and MS files names (``SensorDetection``), or None when neither
    names one. Paths that are empty or None are skipped. Files that name satellites of different entries
    give ``index`` None: a pair from two satellites is more likely a mistake than a choice to guess from."""
    found = [f for f in (sensor_of_file(p) for p in paths if p) if f is not None]
    if not found:
        return None
    where = "; ".join(f.where for f in found)
    if len({f.index for f in found}) > 1:
        names = " and ".join(f"{_named(f)} ({f.where})" for f in found)
        return SensorDetection(None, where, f"The images name different satellites: {names}.")
    return SensorDetection(found[0].index, where, f"The image metadata names {_named(found[0])} ({where}).")
