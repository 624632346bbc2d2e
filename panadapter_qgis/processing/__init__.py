# SPDX-License-Identifier: GPL-2.0-or-later
"""The Processing provider and its algorithms (thin QgsProcessingAlgorithm classes over the backend)."""
