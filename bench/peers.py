"""Wrappers around the pansharpening tools that Debian installs ("peers").

The benchmark compares the plugin's classical methods with what a user gets from
the pansharpening tools packaged by Debian 12:

========== ================================================= ==========================
name       tool and call                                      Debian package
========== ================================================= ==========================
gdal_brovey  ``gdal_pansharpen.py`` (weighted Brovey, equal      ``gdal-bin`` +
             weights 1/N, cubic resampling) then                ``python3-gdal``
             ``gdal_translate`` to GeoTIFF
otb_bundle   ``otbcli_BundleToPerfectSensor`` (Superimpose +    ``otb-bin``
             RCS in one application)
otb_rcs      ``otbcli_Superimpose`` then                        ``otb-bin``
otb_lmvm     ``otbcli_Pansharpening -method rcs|lmvm|bayes``
otb_bayes
grass_brovey ``grass --tmp-location <pan> --exec`` running      ``grass-core``
grass_ihs    ``r.in.gdal``, ``g.region raster=pan``,
grass_pca    ``i.pansharpen method=brovey|ihs|pca``,
             ``r.out.gdal``
========== ================================================= ==========================

API
---
Every peer is a function ``peer(pan_path, ms_path, out_path, **options) -> out_path``
that writes a **Float32 GeoTIFF on the exact PAN grid** (same size, geotransform
and CRS as the PAN file) and returns ``out_path``.

* ``PEERS``: dict name -> function (the names in the table above).
* ``available(name) -> bool``: whether the tool behind ``name`` is installed.
* ``PeerUnavailable``: raised when the tool is not installed (it is *not* a
  ``RuntimeError``, so callers can tell "absent" from "failed").
* ``RuntimeError``: raised when a tool fails or times out; the message holds the
  command line and the tool's stderr (and the end of its stdout).
* Common keyword options: ``timeout`` (seconds per external command, default
  600) and ``creation_options`` (GeoTIFF creation options of the output).

Band count: the MS band count for GDAL and OTB. **GRASS peers write 3 bands**:
``i.pansharpen`` works on exactly three MS bands. Choose them with
``rgb_bands=(r, g, b)`` (1-based MS band numbers, default ``(1, 2, 3)``); they are
passed as ``red=``, ``green=``, ``blue=`` and output band *i* is the sharpened
version of MS band ``rgb_bands[i]`` (so the output keeps the order you gave).

Nodata: outputs carry the tool's nodata value: 0 for GDAL (taken from the PAN
nodata, or none when the inputs have none), 0 for OTB (its fill value ``-fv``),
NaN for GRASS (NULL cells). Band descriptions are copied from the MS bands.

Quirks found on Debian 12 (GDAL 3.6.2, OTB 8.1.1, GRASS 8.2.1)
--------------------------------------------------------------
* GDAL: with no ``-w`` the pseudo-PAN weights are equal (1/N over *all* MS
  bands, NIR included); ``-r`` defaults to cubic. The computation runs in the
  data type of the inputs: integer inputs give rounded values clamped to the
  type's range (or ``-bitdepth``), even in a Float32 output. This wrapper keeps
  that default (what users get) and adds a Float32 VRT band type so that float
  inputs keep their precision; ``work_float32=True`` wraps the inputs as
  Float32 VRTs first so that integer data are processed in floating point.
  The default spatial adjustment (``union``) gave the PAN grid on every test
  pair, including the Landsat-8 pair whose PAN is offset by half a PAN pixel;
  the MS is read through its own geotransform, so offsets are honoured.
* OTB: ``Superimpose``/``BundleToPerfectSensor`` use the geotransforms (no
  sensor model for GeoTIFFs) and write exactly the PAN grid, but PAN pixels
  whose centres fall outside the span of MS pixel centres + interpolation
  support are filled with 0 (on the Landsat-8 pair: the last row and much of
  the last column). The outputs therefore carry nodata = 0. ``float`` output
  type is requested explicitly. ``Pansharpening`` needs MS already on the PAN
  grid, hence ``Superimpose`` first (bicubic, radius 2).
* GRASS: ``i.pansharpen`` (a Python script) is an **8-bit** tool: with
  ``bitdepth`` other than 8 it ``r.rescale``-s every channel to integers 0..255
  (``-r`` stretches each channel from int(min) to int(max)); the PAN is
  histogram-matched to each MS band (or to the intensity) with a 256-bin CDF
  lookup (``r.stats -i`` + ``r.reclass``), so PAN values outside 0..255 are lost;
  the outputs are ``round()``-ed integers (IHS: ``i.rgb.his``/``i.his.rgb``
  clamp to 0..255). Default ``scaling="prescale"``: the wrapper maps the PAN
  linearly min..max -> 0..255 (histogram matching is invariant to monotonic
  maps of the PAN, so only its quantisation matters), multiplies the three MS
  bands by one common factor 255/max(MS) (no offset, so Brovey ratios are
  kept), writes both as Float32, calls ``i.pansharpen bitdepth=8`` (the script
  then only ``g.copy``-es them) and divides the output by the MS factor, which
  gives MS units back. What is left is the tool's own 8-bit processing (output
  step max(MS)/255). ``scaling="tool"`` passes the raw data with ``bitdepth``
  (default: the ``BIT_DEPTH`` metadata or the bits needed for max(PAN, MS)) and
  multiplies the output by (2**bitdepth - 1)/255: much coarser (25 grey levels
  instead of 54 on the Landsat-8 pair).
  Radiometry as the tool gives it: **Brovey divides by the band sum, not the
  mean, so its output is about 1/3 of MS units** (``mean_brovey=True``
  multiplies it by 3); **PCA adds the band means back to an uncentred PAN in
  place of PC1, so its output is biased upward** (about +45 % on the Landsat-8
  pair); IHS keeps MS units.
  The computational region must be set to the PAN (``g.region raster=pan``)
  before ``i.pansharpen``: a new location has a 1x1 default region, and the
  script only aligns the resolution. The MS is then upsampled by GRASS's
  on-the-fly nearest-neighbour resampling (what users get); ``ms_interp=
  "bicubic"`` (or ``bilinear``, ``lanczos``) runs ``r.resamp.interp`` first
  (it leaves a NULL border of a few PAN pixels: 2.7 % of the Landsat-8 pair
  with bicubic). PAN cells whose centre is not inside an MS cell are NULL (NaN in the output):
  the last row and column on the Landsat-8 pair.
  Each call starts GRASS in a throwaway location (``--tmp-location`` from the
  PAN file, inside a temp dir that also holds $HOME and $TMPDIR). Starting
  GRASS takes ~0.2 s; i.pansharpen itself (a dozen module calls and a Python
  histogram matching per band) takes 3-5 s even on these small scenes.

Run ``python -m bench.peers PAN MS OUTDIR`` to run every available peer and
print wall times.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

gdal.UseExceptions()

log = logging.getLogger(__name__)

__all__ = [
    "PeerUnavailable",
    "PEERS",
    "available",
    "gdal_brovey",
    "otb_bundle",
    "otb_rcs",
    "otb_lmvm",
    "otb_bayes",
    "grass_brovey",
    "grass_ihs",
    "grass_pca",
]

DEFAULT_TIMEOUT = 600.0
DEFAULT_CREATION_OPTIONS = ("COMPRESS=DEFLATE", "PREDICTOR=3", "TILED=YES")

#: command lines of the last peer call, for logs and reports
last_commands: List[List[str]] = []


class PeerUnavailable(Exception):
    """The external tool behind a peer is not installed."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _which(name: str) -> Optional[str]:
    return shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
    )


