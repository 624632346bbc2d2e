# SPDX-License-Identifier: GPL-2.0-or-later
"""Help texts of the Processing algorithms, in the user's words.

One table per concept: ``PARAMETER_HELP`` (shared by every algorithm that has the parameter) and
``CLASSICAL_METHODS`` (title and summary of each classical method id). ``algorithm_help_html`` composes
the text shown in the algorithm dialog's help panel and by ``qgis_process help``.
"""
from html import escape
from typing import Iterable, NamedTuple, Optional, Tuple


class MethodHelp(NamedTuple):
    title: str  # name in the toolbox
    summary: str  # what it does and when to use it; first sentence doubles as the short description


# Ids and order as in DESIGN.md; the backend's METHODS decides which ones exist.
CLASSICAL_METHODS = {
    "upsample": MethodHelp(
        "Upsampled MS (EXP, no sharpening)",
        "Resamples the multispectral image onto the panchromatic grid with the 23-tap polynomial "
        "interpolator and adds no panchromatic detail. Use it as the baseline other methods are compared "
        "with: it keeps the multispectral colours exactly but has the multispectral sharpness."),
    "brovey": MethodHelp(
        "Brovey transform with haze correction (BT-H)",
        "Multiplies every multispectral band by the ratio of the panchromatic image to the multispectral "
        "intensity, after removing an estimate of atmospheric haze. Very sharp and fast; colours can shift "
        "where the panchromatic band does not cover the same wavelengths as the multispectral bands."),
    "ihs": MethodHelp(
        "Generalized IHS (GIHS)",
        "Adds the difference between the panchromatic image and the multispectral intensity (the mean of "
        "the bands) to every band. Fast and sharp, but colours shift where the panchromatic band sees what "
        "the visible bands do not, for example bright vegetation in the near infrared."),
    "gs": MethodHelp(
        "Gram-Schmidt (GS)",
        "Component substitution: synthesises a low-resolution panchromatic image as the mean of the "
        "multispectral bands and injects the panchromatic detail into each band with a gain computed from "
        "the band's covariance with it. The classic method of many commercial packages."),
    "gsa": MethodHelp(
        "Gram-Schmidt adaptive (GSA)",
        "Gram-Schmidt in which the synthetic low-resolution panchromatic image is the best linear "
        "combination of the multispectral bands, fitted to the panchromatic image. Usually more faithful "
        "colours than plain Gram-Schmidt, at the same speed."),
    "pca": MethodHelp(
        "Principal component analysis (PCA)",
        "Replaces the first principal component of the multispectral bands with the panchromatic image "
        "matched to it, then transforms back. Sharp; colours can shift when the first component does not "
        "look like the panchromatic image."),
    "mtf_glp": MethodHelp(
        "MTF-GLP (generalized Laplacian pyramid)",
        "Extracts the panchromatic detail with a low-pass filter that matches the sensor's optics (its "
        "MTF) and adds it to each band, after matching the panchromatic image to the band's brightness "
        "and contrast. Good colour fidelity; choose the right sensor so the filters match the image."),
    "mtf_glp_hpm": MethodHelp(
        "MTF-GLP with high-pass modulation (MTF-GLP-HPM)",
        "Like MTF-GLP, but the panchromatic detail is injected in proportion to each band's brightness "
        "(multiplicative injection), which keeps band ratios and suits bright, contrasted scenes."),
    "mtf_glp_fs": MethodHelp(
        "MTF-GLP with full-scale regression (MTF-GLP-FS)",
        "MTF-GLP whose injection gains are estimated at full resolution instead of at reduced scale. One "
        "of the best classical methods in published comparisons and a good default: sharp, with faithful "
        "colours, when the sensor is set correctly."),
    "bdsd_pc": MethodHelp(
        "Band-dependent spatial detail, physically constrained (BDSD-PC)",
        "Estimates, for each band separately, how much panchromatic detail to inject and how to build the "
        "matching intensity, by a least-squares fit at reduced scale with physically sensible constraints "
        "(the panchromatic detail is never subtracted). Accurate colours; needs the sensor's MTF, so set "
        "the sensor."),
    "awlp": MethodHelp(
        "Additive wavelet luminance proportional (AWLP)",
        "Extracts the panchromatic detail with an undecimated (a trous) wavelet transform and injects it "
        "into each band in proportion to the band's share of the total brightness, which preserves the "
        "ratios between bands."),
    "pracs": MethodHelp(
        "Partial replacement adaptive component substitution (PRACS)",
        "Component substitution in which each band gets a mix of the panchromatic image and of the band "
        "itself, weighted by how well they correlate, with adaptive gains. Less colour distortion than "
        "full replacement methods such as GIHS or PCA."),
}

