"""Fixtures for the pipeline tests: a real single-node Slurm cluster (started once per session)."""

from __future__ import annotations

import pytest
from slurm_cluster import SlurmCluster, SlurmUnavailable


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """munged + slurmctld + slurmd on this machine; installs slurm-wlm and munge when missing; stops them after."""
    try:
        cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as e:
        pytest.skip(f"no local Slurm: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