def _tool_env(tmpdir: Optional[str] = None) -> Dict[str, str]:
    """Environment for the external tools.

    /usr/bin goes first on PATH so that Debian's scripts (``gdal_pansharpen.py``,
    GRASS's Python modules) find the system ``python3`` with GDAL and NumPy, not
    a pyenv/virtualenv interpreter that may lack them.
    """
    env = dict(os.environ)
    env["PATH"] = "/usr/bin:/bin:" + env.get("PATH", "")
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    if tmpdir:
        env["TMPDIR"] = tmpdir
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def _run(cmd: Sequence[str], timeout: float, env=None, cwd=None) -> str:
    """Run ``cmd``; return stdout; raise RuntimeError with stderr on failure.

    The command runs in its own process group, which is killed on timeout (GRASS
    and OTB start children).
    """
    cmd = [str(c) for c in cmd]
    last_commands.append(cmd)
    log.info("running: %s", subprocess.list2cmdline(cmd))
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise PeerUnavailable(f"{cmd[0]} not found") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise RuntimeError(
            f"timed out after {timeout:g} s: {subprocess.list2cmdline(cmd)}\n"
            f"stderr:\n{err.decode(errors='replace')[-4000:]}"
        )
    out_s = out.decode(errors="replace")
    err_s = err.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed (exit {proc.returncode}): {subprocess.list2cmdline(cmd)}\n"
            f"stderr:\n{err_s[-4000:]}\nstdout (end):\n{out_s[-2000:]}"
        )
    return out_s


