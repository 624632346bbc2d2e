"""OpenMP's wait policy (issue 29: a loaded 2-core machine): the backend makes torch's threads sleep while they
wait (``OMP_WAIT_POLICY=PASSIVE``) unless the user set a policy; it is set before torch loads libgomp."""
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PROBE = ("import os, sys; import panadapter_qgis.backend.training.datasets; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torch_loads_with_a_passive_wait_policy_unless_chosen(given, expected):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    if given:
        env["OMP_WAIT_POLICY"] = given
    ran = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == [expected, "True"]   # torch was imported, after the policy was set
