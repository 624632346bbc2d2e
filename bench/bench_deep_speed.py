"""The deep models' speed inside QGIS (``qgis_process``) against a plain Python process, on one real scene.

    .venv/bin/python bench/bench_deep_speed.py [--scene DIR] [--sensor N] [--steps N] [--iterations N]
                                               [--copies N] [--weights PT] [--only panadapter,ssdiff,finetune]

QGIS's executables are linked with the system BLAS (OpenBLAS on a Debian QGIS install), whose symbols then
take the place of torch's own for its matrix products; torch calls them from inside its parallel loops,
where OpenBLAS's threads competed with torch's (``backend.device.torch_owns_the_cores``, which keeps
OpenBLAS to one thread while torch computes). Measured: inference with the bundled weights
(``panadapter:panadapter``, ``panadapter:ssdiff`` with ``--steps``) and scene adaptation
(``panadapter:finetune``, ``--iterations`` for each model), each through ``qgis_process.bin`` and through
the backend in Python; the work seconds are the ones each run reports (start-up and torch's import left
out). Target: inside QGIS at most 1.5 times the Python process's time (there, torch's matrix products
outside its parallel loops run on one OpenBLAS thread instead of its own multi-threaded BLAS). Default scene:
Landsat-7 FuseBox scene 10 (798 x 798 PAN, 6 bands: the bundled weights' band count). The inference rows also
give the PAN megapixels per second inside QGIS (issue 29's targets: PanAdapter >= 0.25, SSDiff >= 0.05 on a
2-core CPU); ``--copies`` repeats the scene in a VRT so that the fixed costs (the base choice and the check one
scale down) weigh as they do on a real scene.
"""
import argparse
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "pansharpening")
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
TARGET = 1.5
WROTE = re.compile(r"Wrote .* in ([0-9.]+) s\.")
ADAPTED = re.compile(r"Adapter written: .*, ([0-9.]+) s\)\.")


def qgis_env(profile):
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_CUSTOM_CONFIG_PATH", "PYTHONPATH")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=profile, QGIS_PLUGINPATH=REPO,
               PYTHONPATH=sysconfig.get_paths()["purelib"])
    return env


def seconds_in(text, pattern, what):
    found = pattern.findall(text)
    if not found:
        raise RuntimeError(f"{what}: no timing in its log:\n{text[-2000:]}")
    return float(found[-1])


def in_qgis(env, algorithm, params, pattern):
    args = [QGIS_PROCESS, "run", f"panadapter:{algorithm}"] + [f"--{k}={v}" for k, v in params.items()]
    ran = subprocess.run(args, env=env, capture_output=True, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{ran.stdout[-2000:]}{ran.stderr[-2000:]}")
    return seconds_in(ran.stdout + ran.stderr, pattern, algorithm)


def in_python(call, result_seconds):
    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            "from panadapter_qgis.backend import adapt\n"
            f"r = adapt.{call}\nprint('SECONDS', r[{result_seconds!r}])")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"{call} failed:\n{ran.stderr[-2000:]}")
    return float(ran.stdout.split("SECONDS")[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default=os.path.join(DATA, "landsat7_fusebox", "scene_10"))
    ap.add_argument("--sensor", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="SSDiff sampling steps (default 10)")
    ap.add_argument("--iterations", type=int, default=100, help="adaptation iterations per model (default 100)")
    ap.add_argument("--copies", type=int, default=1,
                    help="the scene repeated N x N times in a VRT (throughput on a larger image; default 1)")
    ap.add_argument("--weights", default="", help="PanAdapter's WEIGHTS (a .pt; default the bundled ones)")
    ap.add_argument("--tile", type=int, default=0, help="PanAdapter's TILE_SIZE (default: the model's own)")
    ap.add_argument("--only", default="", help="comma-separated cases: panadapter, ssdiff, finetune (default all)")
    args = ap.parse_args(argv)
    if not os.path.exists(QGIS_PROCESS):
        sys.exit(f"{QGIS_PROCESS} is missing: make qgis")
    pan, ms = os.path.join(args.scene, "pan.tif"), os.path.join(args.scene, "ms.tif")
    with tempfile.TemporaryDirectory() as work:
        if args.copies > 1:
            from bench_speed import mosaic_vrt
            for src, name in ((pan, "pan.vrt"), (ms, "ms.vrt")):
                mosaic_vrt(src, os.path.join(work, name), args.copies)
            pan, ms = os.path.join(work, "pan.vrt"), os.path.join(work, "ms.vrt")
        from osgeo import gdal
        ds = gdal.Open(pan)
        megapixels = ds.RasterXSize * ds.RasterYSize / 1e6
        ds = None
        profile = os.path.join(work, "profile")
        env = qgis_env(profile)
        subprocess.run([QGIS_PROCESS, "plugins", "enable", "panadapter_qgis"], env=env, check=True,
                       capture_output=True)
        out = lambda name: os.path.join(work, name)  # noqa: E731
        common = dict(PAN=pan, MS=ms, SENSOR=args.sensor)
        kw = f"sensor={args.sensor}, device='cpu'"
        weights = dict(WEIGHTS=args.weights) if args.weights else {}
        wkw = f", weights_path={args.weights!r}" if args.weights else ""
        if args.tile:
            weights["TILE_SIZE"] = args.tile
            wkw += f", tile_size={args.tile}"
        cases = [
            ("panadapter:panadapter",
             lambda: in_qgis(env, "panadapter", dict(common, OUTPUT=out("q1.tif"), **weights), WROTE),
             lambda: in_python(f"sharpen_scene({pan!r}, {ms!r}, {out('p1.tif')!r}, {kw}{wkw})", "seconds")),
            (f"panadapter:ssdiff, {args.steps} steps",
             lambda: in_qgis(env, "ssdiff", dict(common, STEPS=args.steps, OUTPUT=out("q2.tif")), WROTE),
             lambda: in_python(f"ssdiff_scene({pan!r}, {ms!r}, {out('p2.tif')!r}, steps={args.steps}, {kw})",
                               "seconds")),
        ]
        for index, model in enumerate(("panadapter", "ssdiff")):
            cases.append((
                f"panadapter:finetune MODEL={index}, {args.iterations} iterations",
                lambda i=index: in_qgis(env, "finetune", dict(common, MODEL=i, ITERATIONS=args.iterations,
                                                              OUTPUT=out(f"q{i}.pt")), ADAPTED),
                lambda m=model: in_python(f"finetune_scene({pan!r}, {ms!r}, {out(m + '.pt')!r}, model={m!r}, "
                                          f"iterations={args.iterations}, {kw})", "seconds")))
        if args.only:
            wanted = [w.strip() for w in args.only.split(",") if w.strip()]
            cases = [c for c in cases if any(c[0].startswith(f"panadapter:{w}") for w in wanted)]
        print(f"Scene {args.scene} ({args.copies} x {args.copies}: {megapixels:.2f} PAN MP); "
              f"{time.strftime('%Y-%m-%d')}; work seconds each run reports\n")
        print("| run | qgis_process s | MP/s (qgis_process) | Python s | ratio | target |")
        print("|---|---:|---:|---:|---:|---|")
        failed = 0
        for label, qgis_run, python_run in cases:
            q, p = qgis_run(), python_run()
            ok = q <= TARGET * p
            failed += not ok
            rate = f"{megapixels / q:.3f}" if "finetune" not in label else ""
            print(f"| {label} | {q:.1f} | {rate} | {p:.1f} | {q / p:.2f} | {'met' if ok else 'MISSED'} "
                  f"(<= {TARGET}) |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