def _grid(path: str):
    ds = gdal.Open(path)
    return ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize, ds.GetProjection()


def _same_grid(gt_a, size_a, gt_b, size_b) -> bool:
    if tuple(size_a) != tuple(size_b):
        return False
    px = max(abs(gt_b[1]), abs(gt_b[5]))
    return all(abs(a - b) <= 1e-3 * px for a, b in zip(gt_a, gt_b))


def _finalize(
    src_path: str,
    pan_path: str,
    out_path: str,
    *,
    nodata: Optional[float],
    descriptions: Sequence[str],
    scale: Optional[Sequence[float]] = None,
    creation_options: Iterable[str] = DEFAULT_CREATION_OPTIONS,
    src_nodata: Optional[float] = None,
) -> str:
    """Write ``src_path`` as a Float32 GeoTIFF on the exact PAN grid.

    If the tool's grid differs from the PAN's, the result is resampled onto the
    PAN grid with nearest neighbour (an exact crop/pad when the grids are
    aligned, the usual case) and a warning is logged. ``scale`` multiplies each
    band (GRASS: back to MS units). Pixels equal to the source nodata become
    ``nodata``.
    """
    pgt, pw, ph, pproj = _grid(pan_path)
    src = gdal.Open(src_path)
    if src_nodata is None:
        src_nodata = src.GetRasterBand(1).GetNoDataValue()
    if not _same_grid(src.GetGeoTransform(), (src.RasterXSize, src.RasterYSize), pgt, (pw, ph)):
        log.warning(
            "%s: tool grid %s %dx%d differs from PAN grid %s %dx%d; warping onto the PAN grid",
            src_path, src.GetGeoTransform(), src.RasterXSize, src.RasterYSize, pgt, pw, ph,
        )
        bounds = (pgt[0], pgt[3] + ph * pgt[5], pgt[0] + pw * pgt[1], pgt[3])
        src = gdal.Warp(
            "", src, format="MEM", outputBounds=bounds, width=pw, height=ph,
            dstSRS=pproj or None, resampleAlg="near", outputType=gdal.GDT_Float32,
            srcNodata=src_nodata, dstNodata=np.nan if src_nodata is None else src_nodata,
        )
        if src_nodata is None:
            src_nodata = float("nan")
    nb = src.RasterCount
    for stale in (out_path, out_path + ".aux.xml"):
        if os.path.exists(stale):
            os.remove(stale)
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(out_path, pw, ph, nb, gdal.GDT_Float32, options=list(creation_options))
    out.SetGeoTransform(pgt)
    if pproj:
        out.SetProjection(pproj)
    for b in range(nb):
        arr = src.GetRasterBand(b + 1).ReadAsArray().astype(np.float32)
        if src_nodata is not None:
            bad = np.isnan(arr) if np.isnan(src_nodata) else (arr == src_nodata)
        else:
            bad = ~np.isfinite(arr)
        if scale is not None:
            arr *= np.float32(scale[b])
        if nodata is not None:
            arr[bad] = nodata
        band = out.GetRasterBand(b + 1)
        band.WriteArray(arr)
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
        if b < len(descriptions) and descriptions[b]:
            band.SetDescription(descriptions[b])
    out.FlushCache()
    out = None
    src = None
    return out_path


def _ms_descriptions(ms_path: str, bands: Optional[Sequence[int]] = None) -> List[str]:
    ds = gdal.Open(ms_path)
    bands = bands or range(1, ds.RasterCount + 1)
    return [ds.GetRasterBand(b).GetDescription() for b in bands]


