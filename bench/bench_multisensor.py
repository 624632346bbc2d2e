#!/usr/bin/env python3
"""The 15 test scenes of issue 27 at reduced resolution (Wald's protocol): every classical method of the provider
against PanAdapter zero-shot (bundled weights, no adaptation) and, with ``--adapt N``, scene-adapted
(``panadapter:finetune`` defaults with N iterations, on the degraded pair only).

Scenes: the nine test scenes of ``pretraining/`` (reduced-resolution ones with ``gt.tif`` are scored against it;
full-resolution ones are degraded once more) and the six of the quality bench (FuseBox 05 and 20, Landsat-8
Istanbul, WorldView-3, Sentinel-2 T33UUB and T49JGM). None was used to fit weights. ``--quick``: four scenes.
Writes ``bench/out/multisensor.md`` (per-scene table and summary) and ``.json``.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from bench_quality import DATA, OUT, fusebox_scene, scenes_for, write_report  # noqa: E402
from panadapter_qgis.backend import assess, wald  # noqa: E402
from panadapter_qgis.backend.adapt import finetune_scene, sharpen_scene  # noqa: E402
from panadapter_qgis.backend.classical import METHODS  # noqa: E402
from panadapter_qgis.backend.pipeline import pansharpen  # noqa: E402

PRE = os.path.join(DATA, "pretraining")
# (name, folder, sensor index, has gt.tif)
NEW = [("GaoFen-2 test_rr_0", "gf2_panformer/test_rr_0", 7, True),
       ("GaoFen-2 test_rr_2", "gf2_panformer/test_rr_2", 7, True),
       ("GaoFen-2 test_fr_0", "gf2_panformer/test_fr_0", 7, False),
       ("GaoFen-2 test_fr_2", "gf2_panformer/test_fr_2", 7, False),
       ("GaoFen-2 test_fr_4", "gf2_panformer/test_fr_4", 7, False),
       ("QuickBird rr_test_0", "qb_abfnet/rr_test_0", 3, True),
       ("QuickBird fr_test_0", "qb_abfnet/fr_test_0", 3, False),
       ("GeoEye-1 ge_tren_urb", "pairmax_rr/ge_tren_urb", 5, True),
       ("WorldView-4 w4_mexi_urb", "pairmax_rr/w4_mexi_urb", 0, True)]
OLD = "scene_05,scene_20,landsat8_istanbul,wv3_cristianics,sentinel2/T33UUB,sentinel2/T49JGM"
QUICK = ("GaoFen-2 test_rr_0", "QuickBird rr_test_0", "GeoEye-1 ge_tren_urb", "landsat8_istanbul")
KEYS = ("ergas", "sam", "q2n")


def test_scenes(work):
    out = []
    for name, folder, sensor, has_gt in NEW:
        d = os.path.join(PRE, folder)
        if os.path.isdir(d):
            out.append(dict(name=name, pan=os.path.join(d, "pan.tif"), ms=os.path.join(d, "ms.tif"), sensor=sensor,
                            gt=os.path.join(d, "gt.tif") if has_gt else None, new=True))
    for s in scenes_for(OLD, work):
        out.append(dict(name=s.name, pan=s.pan, ms=s.ms, sensor=s.sensor, gt=None, new=False))
    return out


def landsat7_weights():
    """The Landsat-7-only weights bundled before the multi-sensor ones (6 bands): the 'old weights' rows."""
    from panadapter_qgis.backend import weights

    return str(weights.LANDSAT7_PANADAPTER)


def full_resolution(scene, folder, log):
    """{method: HQNR} of every classical method and PanAdapter zero-shot on a full-resolution scene's own pair
    (no reference: Khan's D_lambda and D_s, ``assess.assess_full``)."""
    outputs = []
    for method in METHODS:
        out = os.path.join(folder, f"fr_{method}.tif")
        pansharpen(scene["pan"], scene["ms"], out, method, sensor=scene["sensor"], float32=True)
        outputs.append((method, out))
    out = os.path.join(folder, "fr_panadapter_zero_shot.tif")
    sharpen_scene(scene["pan"], scene["ms"], out, sensor=scene["sensor"], float32=True)
    outputs.append(("panadapter_zero_shot", out))
    res = assess.assess_full([p for _, p in outputs], scene["pan"], scene["ms"], sensor=scene["sensor"])
    log(f"  {scene['name']}: full resolution assessed")
    return {name: r["hqnr"] for (name, _), r in zip(outputs, res["rows"])}


def run(scene, work, adapt, log, reuse=False, hqnr=False, weights="bundled"):
    folder = os.path.join(work, scene["name"].replace("/", "_").replace(" ", "_"))
    os.makedirs(folder, exist_ok=True)
    if scene["gt"]:
        pan, ms, reference = scene["pan"], scene["ms"], scene["gt"]
    else:
        pan, ms, reference = (os.path.join(folder, f) for f in ("pan_lr.tif", "ms_lr.tif", "reference.tif"))
        wald.degrade(scene["pan"], scene["ms"], pan, ms, sensor=scene["sensor"], out_reference=reference)
    outputs, seconds = [], {}
    for method in METHODS:
        out = os.path.join(folder, f"{method}.tif")
        t = time.perf_counter()
        if not (reuse and os.path.exists(out)):
            pansharpen(pan, ms, out, method, sensor=scene["sensor"], float32=True)
        seconds[method] = time.perf_counter() - t
        outputs.append((method, out))
    notes = []
    t = time.perf_counter()
    out = os.path.join(folder, "panadapter_zero_shot.tif")
    sharpen_scene(pan, ms, out, weights_path=weights, sensor=scene["sensor"], float32=True, log=notes.append)
    seconds["panadapter_zero_shot"] = time.perf_counter() - t
    outputs.append(("panadapter_zero_shot", out))
    from osgeo import gdal
    if gdal.Open(ms).RasterCount == 6:   # the old, Landsat-7-only weights take 6 bands only
        t = time.perf_counter()
        out = os.path.join(folder, "panadapter_landsat7_weights.tif")
        sharpen_scene(pan, ms, out, weights_path=landsat7_weights(), sensor=scene["sensor"], float32=True)
        seconds["panadapter_landsat7_weights"] = time.perf_counter() - t
        outputs.append(("panadapter_landsat7_weights", out))
    if adapt:
        adapter = os.path.join(folder, "adapter.pt")
        t = time.perf_counter()
        card = finetune_scene(pan, ms, adapter, sensor=scene["sensor"], iterations=adapt, log=notes.append)
        out = os.path.join(folder, "panadapter_adapted.tif")
        sharpen_scene(pan, ms, out, adapter=adapter, sensor=scene["sensor"], float32=True, log=notes.append)
        seconds["panadapter_adapted"] = time.perf_counter() - t
        outputs.append(("panadapter_adapted", out))
        notes.append(f"check: {card.get('check')}")
    res = assess.assess_reduced([p for _, p in outputs], reference, dim_cut=21, sensor=scene["sensor"])
    rows = {name: {k: r[k] for k in KEYS} for (name, _), r in zip(outputs, res["rows"])}
    for name in rows:
        rows[name]["seconds"] = seconds[name]
    if hqnr and not scene["gt"]:
        for name, value in full_resolution(scene, folder, log).items():
            rows[name]["hqnr"] = value
    base = next((n for n in notes if n.startswith("Classical base")), "")
    log(f"  {scene['name']}: " + base[:120])
    return rows, notes


def summarise(results):
    lines = ["| scene | best classical ERGAS (method) | zero-shot ERGAS | gain | best classical SAM | zero-shot SAM |"
             + (" adapted ERGAS | adapted SAM |" if any("panadapter_adapted" in r for r in results.values()) else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if any("panadapter_adapted" in r for r in results.values()) else "")]
    wins, wins_new, gains, a_wins, a_gains = 0, 0, [], 0, []
    hqnr_rows, extra = [], []
    for name, rows in results.items():
        classical = {m: v for m, v in rows.items() if m in METHODS}
        best = min(classical, key=lambda m: classical[m]["ergas"])
        best_sam = min(v["sam"] for v in classical.values())
        z = rows["panadapter_zero_shot"]
        gain = 100 * (1 - z["ergas"] / classical[best]["ergas"])
        gains.append(gain)
        win = z["ergas"] < classical[best]["ergas"]
        wins += win
        wins_new += win and not name.startswith(("landsat", "wv3", "sentinel2"))
        line = (f"| {name} | {classical[best]['ergas']:.3f} ({best}) | {z['ergas']:.3f} | {gain:+.1f} % | "
                f"{best_sam:.3f} | {z['sam']:.3f} |")
        if "panadapter_adapted" in rows:
            a = rows["panadapter_adapted"]
            a_wins += a["ergas"] < classical[best]["ergas"] and a["sam"] < best_sam
            a_gains.append(100 * (1 - a["ergas"] / classical[best]["ergas"]))
            line += f" {a['ergas']:.3f} | {a['sam']:.3f} |"
        if any("hqnr" in v for v in rows.values()):
            hq = {m: v["hqnr"] for m, v in classical.items() if "hqnr" in v}
            top = max(hq, key=hq.get)
            hqnr_rows.append((hq[top], z["hqnr"]))
            extra.append(f"{name}: HQNR {z['hqnr']:.4f} zero-shot against {hq[top]:.4f} ({top})")
        if "panadapter_landsat7_weights" in rows:
            extra.append(f"{name}: the Landsat-7-only weights (zero-shot) ERGAS "
                         f"{rows['panadapter_landsat7_weights']['ergas']:.3f}, SAM "
                         f"{rows['panadapter_landsat7_weights']['sam']:.3f}")
        lines.append(line)
    lines.append("")
    if hqnr_rows:
        best_mean = sum(b for b, _ in hqnr_rows) / len(hqnr_rows)
        zero_mean = sum(z for _, z in hqnr_rows) / len(hqnr_rows)
        lines.append(f"Full resolution, {len(hqnr_rows)} scenes: mean HQNR zero-shot {zero_mean:.4f} against the best "
                     f"classical method's {best_mean:.4f} per scene.")
    lines += [f"- {e}" for e in extra] + ([""] if extra else [])
    lines.append(f"Zero-shot PanAdapter beats the best classical method's ERGAS on {wins} of {len(results)} scenes "
                 f"({wins_new} of the new sensors' scenes); mean ERGAS gain {sum(gains) / max(1, len(gains)):+.1f} %.")
    if a_gains:
        lines.append(f"Scene-adapted: better ERGAS and SAM than the best classical method on {a_wins} of "
                     f"{len(results)} scenes; mean ERGAS gain {sum(a_gains) / len(a_gains):+.1f} %.")
    return lines


def write_card(results):
    """The zero-shot scores on the test scenes into the bundled PanAdapter weights' card (``test_scenes``)."""
    from panadapter_qgis.backend import weights

    path = weights.WEIGHTS_DIR / f"{weights.REGISTRY['panadapter']}.json"
    card = json.loads(path.read_text())
    table = {}
    for name, rows in results.items():
        classical = {m: v for m, v in rows.items() if m in METHODS}
        best = min(classical, key=lambda m: classical[m]["ergas"])
        table[name] = dict(best_classical=best, best_classical_ergas=round(classical[best]["ergas"], 4),
                           best_classical_sam=round(min(v["sam"] for v in classical.values()), 4),
                           zero_shot_ergas=round(rows["panadapter_zero_shot"]["ergas"], 4),
                           zero_shot_sam=round(rows["panadapter_zero_shot"]["sam"], 4))
    card["test_scenes"] = dict(protocol="reduced resolution (Wald; RR scenes against their gt.tif), 21-pixel "
                                        "border cut, bundled weights without adaptation (bench/bench_multisensor.py)",
                               date=time.strftime("%Y-%m-%d"), scenes=table)
    path.write_text(json.dumps(card, indent=1) + "\n")


BEGIN, END = "<!-- bench_multisensor: begin -->", "<!-- bench_multisensor: end -->"


def update_section(path, lines):
    """Replace the text between BEGIN and END in ``path`` (appended when absent) by ``lines``, headings one
    level down."""
    body = [("#" + line) if line.startswith("#") else line for line in lines]
    block = "\n".join([BEGIN] + body + [END])
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (a subset; not written to the docs)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the classical outputs already in the work folder (their seconds are then not measured)")
    ap.add_argument("--adapt", type=int, default=0, help="also adapt with this many iterations (0: zero-shot only)")
    ap.add_argument("--work", default=os.path.join(REPO, "build", "bench_multisensor"))
    ap.add_argument("--out", default=os.path.join(OUT, "multisensor.md"))
    ap.add_argument("--benchmarks", default=os.path.join(REPO, "docs", "BENCHMARKS.md"),
                    help="the tables also replace this file's multi-sensor section ('' for none)")
    ap.add_argument("--card", action="store_true", help="write the zero-shot scores into the bundled card")
    ap.add_argument("--hqnr", action="store_true",
                    help="also the full-resolution HQNR of every method on the full-resolution scenes' own pairs")
    ap.add_argument("--weights", default="bundled",
                    help="the zero-shot rows' weights (a .pt; default the bundled ones; then not written to the docs)")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    scenes = test_scenes(args.work)
    if args.quick or args.scenes:
        wanted = args.scenes.split(",") if args.scenes else QUICK
        scenes = [s for s in scenes if s["name"] in wanted]
    results, notes = {}, {}
    t0 = time.time()
    for scene in scenes:
        print(f"{scene['name']} ...", flush=True)
        results[scene["name"]], notes[scene["name"]] = run(scene, args.work, args.adapt, print, args.reuse,
                                                                  args.hqnr, args.weights)
    lines = [f"# Multi-sensor test scenes ({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s)", ""]
    lines += summarise(results)
    lines += ["", "## Per scene", ""]
    for name, rows in results.items():
        lines += [f"### {name}", "", "| method | ERGAS | SAM | Q2n | HQNR (full res.) | s |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {m} | {v['ergas']:.3f} | {v['sam']:.3f} | {v['q2n']:.4f} | "
                  + (f"{v['hqnr']:.4f}" if "hqnr" in v else "") + f" | {v['seconds']:.1f} |"
                  for m, v in rows.items()]
        lines += [f"- {n}" for n in notes[name] if n.startswith(("Classical base", "Check", "This adapter"))]
        lines.append("")
    write_report(args.out, lines)
    if not (args.quick or args.scenes) and args.benchmarks and args.weights == "bundled":
        update_section(args.benchmarks, lines)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    if args.card and not (args.quick or args.scenes) and args.weights == "bundled":
        write_card(results)
    print("\n".join(lines[:25]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
