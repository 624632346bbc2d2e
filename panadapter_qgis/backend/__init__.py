"""PanAdapter's backend. Importing it lets OpenMP threads sleep while they wait unless the user chose a wait
policy (``device._passive_openmp``): whichever module imports torch first, the policy is set before."""
from .device import _passive_openmp

_passive_openmp()