def _tmpdir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"peer_{prefix}_")


def _check_inputs(pan_path: str, ms_path: str) -> None:
    for p in (pan_path, ms_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(p)
    if gdal.Open(pan_path).RasterCount != 1:
        raise ValueError(f"PAN must have one band: {pan_path}")


# --------------------------------------------------------------------------- #
# GDAL
# --------------------------------------------------------------------------- #
def _gdal_pansharpen_cmd() -> Optional[List[str]]:
    exe = _which("gdal_pansharpen.py") or _which("gdal_pansharpen")
    if exe:
        return [exe]
    try:  # the same script, run with this interpreter
        import osgeo_utils.gdal_pansharpen  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "osgeo_utils.gdal_pansharpen"]


def gdal_brovey(
    pan_path: str,
    ms_path: str,
    out_path: str,
    *,
    weights: Optional[Sequence[float]] = None,
    resampling: str = "cubic",
    nodata: Optional[float] = None,
    bitdepth: Optional[int] = None,
    spat_adjust: Optional[str] = None,
    threads: Optional[object] = None,
    work_float32: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    creation_options: Iterable[str] = DEFAULT_CREATION_OPTIONS,
) -> str:
    """GDAL weighted Brovey (``gdal_pansharpen.py``; QGIS ``gdal:pansharp``).

    Defaults are the tool's: equal weights (1/N), cubic resampling, ``union``
    spatial adjustment, nodata from the inputs. Commands::

        gdal_pansharpen.py -q -of VRT -r cubic PAN MS tmp/ps.vrt
        (VRTRasterBand dataType="Float32" elements are added to ps.vrt)
        gdal_translate -q -of GTiff tmp/ps.vrt tmp/ps.tif

    ``work_float32=True`` first wraps PAN and MS as Float32 VRTs
    (``gdal_translate -of VRT -ot Float32``) so that integer inputs are not
    rounded/clamped by the tool.
    """
    ps_cmd = _gdal_pansharpen_cmd()
    translate = _which("gdal_translate")
    if ps_cmd is None or translate is None:
        raise PeerUnavailable("gdal_pansharpen.py / gdal_translate not found (gdal-bin, python3-gdal)")
    _check_inputs(pan_path, ms_path)
    del last_commands[:]
    with _tmpdir("gdal") as tmp:
        env = _tool_env(tmp)
        pan_in, ms_in = os.path.abspath(pan_path), os.path.abspath(ms_path)
        if work_float32:
            pan_f, ms_f = os.path.join(tmp, "pan_f32.vrt"), os.path.join(tmp, "ms_f32.vrt")
            _run([translate, "-q", "-of", "VRT", "-ot", "Float32", pan_in, pan_f], timeout, env)
            _run([translate, "-q", "-of", "VRT", "-ot", "Float32", ms_in, ms_f], timeout, env)
            pan_in, ms_in = pan_f, ms_f
        vrt = os.path.join(tmp, "ps.vrt")
        cmd = list(ps_cmd) + ["-q", "-of", "VRT", "-r", resampling]
        for w in weights or ():
            cmd += ["-w", repr(float(w))]
        if nodata is not None:
            cmd += ["-nodata", repr(float(nodata))]
        if bitdepth is not None:
            cmd += ["-bitdepth", str(int(bitdepth))]
        if spat_adjust is not None:
            cmd += ["-spat_adjust", spat_adjust]
        if threads is not None:
            cmd += ["-threads", str(threads)]
        cmd += [pan_in, ms_in, vrt]
        _run(cmd, timeout, env)
        vds = gdal.Open(vrt)
        nd = vds.GetRasterBand(1).GetNoDataValue()  # the nodata the tool chose
        nbands = vds.RasterCount
        vds = None
        _vrt_float32_bands(vrt, nbands)
        tif = os.path.join(tmp, "ps.tif")
        _run([translate, "-q", "-of", "GTiff", vrt, tif], timeout, env)
        return _finalize(
            tif, pan_path, out_path, nodata=nd, src_nodata=nd,
            descriptions=_ms_descriptions(ms_path), creation_options=creation_options,
        )


