"""Quality of every sharpening method of the provider and of the Debian peers on the real scenes.

    .venv/bin/python bench/bench_quality.py [--scenes default|all|NAME,...] [--no-peers] [--methods a,b]
                                            [--adapt-iterations N] [--ssdiff-iterations N]
    make bench-quality [BENCH_QUALITY_ARGS="--scenes all"]

For each scene (``../shared/data``; nothing is copied into the repository):

* reduced resolution (Wald's protocol): the pair is degraded with the sensor MTF (``backend.wald``), every
  method of ``backend.classical.METHODS`` fuses the reduced pair (Float32 output) and so does every
  installed peer (``bench/peers.py``: GDAL Brovey, OTB BundleToPerfectSensor and Pansharpening rcs/lmvm/bayes,
  GRASS i.pansharpen brovey/ihs/pca); ``backend.assess.assess_reduced`` gives Q2n, Q-avg, SAM, ERGAS, SCC and
  PSNR against the original MS (21-pixel border cut);
* full resolution: the same tools fuse the original pair; ``assess_full`` gives D_lambda (Khan), D_s,
  HQNR and QNR;
* PanAdapter, scene-adapted (``--adapt-iterations``, default ``panadapter:finetune``'s, 600; 0 skips it):
  adapted on the reduced pair for the RR row and on the original pair for the FR row, from the bundled
  weights, which never saw these scenes; a last table sets it against the best classical method of the
  provider on each scene (ERGAS, SAM, HQNR), with its adaptation seconds and inference megapixels per
  second;
* SSDiff, scene-adapted the same way (``--ssdiff-iterations``, default ``panadapter:finetune``'s for SSDiff,
  3000; L-BAF from its bundled weights) and sampled
  with ``panadapter:ssdiff`` (``--ssdiff-steps``, default 10 DDIM steps as its own; seed 0), with its own
  comparison table. ``--spectral-form`` chooses the full-resolution spectral term of both adaptations,
  ``--spectral-weight`` its weight (``SPECTRAL_TERM_WEIGHT``), ``--spatial-weight`` the weight of their D_s
  term (``panadapter:finetune``'s ``SPATIAL_WEIGHT``).

Seconds are the wall time of each fusion (the PAN/MS pair in, a GeoTIFF out). GRASS's i.pansharpen works on
three bands: its rows are computed on those bands only, next to the plugin's ``upsample`` and
``mtf_glp_fs`` restricted to the same bands (rows marked "[3 bands]"). A peer that is not installed is
skipped with a note.

Scenes: ``default`` is every 5th Landsat-7 FuseBox scene (05, 10, ..., 30), the Landsat-8 Istanbul pair, the
WorldView-3 pair, the EO-1 ALI Paris pair (ratio 3), both Sentinel-2 tiles (B8 at 10 m as the PAN, the six 20 m bands as the MS, ratio 2) and
the Zhengzhou pair, whose georeference is defective (informational: left out of the mean table);
``all`` adds the other FuseBox scenes. The tables are printed and written as Markdown to
``bench/out/quality.md``.
"""
import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from osgeo import gdal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [p for p in (REPO,) if p not in sys.path]

from bench import peers  # noqa: E402
from panadapter_qgis.backend import assess, wald  # noqa: E402
from panadapter_qgis.backend.classical import METHODS  # noqa: E402
from panadapter_qgis.backend.pipeline import pansharpen  # noqa: E402

gdal.UseExceptions()

DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
OUT = os.path.join(HERE, "out")
RR_KEYS = ("q2n", "q_avg", "sam", "ergas", "scc", "psnr")
FR_KEYS = ("d_lambda", "d_s", "hqnr", "qnr")
LABELS = {"q2n": "Q2n", "q_avg": "Q-avg", "sam": "SAM°", "ergas": "ERGAS", "scc": "SCC", "psnr": "PSNR",
          "d_lambda": "D_λ", "d_s": "D_s", "hqnr": "HQNR", "qnr": "QNR", "rr_s": "s RR", "fr_s": "s FR"}
HIGHER = {"q2n", "q_avg", "scc", "psnr", "hqnr", "qnr"}
THREE_BAND_OURS = ("upsample", "mtf_glp_fs")  # our methods also scored on GRASS's three bands


