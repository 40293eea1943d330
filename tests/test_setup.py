"""``make setup`` (scripts/setup.sh) stops, in one line, when it cannot install what the main job needs: the study
must not go on to a missing-data error and a traceback. The Debian data set is hidden in a mount namespace of the
test's own and apt-get fails as it does when another process holds its lock."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path("/usr/share/datasets")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not DATASETS.is_dir(),
                                reason="needs root, unshare and /usr/share/datasets (a private mount namespace)")

LOCKED = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)"


def test_setup_stops_in_one_line_when_apt_cannot_install_the_data(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text(f"#!/bin/sh\necho '{LOCKED}' >&2\nexit 100\n")
    (fake / "apt-get").chmod(0o755)
    script = f"mount -t tmpfs none {DATASETS} && PATH={fake}:$PATH exec bash scripts/setup.sh"
    result = subprocess.run(["unshare", "-m", "bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, VENV=str(tmp_path / "never-built")))
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [
        f"setup: FAILED: apt-get could not install dataset-fashion-mnist ({LOCKED}); fix that, then run "
        f"'make setup' again"], result.stderr
    assert not (tmp_path / "never-built").exists()  # nothing after the failed step ran