def _vrt_float32_bands(vrt_path: str, nbands: int) -> None:
    """Declare Float32 output bands in a pansharpened VRT written by gdal_pansharpen.py.

    gdal_pansharpen.py only writes ``VRTRasterBand`` elements with ``-b``, and
    then with the MS data type. A Float32 band type keeps float results as such
    (the computation itself runs in the inputs' data type).
    """
    tree = ET.parse(vrt_path)
    root = tree.getroot()
    if root.findall("VRTRasterBand"):
        for e in root.findall("VRTRasterBand"):
            e.set("dataType", "Float32")
    else:
        pos = list(root).index(root.find("PansharpeningOptions"))
        for i in range(nbands):
            root.insert(pos + i, ET.Element(
                "VRTRasterBand",
                {"dataType": "Float32", "band": str(i + 1), "subClass": "VRTPansharpenedRasterBand"},
            ))
    tree.write(vrt_path)


# --------------------------------------------------------------------------- #
# Orfeo ToolBox
# --------------------------------------------------------------------------- #
def _otb_method_args(method: str, radius: Tuple[int, int], lam: float, s: float) -> List[str]:
    args = ["-method", method]
    if method == "lmvm":
        args += ["-method.lmvm.radiusx", str(int(radius[0])), "-method.lmvm.radiusy", str(int(radius[1]))]
    elif method == "bayes":
        args += ["-method.bayes.lambda", repr(float(lam)), "-method.bayes.s", repr(float(s))]
    elif method != "rcs":
        raise ValueError(f"unknown OTB method {method!r}")
    return args


def otb_bundle(
    pan_path: str,
    ms_path: str,
    out_path: str,
    *,
    method: str = "rcs",
    interpolator: str = "bco",
    ram: Optional[int] = None,
    lmvm_radius: Tuple[int, int] = (3, 3),
    bayes_lambda: float = 0.9999,
    bayes_s: float = 1.0,
    timeout: float = DEFAULT_TIMEOUT,
    creation_options: Iterable[str] = DEFAULT_CREATION_OPTIONS,
) -> str:
    """OTB ``BundleToPerfectSensor`` (superimpose + fusion in one step; RCS by default)::

        otbcli_BundleToPerfectSensor -inp PAN -inxs MS -out tmp/ps.tif float
                                     -method rcs -interpolator bco
    """
    exe = _which("otbcli_BundleToPerfectSensor")
    if exe is None:
        raise PeerUnavailable("otbcli_BundleToPerfectSensor not found (Debian package otb-bin)")
    _check_inputs(pan_path, ms_path)
    del last_commands[:]
    with _tmpdir("otb") as tmp:
        env = _tool_env(tmp)
        tif = os.path.join(tmp, "ps.tif")
        cmd = [exe, "-inp", os.path.abspath(pan_path), "-inxs", os.path.abspath(ms_path),
               "-out", tif, "float"]
        cmd += _otb_method_args(method, lmvm_radius, bayes_lambda, bayes_s)
        cmd += ["-interpolator", interpolator]
        if ram:
            cmd += ["-ram", str(int(ram))]
        _run(cmd, timeout, env)
        return _finalize(tif, pan_path, out_path, nodata=0.0, src_nodata=0.0,
                         descriptions=_ms_descriptions(ms_path), creation_options=creation_options)