PARAMETER_HELP = {
    "PAN": "The panchromatic image: one band with the fine pixels. The output is on its grid (coordinate "
           "reference system and pixel size), clipped to where the panchromatic and multispectral images "
           "overlap. It must be a raster file GDAL reads (GeoTIFF, JPEG 2000, ...).",
    "MS": "The multispectral image to sharpen: several bands with coarser pixels of the same place, for "
          "example 4 times the panchromatic pixel for WorldView or Pleiades, 2 times for Landsat. The "
          "resolution ratio is read from the georeferencing; an image on another grid or coordinate "
          "reference system is warped onto the panchromatic grid first.",
    "MS_BANDS": "The multispectral bands to sharpen, in the order they should have in the output. Leave it "
                "empty to sharpen every band. Each selected band becomes one output band and keeps its "
                "description.",
    "SENSOR": "The satellite that took the images. It sets how blurred each band is assumed to be (the "
              "sensor's MTF), which the MTF-based methods use to separate detail from colour. Choose "
              "Generic when your sensor is not listed. Left empty, it is taken from the image metadata when "
              "that names the satellite (Generic otherwise); a choice the metadata contradicts is obeyed, "
              "with a warning.",
    "DEVICE": "Where to compute. Automatic uses an NVIDIA GPU when PyTorch can use one and the CPU "
              "otherwise. CUDA needs an NVIDIA GPU and a CUDA build of PyTorch.",
    "TILE_SIZE": "The image is processed in square tiles of this many panchromatic pixels per side "
                 "(rounded to a multiple of the resolution ratio). Smaller tiles need less memory; the "
                 "result does not depend on the tile size.",
    "SCHEDULER": "The address of a Dask scheduler (for example tcp://10.0.0.5:8786) whose workers compute the "
                 "tiles, for scenes or archives one machine is too slow for; the result is the same. Empty: "
                 "this machine. The default is the environment variable PANADAPTER_SCHEDULER. The workers need "
                 "the plugin's backend and torch, and the inputs on a path every worker sees (user guide, "
                 "'Running on a cluster').",
    "OUTPUT_FLOAT32": "Write 32-bit floating point values. When unchecked the output has the data type of "
                      "the multispectral image, with values rounded and clipped to its range.",
    "OUTPUT": "The pansharpened image, a GeoTIFF: the multispectral bands on the panchromatic grid, "
              "nodata wherever the panchromatic or the multispectral image has nodata.",
}


# The quality-assessment algorithms (group "Quality assessment").
QUALITY_ALGORITHMS = {
    "degrade": MethodHelp(
        "Degrade a pair for Wald's protocol (reduced resolution)",
        "Makes the reduced-resolution pair of Wald's protocol from a full-resolution panchromatic and "
        "multispectral pair: the multispectral image is blurred with the sensor's optics (its MTF) and "
        "shrunk by the resolution ratio, and the panchromatic image likewise (or with MATLAB's bicubic "
        "resize). Sharpen the reduced pair with any method, then compare the result with the original "
        "multispectral image, which is the ground truth, with 'Assess pansharpening quality'. The outputs are "
        "georeferenced: the reduced panchromatic image has the multispectral pixel size and a sharpened "
        "result lands exactly on the original multispectral grid."),
    "assess": MethodHelp(
        "Assess pansharpening quality",
        "Computes the standard pansharpening quality indices of one or more pansharpened rasters and writes "
        "an HTML report (table and error maps) and optionally a CSV file. With a reference image "
        "(reduced-resolution mode, Wald's protocol) it computes SAM, ERGAS, Q2n, Q-avg, SCC, PSNR and SSIM (also the indices of "
        "hyperspectral-multispectral fusion); with the "
        "panchromatic and multispectral images the rasters were made from (full-resolution mode, no "
        "reference) it computes D_lambda (Khan), D_s, HQNR and QNR. Give several rasters to compare methods "
        "side by side. The indices follow the pansharpening toolbox of Vivone et al. (21-pixel border cut, "
        "32 x 32 blocks) and are computed in strips and tiles, so any raster size works."),
}

