"""Sensors of the DESIGN.md enum and their MTF Nyquist gains.

The gains are the ones coded in the standard toolbox (Vivone et al.; DLPan-Toolbox ``genMTF.m`` and
``MTF_PAN.m``, METHODS.md §3.1). Sensors without a toolbox entry (Pleiades, Landsat, Sentinel-2, GaoFen-2,
generic) fall through to the toolbox's default: 0.3 for every MS band and 0.15 for the PAN.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

DEFAULT_MS_GAIN = 0.3
DEFAULT_PAN_GAIN = 0.15


@dataclass(frozen=True)
class Sensor:
    key: str
    label: str
    ms_gains: Tuple[float, ...]  # per MS band in the sensor's band order; empty = default for every band
    pan_gain: float

    def gains_for(self, band_numbers: Sequence[int], band_count: Optional[int] = None) -> list:
        """MTF gains of the selected 1-based MS band numbers.

        A table applies only when the raster has the sensor's band count (a 3-band subset exported from
        an 8-band WorldView-3 image keeps its numbering through ``band_numbers``); otherwise, or for a band
        number beyond the table, the toolbox default 0.3 is used.
        """
        table = self.ms_gains
        if band_count is not None and table and band_count != len(table):
            table = ()
        return [table[b - 1] if 0 < b <= len(table) else DEFAULT_MS_GAIN for b in band_numbers]


SENSORS = [
    Sensor("generic", "Generic (toolbox default MTF)", (), DEFAULT_PAN_GAIN),
    Sensor("wv2", "WorldView-2", (0.35,) * 7 + (0.27,), 0.11),
    Sensor("wv3", "WorldView-3", (0.325, 0.355, 0.360, 0.350, 0.365, 0.360, 0.335, 0.315), 0.14),
    Sensor("qb", "QuickBird", (0.34, 0.32, 0.30, 0.22), 0.15),
    Sensor("ikonos", "IKONOS", (0.26, 0.28, 0.29, 0.28), 0.17),
    Sensor("geoeye1", "GeoEye-1", (0.23, 0.23, 0.23, 0.23), 0.16),
    Sensor("pleiades", "Pleiades (no toolbox entry: default MTF)", (), DEFAULT_PAN_GAIN),
    Sensor("gf2", "GaoFen-2 (no toolbox entry: default MTF)", (), DEFAULT_PAN_GAIN),
    Sensor("landsat", "Landsat 7/8/9 (default MTF)", (), DEFAULT_PAN_GAIN),
    Sensor("sentinel2", "Sentinel-2 (default MTF)", (), DEFAULT_PAN_GAIN),
]


def sensor_by_index(index: int) -> Sensor:
    from .errors import PansharpenError
    if not 0 <= int(index) < len(SENSORS):
        raise PansharpenError(f"Unknown sensor index {index}; choose 0..{len(SENSORS) - 1}.")
    return SENSORS[int(index)]