def _otb_pansharpening(method: str):
    def peer(
        pan_path: str,
        ms_path: str,
        out_path: str,
        *,
        interpolator: str = "bco",
        ram: Optional[int] = None,
        lmvm_radius: Tuple[int, int] = (3, 3),
        bayes_lambda: float = 0.9999,
        bayes_s: float = 1.0,
        timeout: float = DEFAULT_TIMEOUT,
        creation_options: Iterable[str] = DEFAULT_CREATION_OPTIONS,
    ) -> str:
        sup_exe = _which("otbcli_Superimpose")
        ps_exe = _which("otbcli_Pansharpening")
        if sup_exe is None or ps_exe is None:
            raise PeerUnavailable("otbcli_Superimpose / otbcli_Pansharpening not found (Debian package otb-bin)")
        _check_inputs(pan_path, ms_path)
        del last_commands[:]
        with _tmpdir("otb") as tmp:
            env = _tool_env(tmp)
            pan = os.path.abspath(pan_path)
            sup = os.path.join(tmp, "ms_on_pan.tif")
            cmd = [sup_exe, "-inr", pan, "-inm", os.path.abspath(ms_path), "-out", sup, "float",
                   "-interpolator", interpolator]
            if ram:
                cmd += ["-ram", str(int(ram))]
            _run(cmd, timeout, env)
            tif = os.path.join(tmp, "ps.tif")
            cmd = [ps_exe, "-inp", pan, "-inxs", sup, "-out", tif, "float"]
            cmd += _otb_method_args(method, lmvm_radius, bayes_lambda, bayes_s)
            if ram:
                cmd += ["-ram", str(int(ram))]
            _run(cmd, timeout, env)
            return _finalize(tif, pan_path, out_path, nodata=0.0, src_nodata=0.0,
                             descriptions=_ms_descriptions(ms_path), creation_options=creation_options)

    peer.__name__ = peer.__qualname__ = f"otb_{method}"
    peer.__doc__ = f"""OTB ``Pansharpening -method {method}`` after ``Superimpose`` (MS onto the PAN grid)::

        otbcli_Superimpose -inr PAN -inm MS -out tmp/ms_on_pan.tif float -interpolator bco
        otbcli_Pansharpening -inp PAN -inxs tmp/ms_on_pan.tif -out tmp/ps.tif float -method {method}{
        ' -method.lmvm.radiusx 3 -method.lmvm.radiusy 3' if method == 'lmvm' else
        ' -method.bayes.lambda 0.9999 -method.bayes.s 1.0' if method == 'bayes' else ''}
    """
    return peer


otb_rcs = _otb_pansharpening("rcs")
otb_lmvm = _otb_pansharpening("lmvm")
otb_bayes = _otb_pansharpening("bayes")


# --------------------------------------------------------------------------- #
# GRASS GIS
# --------------------------------------------------------------------------- #
_GRASS_SCRIPT = r"""set -e
r.in.gdal --quiet input="$PEER_PAN" output=pan
r.in.gdal --quiet input="$PEER_MS" output=ms
g.region raster=pan
R=ms.1; G=ms.2; B=ms.3
if [ -n "$PEER_INTERP" ]; then
  for i in 1 2 3; do r.resamp.interp --quiet input=ms.$i output=msi.$i method="$PEER_INTERP"; done
  R=msi.1; G=msi.2; B=msi.3
fi
i.pansharpen $PEER_FLAGS red=$R green=$G blue=$B pan=pan output=ps method="$PEER_METHOD" bitdepth="$PEER_BITS"
i.group --quiet group=psg input=ps_red,ps_green,ps_blue
r.out.gdal --quiet -c -f input=psg output="$PEER_OUT" format=GTiff type=Float32 nodata=nan
"""


def _bit_depth(paths: Sequence[str], maxval: float) -> int:
    for p in paths:
        md = gdal.Open(p).GetMetadataItem("BIT_DEPTH")
        if md:
            try:
                return int(str(md).split()[0])
            except ValueError:
                pass
    return max(2, int(math.ceil(math.log2(max(maxval, 1.0) + 1.0))))


def _read_valid(ds: gdal.Dataset, b: int) -> np.ndarray:
    band = ds.GetRasterBand(b)
    a = band.ReadAsArray().astype(np.float64)
    nd = band.GetNoDataValue()
    ok = np.isfinite(a)
    if nd is not None:
        ok &= a != nd
    return a[ok]


def _write_scaled(
    src: gdal.Dataset, bands: Sequence[int], factor: float, path: str, offset: float = 0.0
) -> None:
    """Write (band - offset) * factor as Float32; nodata pixels become -1 (nodata -1)."""
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(path, src.RasterXSize, src.RasterYSize, len(bands), gdal.GDT_Float32)
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    for i, b in enumerate(bands):
        sb = src.GetRasterBand(b)
        a = sb.ReadAsArray().astype(np.float32)
        nd = sb.GetNoDataValue()
        ob = out.GetRasterBand(i + 1)
        if nd is not None:
            bad = a == nd
            a = (a - np.float32(offset)) * np.float32(factor)
            a[bad] = -1.0
            ob.SetNoDataValue(-1.0)
        else:
            a = (a - np.float32(offset)) * np.float32(factor)
        ob.WriteArray(a)
    out.FlushCache()


