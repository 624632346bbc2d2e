# SPDX-License-Identifier: GPL-2.0-or-later
"""The desktop parts: the pansharpening preview dock, RGB styling of fused rasters, device and dependencies.

Importing this package does nothing; the plugin imports the modules it needs in ``initGui``.
"""
