# SPDX-License-Identifier: GPL-2.0-or-later
"""Processing algorithms, one module per family (classical, deep models, fusion, assessment)."""