def _grass_pansharpen(method: str):
    def peer(
        pan_path: str,
        ms_path: str,
        out_path: str,
        *,
        rgb_bands: Sequence[int] = (1, 2, 3),
        scaling: str = "prescale",
        bitdepth: Optional[int] = None,
        rescale_flag: bool = False,
        ms_interp: Optional[str] = None,
        serial: bool = False,
        mean_brovey: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        creation_options: Iterable[str] = DEFAULT_CREATION_OPTIONS,
    ) -> str:
        grass = _which("grass")
        if grass is None:
            raise PeerUnavailable("grass not found (Debian package grass-core)")
        _check_inputs(pan_path, ms_path)
        rgb = [int(b) for b in rgb_bands]
        msds = gdal.Open(ms_path)
        if len(rgb) != 3 or not all(1 <= b <= msds.RasterCount for b in rgb):
            raise ValueError(f"rgb_bands must be 3 band numbers in 1..{msds.RasterCount}, got {rgb_bands}")
        if scaling not in ("prescale", "tool"):
            raise ValueError("scaling must be 'prescale' or 'tool'")
        del last_commands[:]
        with _tmpdir("grass") as tmp:
            env = _tool_env(tmp)
            pands = gdal.Open(pan_path)
            pan_in = os.path.join(tmp, "pan.tif")
            ms_in = os.path.join(tmp, "ms3.tif")
            flags = []
            if scaling == "prescale":
                ms_max = max(float(_read_valid(msds, b).max()) for b in rgb)
                pan_valid = _read_valid(pands, 1)
                pan_min, pan_max = float(pan_valid.min()), float(pan_valid.max())
                if not (ms_max > 0 and pan_max > pan_min):
                    raise ValueError("prescale needs positive MS data and a non-constant PAN")
                ms_factor = 255.0 / ms_max
                _write_scaled(pands, [1], 255.0 / (pan_max - pan_min), pan_in, offset=pan_min)
                _write_scaled(msds, rgb, ms_factor, ms_in)
                bits = 8
                back = 1.0 / ms_factor
            else:
                _write_scaled(pands, [1], 1.0, pan_in)
                _write_scaled(msds, rgb, 1.0, ms_in)
                maxval = max(float(_read_valid(pands, 1).max()),
                             max(float(_read_valid(msds, b).max()) for b in rgb))
                bits = int(bitdepth) if bitdepth else _bit_depth([ms_path, pan_path], maxval)
                back = 1.0 if (bits == 8 or rescale_flag) else (2.0 ** bits - 1.0) / 255.0
                if rescale_flag:
                    flags.append("-r")
                    log.warning("grass -r: output is on the stretched 0..255 scale of each band")
            if serial:
                flags.append("-s")
            script = os.path.join(tmp, "run.sh")
            with open(script, "w") as f:
                f.write(_GRASS_SCRIPT)
            ps_tif = os.path.join(tmp, "ps.tif")
            env.update(
                PEER_PAN=pan_in, PEER_MS=ms_in, PEER_OUT=ps_tif, PEER_METHOD=method,
                PEER_BITS=str(bits), PEER_FLAGS=" ".join(flags), PEER_INTERP=ms_interp or "",
                GRASS_VERBOSE="0",
            )
            # GRASS writes its rc files under $HOME: keep them in the temp dir
            env["HOME"] = tmp
            _run([grass, "--tmp-location", pan_in, "--exec", "bash", script], timeout, env, cwd=tmp)
            if not os.path.exists(ps_tif):
                raise RuntimeError(f"GRASS i.pansharpen method={method} wrote no output")
            return _finalize(
                ps_tif, pan_path, out_path, nodata=float("nan"), src_nodata=float("nan"),
                scale=[back * (3.0 if (mean_brovey and method == "brovey") else 1.0)] * 3,
                descriptions=_ms_descriptions(ms_path, rgb),
                creation_options=creation_options,
            )

    peer.__name__ = peer.__qualname__ = f"grass_{method}"
    peer.__doc__ = f"""GRASS ``i.pansharpen method={method}`` on 3 MS bands; writes **3 bands**.

    ``rgb_bands=(r, g, b)``: MS band numbers passed as red, green, blue; output
    band i is MS band ``rgb_bands[i]`` sharpened. Commands (in a throwaway
    location created from the PAN, inside the temp dir)::

        grass --tmp-location tmp/pan.tif --exec bash tmp/run.sh
          r.in.gdal input=tmp/pan.tif output=pan
          r.in.gdal input=tmp/ms3.tif output=ms        # ms.1 ms.2 ms.3
          g.region raster=pan
          i.pansharpen red=ms.1 green=ms.2 blue=ms.3 pan=pan output=ps method={method} bitdepth=8
          i.group group=psg input=ps_red,ps_green,ps_blue
          r.out.gdal -c -f input=psg output=tmp/ps.tif format=GTiff type=Float32 nodata=nan

    Options: ``scaling="prescale"`` (default: PAN stretched min..max to 0..255,
    MS times 255/max(MS), output divided by that factor, i.e. MS units) or
    ``"tool"`` (raw data, ``bitdepth=`` given or guessed, output times
    (2**bitdepth-1)/255); ``bitdepth``/``rescale_flag`` (``-r``) for
    ``scaling="tool"``; ``ms_interp`` (None = GRASS nearest neighbour on the
    fly, or bilinear/bicubic/lanczos with ``r.resamp.interp`` first);
    ``serial`` (``-s``); ``mean_brovey`` (Brovey output times 3, see the module
    notes). Output nodata is NaN (GRASS NULL).
    """
    return peer