# Per-algorithm help of parameters whose meaning differs from PARAMETER_HELP's (or that only they have).
QUALITY_PARAMETER_HELP = {
    "degrade": {
        "PAN": "The full-resolution panchromatic image of the pair to degrade: one band with the fine pixels.",
        "MS": "The full-resolution multispectral image of the pair. It becomes the reference (ground "
              "truth) of the reduced-resolution test; it is read on the grid implied by the panchromatic "
              "image, and warped onto it when its grid or coordinate reference system differs.",
        "MS_BANDS": "The multispectral bands to keep, in the order they should have in the outputs. Leave it "
                    "empty to keep every band. Each band keeps its description.",
        "SENSOR": "The satellite that took the images: it sets the blur (MTF) applied to each band before "
                  "shrinking, as the standard protocol does. Choose Generic when your sensor is not listed. "
                  "Left empty, it is taken from the image metadata when that names the satellite.",
        "PAN_MODE": "How the panchromatic image is reduced. MTF: blurred with the sensor's panchromatic MTF "
                    "then decimated (as in the PanCollection data sets). Bicubic: MATLAB's antialiased "
                    "bicubic resize (as in the toolbox's resize_images.m).",
        "OUTPUT_FLOAT32": "Write 32-bit floating point values (recommended: no rounding). When unchecked "
                          "the outputs keep the input data types, rounded and clipped to their range.",
        "OUTPUT_PAN": "The reduced panchromatic image: one band on the multispectral grid (its pixel is the "
                      "multispectral pixel), same footprint and coordinate reference system.",
        "OUTPUT_MS": "The reduced multispectral image: the selected bands with pixels ratio times the "
                     "multispectral pixel, on the same footprint and coordinate reference system.",
        "OUTPUT_REFERENCE": "Optional: also write the reference, the selected multispectral bands on the "
                            "processing grid. Needed when the multispectral image is warped onto the "
                            "panchromatic grid; otherwise the original multispectral image is the reference.",
    },
    "assess": {
        "FUSED": "The pansharpened rasters to assess, one or several (for example the same scene sharpened by "
                 "different methods). Each gets one row of the table. They must have the pixel size and "
                 "coordinate reference system of the reference (or of the panchromatic image); only the "
                 "area they share is assessed.",
        "REFERENCE": "Reduced-resolution mode: the ground truth the rasters are compared with, usually the "
                     "original multispectral image of a pair degraded with 'Degrade a pair for Wald's "
                     "protocol' (or its reference output). Leave it empty for full-resolution mode.",
        "PAN": "Full-resolution mode: the panchromatic image the rasters were sharpened with. Give it "
               "together with the multispectral image, and leave the reference empty.",
        "MS": "Full-resolution mode: the multispectral image the rasters were sharpened from. It is "
              "interpolated onto the panchromatic grid (the upsample method) to measure colour distortion.",
        "SENSOR": "The satellite that took the images. In full-resolution mode it sets the blur (MTF) used "
                  "to compare the sharpened bands with the multispectral ones (D_lambda). Choose Generic "
                  "when your sensor is not listed. Left empty, it is taken from the metadata of the reference "
                  "(or of the panchromatic and multispectral images) when that names the satellite.",
        "DIM_CUT": "Reduced-resolution mode: the border, in pixels, left out before computing the indices, "
                   "as the standard toolbox does (21). Set 0 to use the whole overlap.",
        "RATIO": "The panchromatic to multispectral resolution ratio used by ERGAS. 0 reads it from the "
                 "rasters' metadata (written by this plugin's algorithms); set it for rasters from other "
                 "tools.",
        "OUTPUT_HTML": "The report: an HTML page with the table of indices (best values highlighted), notes on "
                       "how they were computed, and a small error map per raster and band group.",
        "OUTPUT_CSV": "Optional: the same numbers as a CSV file, one line per raster, for spreadsheets and "
                      "scripts.",
    },
}