@dataclass
class Scene:
    name: str
    pan: str
    ms: str
    sensor: int
    rgb: Tuple[int, int, int]           # MS bands given to GRASS i.pansharpen (red, green, blue)
    label: str
    informational: bool = False


@dataclass
class Row:
    name: str
    values: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    three_bands: bool = False


def sensor_for(name: str) -> int:
    """DESIGN.md enum: WorldView-3 2, Landsat 8, Sentinel-2 9, otherwise generic."""
    if name.startswith("wv3"):
        return 2
    if name.startswith("landsat"):
        return 8
    if name.startswith("sentinel2"):
        return 9
    return 0


def fusebox_scene(i: int) -> Scene:
    folder = os.path.join(DATA, "pansharpening", "landsat7_fusebox", f"scene_{i:02d}")
    return Scene(f"landsat7_fusebox/scene_{i:02d}", os.path.join(folder, "pan.tif"), os.path.join(folder, "ms.tif"),
                 8, (1, 2, 3), f"Landsat-7 ETM+ FuseBox scene {i:02d} (6 bands, ratio 2, 8-bit)")


def sentinel2_scene(tile: str, work: str) -> Optional[Scene]:
    """B8 (10 m NIR) of b10m.tif as the PAN (a VRT band, nothing copied) and b20m.tif's six bands as the MS."""
    folder = os.path.join(DATA, "sentinel2", tile)
    b10 = os.path.join(folder, "b10m.tif")
    if not os.path.isfile(b10):
        return None
    pan = os.path.join(work, f"sentinel2_{tile}_B8.vrt")
    gdal.Translate(pan, b10, format="VRT", bandList=[4])
    return Scene(f"sentinel2/{tile}", pan, os.path.join(folder, "b20m.tif"), 9, (1, 2, 3),
                 f"Sentinel-2 {tile}: PAN = B8 (10 m NIR), MS = B5, B6, B7, B8A, B11, B12 (20 m), ratio 2; "
                 "not a true panchromatic band")


def scenes_for(selection: str, work: str) -> List[Scene]:
    pansharpening = os.path.join(DATA, "pansharpening")
    named = {
        "landsat8_istanbul": Scene("landsat8_istanbul", *_pair(pansharpening, "landsat8_istanbul"), 8, (3, 2, 1),
                                   "Landsat-8 OLI Istanbul (3 bands, ratio 2, real georeference)"),
        "wv3_cristianics": Scene("wv3_cristianics", *_pair(pansharpening, "wv3_cristianics"), 2, (5, 3, 2),
                                 "WorldView-3 (8 bands, ratio 4, float radiance)"),
        # EO-1 ALI: the only real pair of ratio 3; PAN 480-690 nm, MS MS-1', 1, 2, 3, 4, 4', 5', 5, 7 (no sensor
        # entry: the toolbox's default MTF)
        "eo1_ali_paris": Scene("eo1_ali_paris", os.path.join(DATA, "hyperspectral", "paris_hyperion_ali", "pan.tif"),
                               os.path.join(DATA, "hyperspectral", "paris_hyperion_ali", "ms.tif"), 0, (4, 3, 2),
                               "EO-1 ALI Paris (9 bands, ratio 3, PAN 480-690 nm over MS columns 13-70)"),
        "zhengzhou_4band": Scene("zhengzhou_4band", *_pair(pansharpening, "zhengzhou_4band"), 0, (3, 2, 1),
                                 "Zhengzhou 4 bands, ratio 4.015 by its georeference: defective georeference, "
                                 "informational", informational=True),
    }
    chosen: List[Scene] = []
    for item in [s.strip() for s in selection.split(",") if s.strip()]:
        if item in ("default", "all"):
            step = 5 if item == "default" else 1
            chosen += [fusebox_scene(i) for i in range(step, 31, step)]
            chosen += [named["landsat8_istanbul"], named["wv3_cristianics"], named["eo1_ali_paris"]]
            chosen += [s for s in (sentinel2_scene(t, work) for t in ("T33UUB", "T49JGM")) if s]
            chosen.append(named["zhengzhou_4band"])
        elif item.startswith("scene_") or item.isdigit():
            chosen.append(fusebox_scene(int(item.replace("scene_", ""))))
        elif item.startswith(("sentinel2/", "T")):
            scene = sentinel2_scene(item.split("/")[-1], work)
            if scene is None:
                sys.exit(f"Sentinel-2 tile not found: {item}")
            chosen.append(scene)
        elif item in named:
            chosen.append(named[item])
        elif item.startswith("landsat7_fusebox/scene_"):
            chosen.append(fusebox_scene(int(item.split("_")[-1])))
        else:
            sys.exit(f"Unknown scene '{item}': use default, all, scene_NN, landsat8_istanbul, wv3_cristianics, "
                     "eo1_ali_paris, zhengzhou_4band, sentinel2/T33UUB, sentinel2/T49JGM")
    seen, unique = set(), []
    for scene in chosen:
        if scene.name not in seen and os.path.isfile(scene.pan) and os.path.isfile(scene.ms):
            seen.add(scene.name)
            unique.append(scene)
    return unique