grass_brovey = _grass_pansharpen("brovey")
grass_ihs = _grass_pansharpen("ihs")
grass_pca = _grass_pansharpen("pca")


# --------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------- #
PEERS: Dict[str, Callable[..., str]] = {
    "gdal_brovey": gdal_brovey,
    "otb_bundle": otb_bundle,
    "otb_rcs": otb_rcs,
    "otb_lmvm": otb_lmvm,
    "otb_bayes": otb_bayes,
    "grass_brovey": grass_brovey,
    "grass_ihs": grass_ihs,
    "grass_pca": grass_pca,
}

#: output band count: None = the MS band count
OUTPUT_BANDS: Dict[str, Optional[int]] = {
    name: (3 if name.startswith("grass_") else None) for name in PEERS
}


def _requirements(name: str) -> bool:
    if name == "gdal_brovey":
        return _gdal_pansharpen_cmd() is not None and _which("gdal_translate") is not None
    if name == "otb_bundle":
        return _which("otbcli_BundleToPerfectSensor") is not None
    if name.startswith("otb_"):
        return _which("otbcli_Superimpose") is not None and _which("otbcli_Pansharpening") is not None
    if name.startswith("grass_"):
        return _which("grass") is not None
    raise KeyError(name)


def available(name: str) -> bool:
    """True when the tool behind peer ``name`` is installed (KeyError for unknown names)."""
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
    return _requirements(name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Run the available peer pansharpening tools and time them.")
    ap.add_argument("pan")
    ap.add_argument("ms")
    ap.add_argument("outdir")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated names")
    ap.add_argument("--rgb-bands", default="1,2,3", help="MS bands for the GRASS peers")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    os.makedirs(args.outdir, exist_ok=True)
    rgb = tuple(int(x) for x in args.rgb_bands.split(","))
    rc = 0
    for name in args.peers.split(","):
        if not available(name):
            print(f"{name:14s} unavailable")
            continue
        kw = {"rgb_bands": rgb} if name.startswith("grass_") else {}
        out = os.path.join(args.outdir, f"{name}.tif")
        t0 = time.perf_counter()
        try:
            PEERS[name](args.pan, args.ms, out, **kw)
        except Exception as exc:  # report and go on
            print(f"{name:14s} FAILED: {exc}")
            rc = 1
            continue
        dt = time.perf_counter() - t0
        ds = gdal.Open(out)
        print(f"{name:14s} {dt:7.2f} s  {ds.RasterCount} bands  {ds.RasterXSize}x{ds.RasterYSize}")
        for c in last_commands:
            print("    $ " + subprocess.list2cmdline(c))
    return rc


if __name__ == "__main__":
    sys.exit(main())