def quality_parameter_help(algorithm_id: str, name: str) -> str:
    """Help of parameter ``name`` of a quality algorithm (its own text, else the shared one)."""
    return QUALITY_PARAMETER_HELP.get(algorithm_id, {}).get(name) or PARAMETER_HELP[name]


def method_help(method_id: str, fallback_title: str = "", fallback_summary: str = "") -> MethodHelp:
    """Help of a method id; the backend's own name and text stand in for an id this table lacks."""
    return CLASSICAL_METHODS.get(method_id) or MethodHelp(fallback_title or method_id, fallback_summary)


def first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


def algorithm_help_html(summary: str, parameters: Iterable[Tuple[str, str]],
                        notes: Optional[Iterable[str]] = None) -> str:
    """Help panel HTML: the summary, notes, then each parameter's description and help."""
    parts = [f"<p>{escape(summary)}</p>"]
    parts += [f"<p>{escape(note)}</p>" for note in (notes or ())]
    parts.append("<h3>Parameters</h3><dl>")
    for description, text in parameters:
        parts.append(f"<dt><b>{escape(description)}</b></dt><dd>{escape(text)}</dd>")
    parts.append("</dl>")
    return "".join(parts)


# The deep-learning algorithms (group "Deep learning").
DEEP_ALGORITHMS = {
    "panadapter": MethodHelp(
        "PanAdapter (deep pansharpening)",
        "Sharpens the multispectral image with PanAdapter (Wu et al., AAAI 2025): convolutional prior "
        "extractors and a vision transformer with cascaded adapters, decoded by an implicit neural "
        "representation. It adds what it learnt to the best classical method for your pair (chosen among "
        "MTF-GLP-FS, MTF-GLP-HPM, BDSD-PC and AWLP on the pair degraded by the resolution ratio; the log names "
        "it). Give the adapter file that 'Fine-tune a deep model on the scene' wrote for this pair (best), or "
        "leave it empty to use the bundled multi-sensor weights, which take any band count and ratio: they "
        "are first checked one scale down, on your pair degraded by the ratio, and where they do not beat the "
        "classical method the output is that method's result (the log says which). An adapter that did not "
        "beat the classical method on the part of the pair it was checked on gives that method's result too. "
        "The image is processed in tiles with a margin of context, so there are no "
        "seams. Runs on an NVIDIA GPU when available, on the CPU otherwise (slower)."),
    "ssdiff": MethodHelp(
        "SSDiff (diffusion pansharpening)",
        "Sharpens the multispectral image with SSDiff (Zhong et al., NeurIPS 2024), a diffusion model with a "
        "spatial branch on the panchromatic image and a spectral branch on the multispectral image, fused by "
        "alternating projection modules and Fourier modulation. It starts from noise and refines the detail to "
        "add to the upsampled multispectral image in a few DDIM steps: the same seed always gives the same "
        "image. Give the adapter file that 'Fine-tune a deep model on the scene' wrote with the model SSDiff "
        "(best), or leave it empty to use the pre-trained weights, which exist only for the band count they "
        "were trained on. Overlapping tiles are blended, so there are no seams. Each step costs a full pass "
        "of the network: 10 steps are the paper's choice; on a CPU it is the slowest method of the "
        "toolbox."),
    "finetune": MethodHelp(
        "Fine-tune a deep model on the scene",
        "Adapts a deep pansharpening model to your own images, with no training data: the panchromatic and "
        "multispectral pair is degraded by the resolution ratio (Wald's protocol), the model learns to "
        "rebuild your multispectral image from the degraded pair (from PanAdapter's bundled multi-sensor "
        "weights, that alone by default), and can also learn at full resolution (SSDiff and other weights by "
        "default): its output degraded must give back your multispectral image and relate to the panchromatic "
        "band as the multispectral image relates to it at its own scale (as closely as that holds on the scene "
        "one scale down, where your multispectral image is a reference); the result is an adapter file for "
        "'PanAdapter (deep pansharpening)' or 'SSDiff (diffusion pansharpening)'. Only parts of the model "
        "learn: for PanAdapter the band heads, the prior modules, the adapters and the decoders, with the "
        "pre-trained backbones frozen; for SSDiff its two branches in turn, the other one frozen (L-BAF). "
        "PanAdapter (from any pre-trained weights) learns on three quarters of the degraded pair and is then "
        "checked on the quarter it never saw against the best classical method for the pair (which the "
        "multi-sensor model starts from) and against the pre-trained model before adaptation; "
        "the log gives the three errors, and the adapter records which of the three to use (a pair too small "
        "to spare a quarter cannot be checked: its adapter gives what PanAdapter gives without one). "
        "Takes minutes on a CPU (PanAdapter: about 1 for a 1-megapixel PAN on 2 cores) and seconds on a GPU; "
        "cancel at any time (no file is written)."),
    "inf_fusion": MethodHelp(
        "Hyperspectral-multispectral fusion (INF)",
        "Sharpens a low-resolution hyperspectral image (HSI: EnMAP, PRISMA, Hyperion, AVIRIS...) with a "
        "high-resolution multispectral image (MSI) of the same place, into a hyperspectral image on the MSI "
        "grid. INF (Wu et al., IEEE TCI 2024) encodes both images, fuses their high frequencies with the "
        "relative coordinates and decodes with an implicit neural representation weighted by cosine "
        "similarity; it adapts to the pair itself (both images degraded by the resolution ratio), starting "
        "from the classical regression detail injection, checks itself against that start, and ends with a "
        "back-projection onto the HSI. The classical methods are there for comparison. The "
        "output keeps the HSI's band descriptions and wavelengths. Both images may have any band count, "
        "grid and CRS (the HSI is warped onto the grid implied by the MSI when needed)."),
    "train": MethodHelp(
        "Train PanAdapter on a dataset",
        "Trains PanAdapter's two stages on a PanCollection-style HDF5 dataset (datasets gt, ms, lms, pan of "
        "N x bands x rows x columns): stage 1 learns the prior extractors and first decoder, stage 2 the "
        "adapters and second decoder with the backbones frozen. Writes a weights file that the PanAdapter and "
        "fine-tuning algorithms accept. For users who have training data; most users fine-tune on the scene "
        "instead."),
}

