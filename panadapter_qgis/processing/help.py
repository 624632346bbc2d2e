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
              "Generic when your sensor is not listed.",
    "DEVICE": "Where to compute. Automatic uses an NVIDIA GPU when PyTorch can use one and the CPU "
              "otherwise. CUDA needs an NVIDIA GPU and a CUDA build of PyTorch.",
    "TILE_SIZE": "The image is processed in square tiles of this many panchromatic pixels per side "
                 "(rounded to a multiple of the resolution ratio). Smaller tiles need less memory; the "
                 "result does not depend on the tile size.",
    "OUTPUT_FLOAT32": "Write 32-bit floating point values. When unchecked the output has the data type of "
                      "the multispectral image, with values rounded and clipped to its range.",
    "OUTPUT": "The pansharpened image, a GeoTIFF: the multispectral bands on the panchromatic grid, "
              "nodata wherever the panchromatic or the multispectral image has nodata.",
}


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