def _pair(root, name):
    return os.path.join(root, name, "pan.tif"), os.path.join(root, name, "ms.tif")


def three_band_view(src: str, bands, dst: str) -> str:
    """A VRT of three bands of ``src`` (descriptions kept, so assess matches them with the reference)."""
    gdal.Translate(dst, src, format="VRT", bandList=list(bands))
    return dst


DEEP_ROWS = {"panadapter": "panadapter (scene-adapted)", "ssdiff": "ssdiff (scene-adapted)"}
DEEP_ROW = DEEP_ROWS["panadapter"]
DEEP_LABELS = {"panadapter": "PanAdapter", "ssdiff": "SSDiff"}


def scene_folder(work: str, scene: Scene) -> str:
    """The folder of ``scene`` in a work folder (its rasters: ``reduced/``, ``full/``, the reduced pair)."""
    return os.path.join(work, scene.name.replace("/", "_"))


def write_report(path: str, lines: List[str]) -> None:
    """The Markdown report ``lines`` into ``path`` (its folder made), and where it went."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"Report: {path}")


def fuse_deep(scene: Scene, pan: str, ms: str, folder: str, iterations: int, log,
              model: str = "panadapter", adapt_options: Optional[dict] = None, steps: int = 10) -> Tuple[str, Row]:
    """A deep model adapted to (pan, ms) by ``panadapter:finetune``'s backend (``adapt_options``: more keywords
    of ``finetune_scene``, e.g. ``spectral_form``, ``spatial``), then applied to the same pair
    (``panadapter:panadapter`` with its defaults, or ``panadapter:ssdiff`` with ``steps`` DDIM steps)."""
    from panadapter_qgis.backend.adapt import finetune_scene, sharpen_scene, ssdiff_scene

    name = DEEP_ROWS[model]
    row = Row(name)
    adapter, out = os.path.join(folder, f"{model}.pt"), os.path.join(folder, f"{model}.tif")
    start = time.perf_counter()
    card = finetune_scene(pan, ms, adapter, model=model, sensor=scene.sensor, iterations=iterations,
                          device="auto", **(adapt_options or {}))
    t_train = time.perf_counter() - start
    if model == "ssdiff":
        result = ssdiff_scene(pan, ms, out, adapter=adapter, sensor=scene.sensor, steps=steps, float32=True)
    else:
        result = sharpen_scene(pan, ms, out, adapter=adapter, sensor=scene.sensor, float32=True)
    t_infer = time.perf_counter() - start - t_train
    mp = result["width"] * result["height"] / 1e6
    row.values.update(seconds=t_train + t_infer, train_s=t_train, infer_mps=mp / t_infer)
    row.notes.append(f"adaptation {card['iterations']} iterations in {t_train:.0f} s on {card['device']} "
                     f"(loss {card['first_loss']:.4f} -> {card['last_loss']:.4f}), inference {mp / t_infer:.3f} "
                     "MP/s")
    log(f"    {name}: {row.notes[-1]}")
    return out, row


def fuse_all(scene: Scene, pan: str, ms: str, folder: str, methods, use_peers: bool, log,
             deep: Optional[Dict[str, int]] = None, adapt_options: Optional[dict] = None,
             ssdiff_steps: int = 10) -> Tuple[list, dict]:
    """Run every method and peer on (pan, ms): ([(row name, path, three_bands)], {row name: Row})."""
    os.makedirs(folder, exist_ok=True)
    outputs, rows = [], {}
    for method in methods:
        out = os.path.join(folder, f"{method}.tif")
        row = rows.setdefault(method, Row(method))
        start = time.perf_counter()
        try:
            pansharpen(pan, ms, out, method, sensor=scene.sensor, float32=True)
        except Exception as exc:  # noqa: BLE001 (report and go on)
            row.notes.append(f"failed: {exc}")
            continue
        row.values["seconds"] = time.perf_counter() - start
        outputs.append((method, out, False))
    for model, iterations in (deep or {}).items():
        if not iterations:
            continue
        name = DEEP_ROWS[model]
        try:
            out, rows[name] = fuse_deep(scene, pan, ms, folder, iterations, log, model, adapt_options,
                                        ssdiff_steps)
            outputs.append((name, out, False))
        except Exception as exc:  # noqa: BLE001
            rows[name] = Row(name, notes=[f"failed: {exc}"])
            log(f"    {name} failed: {exc}")
    if not use_peers:
        return outputs, rows
    for peer, run in peers.PEERS.items():
        if not peers.available(peer):
            continue
        grass = peer.startswith("grass_")
        name = f"{peer} [3 bands]" if grass else peer
        row = rows.setdefault(name, Row(name, three_bands=grass))
        out = os.path.join(folder, f"peer_{peer}.tif")
        start = time.perf_counter()
        try:
            run(pan, ms, out, **({"rgb_bands": scene.rgb} if grass else {}))
        except Exception as exc:  # noqa: BLE001
            row.notes.append(f"failed: {str(exc).splitlines()[0][:200]}")
            log(f"    {peer} failed: {str(exc).splitlines()[0][:200]}")
            continue
        row.values["seconds"] = time.perf_counter() - start
        outputs.append((name, out, grass))
    if any(grass for _, _, grass in outputs):
        for method in THREE_BAND_OURS:
            if rows.get(method) and "seconds" in rows[method].values:
                name = f"{method} [3 bands]"
                view = three_band_view(os.path.join(folder, f"{method}.tif"), scene.rgb,
                                       os.path.join(folder, f"{method}_3bands.vrt"))
                rows[name] = Row(name, {"seconds": rows[method].values["seconds"]}, three_bands=True)
                outputs.append((name, view, True))
    return outputs, rows


def assess_rows(results, outputs, rows, keys, prefix):
    for (name, _, _), result_row in zip(outputs, results["rows"]):
        row = rows[name]
        for key in keys:
            row.values[key] = result_row[key]
        if result_row["nodata_fraction"] > 0:
            row.notes.append(f"{prefix}: {100 * result_row['nodata_fraction']:.2g} % no-data pixels counted as 0")


def run_scene(scene: Scene, work: str, methods, use_peers: bool, log,
              deep: Optional[Dict[str, int]] = None, adapt_options: Optional[dict] = None,
              ssdiff_steps: int = 10) -> Tuple[Dict[str, Row], List[str]]:
    folder = scene_folder(work, scene)
    os.makedirs(folder, exist_ok=True)
    notes = []
    # reduced resolution
    pan_lr, ms_lr, reference = (os.path.join(folder, f) for f in ("pan_lr.tif", "ms_lr.tif", "reference.tif"))
    degraded = wald.degrade(scene.pan, scene.ms, pan_lr, ms_lr, sensor=scene.sensor, out_reference=reference)
    ratio = degraded["ratio"]
    rr_out, rr_rows = fuse_all(scene, pan_lr, ms_lr, os.path.join(folder, "reduced"), methods, use_peers, log,
                             deep, adapt_options, ssdiff_steps)
    rr = assess.assess_reduced([p for _, p, _ in rr_out], reference, ratio=ratio, dim_cut=21, sensor=scene.sensor)
    assess_rows(rr, rr_out, rr_rows, RR_KEYS, "RR")
    notes += [f"RR: {n}" for n in rr["notes"] if "matched by their descriptions" not in n]
    notes.append(f"RR: reduced MS {degraded['cols']} x {degraded['rows']}, ratio {ratio}, PSNR peak "
                 f"{rr['data_range']:g} ({rr['data_range_source']})")
    # full resolution
    fr_out, fr_rows = fuse_all(scene, scene.pan, scene.ms, os.path.join(folder, "full"), methods, use_peers, log,
                             deep, adapt_options, ssdiff_steps)
    fr = assess.assess_full([p for _, p, _ in fr_out], scene.pan, scene.ms, sensor=scene.sensor)
    assess_rows(fr, fr_out, fr_rows, FR_KEYS, "FR")
    notes += [f"FR: {n}" for n in fr["notes"] if "matched by their descriptions" not in n]
    merged: Dict[str, Row] = {}
    for name in list(rr_rows) + [n for n in fr_rows if n not in rr_rows]:
        row = Row(name, three_bands=(rr_rows.get(name) or fr_rows.get(name)).three_bands)
        for source, tag in ((rr_rows.get(name), "rr_s"), (fr_rows.get(name), "fr_s")):
            if source is None:
                continue
            row.values.update({k: v for k, v in source.values.items()
                               if k not in ("seconds", "train_s", "infer_mps")})
            if "seconds" in source.values:
                row.values[tag] = source.values["seconds"]
            for key in ("train_s", "infer_mps"):
                if key in source.values:
                    row.values[f"{tag[:2]}_{key}"] = source.values[key]
            row.notes += source.notes
        merged[name] = row
    return merged, notes


COLUMNS = RR_KEYS + ("rr_s",) + FR_KEYS + ("fr_s",)


def fmt(key, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if key in ("psnr", "rr_s", "fr_s"):
        return f"{value:.2f}"
    if key in ("sam", "ergas"):
        return f"{value:.3f}"
    return f"{value:.4f}"


def markdown_table(rows: List[Row]) -> List[str]:
    """Rows in order; the best value of each index column in bold, separately for full-band and 3-band rows."""
    best = {}
    for three in (False, True):
        group = [r for r in rows if r.three_bands == three]
        for key in RR_KEYS + FR_KEYS:
            values = [r.values[key] for r in group if isinstance(r.values.get(key), float)
                      and math.isfinite(r.values[key])]
            if values:
                best[(three, key)] = max(values) if key in HIGHER else min(values)
    lines = ["| method | " + " | ".join(LABELS[k] for k in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for key in COLUMNS:
            value = r.values.get(key)
            text = fmt(key, value)
            if best.get((r.three_bands, key)) is not None and value == best[(r.three_bands, key)]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return lines


def mean_rows(per_scene: Dict[str, Dict[str, Row]], scenes: List[Scene]) -> List[Row]:
    scored = [s.name for s in scenes if not s.informational and s.name in per_scene]
    names: List[str] = []
    for s in scored:
        names += [n for n in per_scene[s] if n not in names]
    out = []
    for name in names:
        rows = [per_scene[s][name] for s in scored if name in per_scene[s]]
        row = Row(name, three_bands=rows[0].three_bands)
        for key in COLUMNS:
            values = [r.values[key] for r in rows if isinstance(r.values.get(key), float)
                      and math.isfinite(r.values[key])]
            if values:
                row.values[key] = sum(values) / len(values)
                if len(values) < len(rows) and key in LABELS:
                    row.notes.append(f"{LABELS[key]}: mean of the {len(values)} scenes where it is defined")
        if len(rows) < len(scored):
            row.notes.append(f"on {len(rows)} of {len(scored)} scenes")
        out.append(row)
    return out


def deep_comparison(per_scene: Dict[str, Dict[str, Row]], scenes: List[Scene], classical,
                    model: str = "panadapter") -> List[str]:
    """Per scene: the adapted deep model against the best classical method of the provider on each index."""
    name = DEEP_ROWS[model]
    lines = ["| scene | ERGAS adapted | best classical ERGAS | gain | SAM adapted | best classical SAM | "
             "HQNR adapted | best classical HQNR | adaptation s (RR) | inference MP/s (FR) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    gains, wins = [], []
    for scene in scenes:
        rows = per_scene.get(scene.name)
        if not rows or name not in rows or "ergas" not in rows[name].values:
            continue
        deep = rows[name].values
        ours = [rows[m].values for m in classical if m in rows and "ergas" in rows[m].values]

        def best(key, higher=False):
            values = [(v[key], name) for v, name in zip(ours, [m for m in classical if m in rows])
                      if isinstance(v.get(key), float) and math.isfinite(v[key])]
            return (max if higher else min)(values) if values else (float("nan"), "")
        (be, bn), (bs, sn), (bh, hn) = best("ergas"), best("sam"), best("hqnr", True)
        gain = 1 - deep["ergas"] / be
        if not scene.informational:
            gains.append(gain)
            wins.append(deep["ergas"] < be and deep["sam"] < bs and deep.get("hqnr", -1) >= bh)
        lines.append(f"| {scene.name}{' (informational)' if scene.informational else ''} | {deep['ergas']:.3f} | "
                     f"{be:.3f} ({bn}) | {100 * gain:.1f} % | {deep['sam']:.3f} | {bs:.3f} ({sn}) | "
                     f"{deep.get('hqnr', float('nan')):.4f} | {bh:.4f} ({hn}) | {deep.get('rr_train_s', float('nan')):.0f} | "
                     f"{deep.get('fr_infer_mps', float('nan')):.3f} |")
    if gains:
        lines += ["", f"Mean ERGAS gain over the best classical method: {100 * sum(gains) / len(gains):.1f} % on "
                  f"{len(gains)} scenes; better on ERGAS, SAM and HQNR together on {sum(wins)} of {len(wins)}."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", default="default",
                        help="default, all, or a comma list (scene_05, landsat8_istanbul, wv3_cristianics, "
                             "eo1_ali_paris, zhengzhou_4band, sentinel2/T33UUB, ...)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of method ids (default: all)")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer tools")
    parser.add_argument("--adapt-iterations", type=int, default=None,
                        help="PanAdapter scene adaptation iterations (default: panadapter:finetune's, "
                             "adapt.ITERATIONS; 0: skip PanAdapter)")
    parser.add_argument("--ssdiff-iterations", type=int, default=None,
                        help="SSDiff scene adaptation iterations (L-BAF; default: panadapter:finetune's, "
                             "adapt.ITERATIONS; 0: skip SSDiff)")
    parser.add_argument("--spectral-form", default="wald",
                        help="full-resolution spectral term of the adaptations: Wald's (decimated, the default) "
                             "or Khan's (MTF low-pass at the PAN scale against the interpolated MS)")
    parser.add_argument("--spectral-weight", type=float, default=None,
                        help="weight of that spectral term (default: the backend's, panadapter:finetune's "
                             "SPECTRAL_TERM_WEIGHT left empty: 0 for PanAdapter from the multi-sensor weights)")
    parser.add_argument("--spatial-weight", type=float, default=None,
                        help="weight of the full-resolution D_s term of the adaptations (default: the backend's, "
                             "panadapter:finetune's SPATIAL_WEIGHT left empty)")
    parser.add_argument("--ssdiff-steps", type=int, default=10,
                        help="DDIM steps of SSDiff's sampling (default 10, panadapter:ssdiff's default)")
    parser.add_argument("--out", default=os.path.join(OUT, "quality.md"), help="Markdown report")
    parser.add_argument("--work", default=None, help="folder for the rasters (default: a temporary folder)")
    args = parser.parse_args(argv)
    deep = {"panadapter": args.adapt_iterations, "ssdiff": args.ssdiff_iterations}
    if any(n != 0 for n in deep.values()):  # the backend (and torch) only when a deep model runs
        from panadapter_qgis.backend.adapt import ITERATIONS, SPECTRAL_FORMS
        deep = {model: ITERATIONS[model] if n is None else n for model, n in deep.items()}
        if args.spectral_form not in SPECTRAL_FORMS:
            parser.error(f"--spectral-form: use one of {', '.join(SPECTRAL_FORMS)}")
    if args.ssdiff_steps < 1:
        parser.error("--ssdiff-steps: at least 1")
    for name, value in (("--spectral-weight", args.spectral_weight), ("--spatial-weight", args.spatial_weight)):
        if value is not None and not value >= 0:
            parser.error(f"{name}: at least 0")
    adapt_options = {"spectral_form": args.spectral_form, "consistency": args.spectral_weight,
                     "spatial": args.spatial_weight}

    if not os.path.isdir(DATA):
        print(f"The shared data is not here: {DATA}", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"Unknown methods {unknown}; known: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="bench_quality_")
    work = args.work or tmp.name
    os.makedirs(work, exist_ok=True)

    def log(message):
        print(message, flush=True)

    start = time.perf_counter()
    lines = ["# Pansharpening quality: the provider's methods and the Debian peers", ""]
    header = []
    if args.no_peers:
        header.append("Peers: skipped (--no-peers).")
    else:
        missing = [p for p in peers.PEERS if not peers.available(p)]
        present = [p for p in peers.PEERS if peers.available(p)]
        header.append(f"Peers run: {', '.join(present) or 'none'}.")
        if missing:
            header.append(f"Peers not installed, skipped: {', '.join(missing)} "
                          "(Debian: gdal-bin python3-gdal, otb-bin, grass-core).")
    header += [
        "RR = reduced resolution (Wald's protocol: sensor-MTF degradation, the original MS is the reference, "
        "21-pixel border cut, Q2n/Q on 32 x 32 blocks); FR = full resolution (no reference; D_λ Khan, D_s, "
        "HQNR, QNR on 32 x 32 blocks). Higher is better for Q2n, Q-avg, SCC, PSNR, HQNR, QNR; lower for SAM "
        "(degrees), ERGAS, D_λ, D_s. s RR / s FR: seconds of the fusion (file in, file out).",
        "Rows marked [3 bands] are computed on the three bands GRASS i.pansharpen takes and are comparable "
        "only with each other; bold = best of its kind (all bands / 3 bands).",
    ]
    for line in header:
        log(line)
    lines += header + [""]

    scenes = scenes_for(args.scenes, work)
    if not scenes:
        print("No scene found.", file=sys.stderr)
        return 2
    per_scene: Dict[str, Dict[str, Row]] = {}
    failures = 0
    for scene in scenes:
        t_scene = time.perf_counter()
        log(f"\n== {scene.name}: {scene.label}")
        try:
            rows, notes = run_scene(scene, work, methods, not args.no_peers, log, deep, adapt_options,
                                    args.ssdiff_steps)
        except Exception as exc:  # noqa: BLE001 (one scene must not stop the benchmark)
            failures += 1
            log(f"   FAILED: {exc}")
            lines += [f"## {scene.name}", "", f"{scene.label}.", "", f"FAILED: {exc}", ""]
            continue
        per_scene[scene.name] = rows
        table = markdown_table(list(rows.values()))
        row_notes = [f"{r.name}: {'; '.join(r.notes)}" for r in rows.values() if r.notes]
        elapsed = time.perf_counter() - t_scene
        section = [f"## {scene.name} (sensor index {scene.sensor})", "", f"{scene.label}.", ""] + table + [""]
        section += [f"- {n}" for n in notes + row_notes] + [f"- scene wall time {elapsed:.0f} s", ""]
        lines += section
        log("\n".join(section))

    scored = [s for s in scenes if not s.informational and s.name in per_scene]
    if scored:
        means = mean_rows(per_scene, scenes)
        section = [f"## Mean over {len(scored)} scenes", "",
                   "Scenes: " + ", ".join(s.name for s in scored)
                   + (" (informational, not in the mean: "
                      + ", ".join(s.name for s in scenes if s.informational and s.name in per_scene) + ")"
                      if any(s.informational and s.name in per_scene for s in scenes) else "") + ".", ""]
        section += markdown_table(means) + [""]
        section += [f"- {r.name}: {'; '.join(r.notes)}" for r in means if r.notes]
        lines += section
        log("\n" + "\n".join(section))
    for model, iterations in deep.items():
        if not iterations or not per_scene:
            continue
        section = [f"## Scene-adapted {DEEP_LABELS[model]} against the best classical method", "",
                   f"Each pair is adapted on itself ({iterations} iterations of panadapter:finetune with MODEL "
                   f"{model} on its Wald-degraded version: the RR pair for the RR scores, the original pair for "
                   "HQNR), starting from the bundled weights, which never saw these scenes; full-resolution "
                   f"spectral term in {args.spectral_form.capitalize()}'s form"
                   + (f" (weight {args.spectral_weight:g})" if args.spectral_weight is not None else "")
                   + (f", D_s term weight {args.spatial_weight:g}" if args.spatial_weight is not None else "")
                   + (f"; sampled with {args.ssdiff_steps} DDIM step{'s' if args.ssdiff_steps > 1 else ''}, seed 0"
                      if model == "ssdiff" else "")
                   + ".", ""]
        section += deep_comparison(per_scene, scenes, methods, model)
        lines += [""] + section
        log("\n" + "\n".join(section))
    total = time.perf_counter() - start
    lines += ["", f"Total wall time {total / 60:.1f} min ({os.cpu_count()} CPUs)."]
    log(f"\nTotal wall time {total / 60:.1f} min. Report: {args.out}")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