DEEP_PARAMETER_HELP = {
    "ADAPTER": "An adapter file written by 'Fine-tune a deep model on the scene' for images of this sensor "
               "(same band count and resolution ratio). Empty: the pre-trained weights (PanAdapter: any band "
               "count, checked one scale down against the classical method they start from).",
    "WEIGHTS": "A weights file written by 'Train PanAdapter on a dataset' (for SSDiff: an SSDiff weights "
               "file). Empty: the weights bundled with the plugin for the chosen model.",
    "INF_ADAPTER": "An adapter file written by 'Fine-tune a deep model on the scene' with the model INF for "
                   "this pair's sensors (same HSI and MSI band counts and ratio). Given: no adaptation here.",
    "MODEL": "The deep model to adapt: PanAdapter (0), SSDiff (1) or INF (2: hyperspectral fusion; give the "
             "multispectral image as PAN and the hyperspectral image as MS). The adapter file works only with the "
             "algorithm of the same model.",
    "ITERATIONS": "Training steps (batches of patches of the dataset), over both stages.",
    "FINETUNE_ITERATIONS": "Training steps (batches of 8 patches). Empty: the default of the model, measured on "
                           "development scenes: 600 for PanAdapter (about 1 minute for a 1-megapixel PAN on a "
                           "2-core CPU; 1200 gained nothing on three training pairs) and INF, 3000 for SSDiff, whose L-BAF trains one branch at a time and "
                           "kept improving up to 3000 (5-11 minutes).",
    "MINUTES": "Stop after this many minutes even if the iterations are not done (0: no time limit). The "
               "adapter is written with what was learned so far.",
    "SPECTRAL_TERM": "How the adaptation checks the spectra of the full-resolution pair itself (PanAdapter and "
                     "SSDiff). Wald (0, the default): the fused patch, blurred by the sensor MTF and decimated, "
                     "must give back the MS; measured best on reduced-resolution ERGAS. Khan (1): the "
                     "fused patch, blurred at the PAN scale, must match the upsampled MS, the comparison HQNR's "
                     "D_lambda makes; measured best on full-resolution HQNR, 2-7 % worse ERGAS at reduced "
                     "resolution (see docs/BENCHMARKS.md in the plugin's repository).",
    "SAM_WEIGHT": "Weight of the spectral angle (radians) beside the loss on the degraded pair (PanAdapter and "
                  "SSDiff). Empty: the default: 0 for PanAdapter from the bundled multi-sensor weights (with 3 "
                  "every adaptation that could be checked lost to the pre-trained model on the held-out part of "
                  "the degraded pair), 3 for PanAdapter from other weights (better SAM on the Landsat-7 "
                  "development scenes), 0 for SSDiff (3 gave better reduced-resolution ERGAS and SAM but a lower "
                  "full-resolution HQNR). See docs/BENCHMARKS.md in the plugin's repository.",
    "SPECTRAL_TERM_WEIGHT": "Weight of the full-resolution spectral term (the pair itself, fused and degraded, "
                            "must give back its MS; its form: the full-resolution spectral term above). Empty: "
                            "the default: 0 for PanAdapter from the bundled multi-sensor weights (with it the "
                            "adaptation lost to the pre-trained model on the held-out part of the degraded pair, "
                            "and took 35-40 % longer), 1 otherwise.",
    "SPATIAL_WEIGHT": "Weight of the full-resolution D_s term (PanAdapter and SSDiff): each fused band should "
                      "relate to the PAN as the MS relates to the PAN reduced to its scale, down to the error "
                      "the scene itself shows one scale down. Empty: the default: 0 for PanAdapter from the "
                      "bundled multi-sensor weights (and wherever the spectral term's weight is 0), else 0.3, "
                      "which keeps the full-resolution HQNR high. 0 "
                      "leaves it out: sharper detail and a lower ERGAS where a reference exists (most on bright, "
                      "high-contrast urban pixels), a lower HQNR. HQNR rewards leaving detail out: on reduced "
                      "pairs, where the truth is known, plain upsampling often scores above the truth. See "
                      "docs/BENCHMARKS.md in the plugin's repository.",
    "FINETUNE_OUTPUT": "The adapter file to write (.pt). Give it to 'PanAdapter (deep pansharpening)' as "
                       "ADAPTER.",
    "DATASET": "A PanCollection-style HDF5 file: datasets gt, ms, lms and pan (N x bands x rows x columns), "
               "values in digital numbers.",
    "MAX_VALUE": "The value that maps to 1 when the dataset is normalised: 2047 for 11-bit data such as "
                 "WorldView-3, 1023 for 10-bit Gaofen-2.",
    "INIT_WEIGHTS": "Start from these weights (a file from this algorithm) instead of random ones.",
    "TRAIN_OUTPUT": "The weights file to write (.pt). A resumable checkpoint is kept beside it.",
    "SSDIFF_ADAPTER": "An adapter file written by 'Fine-tune a deep model on the scene' with the model SSDiff, "
                      "for images of this sensor (same band count and resolution ratio). Empty: the "
                      "pre-trained weights, used as they are.",
    "SSDIFF_WEIGHTS": "A weights file of SSDiff (as written by make weights). Empty: the weights bundled with "
                      "the plugin.",
    "STEPS": "DDIM sampling steps (deterministic, eta = 0). Each step is one pass of the network over the "
             "image, so time grows linearly; 10 is the paper's setting. 1 step (the network's first estimate "
             "of the image) takes a tenth of the time and scored better ERGAS and SAM than 10 on two "
             "held-out Landsat-7 scenes, but a lower full-resolution HQNR on a Sentinel-2 tile (see "
             "docs/BENCHMARKS.md in the plugin's repository).",
    "SEED": "Seed of the starting noise. The noise is tied to the scene's pixels, so the same seed gives the "
            "same image whatever the tile size, device batch or order; another seed gives another sample.",
    "SSDIFF_TILE_SIZE": "Side of the square tiles (panchromatic pixels); neighbouring tiles overlap by a "
                        "quarter of it and are blended. The attention of the first level compares every pixel "
                        "of a tile with every other. The bundled weights were trained on 32-pixel patches; "
                        "32 and 64 give the same indices, 32 runs about 1.5 times faster on a CPU, 128 three "
                        "times slower.",
    "HSI": "The hyperspectral image at low resolution: every band is sharpened.",
    "MSI": "The multispectral image at high resolution (an integer multiple of the HSI's resolution), covering "
           "the same place. Its bands guide the detail.",
    "METHOD": "INF (deep model adapted to the pair, started at the regression detail injection), detail "
              "injection (each HSI band takes the high frequencies of the MSI band it correlates with best, or "
              "with SRF the band most sensitive at its wavelength, with a regression gain, as MTF-GLP does for "
              "pansharpening), plain upsampling of the HSI, or detail injection from regressed MSI bands (each "
              "HSI band takes the high frequencies of its own least-squares combination of all MSI bands). "
              "High frequencies are those of the generalised Laplacian pyramid with the MTF of a generic "
              "multispectral sensor (Nyquist gain 0.3).",
    "SRF": "Optional spectral response CSV of the MSI bands, one per MSI band in order: long "
           "(band,wavelength_nm,response) or wide (wavelength_nm,<band>,...). The HSI must give its band "
           "wavelengths (band metadata 'wavelength', as ENVI files have, or descriptions such as '550 nm'). "
           "Used by the detail-injection (MTF-GLP) method to match each HSI band with the MSI band that "
           "sees its wavelength; INF and the regression method learn the relation from the images.",
    "ADAPT_ITERATIONS": "Training steps of INF on the pair before fusing, from the bundled pre-trained trunk: "
                        "each step learns to rebuild the HSI from the pair degraded by the ratio and keeps the "
                        "full-resolution result consistent with both inputs (degraded, it gives back the HSI; "
                        "seen through the MSI's spectral responses, the MSI). 0: none; the result is then INF's "
                        "starting point, the regression detail injection, since the band layers are made for "
                        "each pair. The time per step does not depend on the image size: about 2 minutes on a "
                        "2-core CPU for 300 steps and 200 HSI bands.",
    "BACK_PROJECTION": "INF's last step: this many rounds of back-projection onto the HSI (what the fused image, "
                       "degraded by the HSI's blur and the ratio, and the HSI disagree on is interpolated back and "
                       "added), so that the result degraded gives back the HSI. Applied only when it improves the "
                       "regression detail injection on the pair degraded once more (the log says which). 0: "
                       "none; the result of 0 adaptation steps is then exactly the regression method's.",
    "HS_OUTPUT": "The fused hyperspectral image (GeoTIFF) on the MSI grid, with the HSI's data type (or "
                 "Float32).",
    "TILE_SIZE": "The image is processed in square tiles of this many panchromatic pixels per side, each with "
                 "a margin of context so that there are no seams; the result is the same for any size. Empty: "
                 "the size that runs the model fastest on a CPU, 32 transformer tokens a side (256 for the "
                 "bundled weights, 128 for the universal ones and the Landsat-7 ones): the transformer's work "
                 "grows with the square of the tile area, the margin's share shrinks as the tile grows.",
}


def deep_parameter_help(name: str, key: str = "") -> str:
    """Help of a parameter of a deep-learning algorithm (its own text, else the shared one)."""
    return DEEP_PARAMETER_HELP.get(key or name) or PARAMETER_HELP[name]
