"""Omniboard (the pinned npm package) serving a database written by real fast runs, driven by Debian's headless
Chromium through chromedriver: the run list renders and shows the runs with their criterion names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from experiments import omniboard
from experiments.localdb import free_port
from tests.conftest import run_cli

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parent.parent / "build" / "screenshots" / "omniboard_runs.png"
MISSING = [what for what, present in (
    ("node", shutil.which("node") is not None),
    ("Omniboard in node_modules (make setup)", (omniboard.ROOT / "node_modules" / "omniboard").is_dir()),
    ("chromium (apt-get install chromium)", CHROMIUM.exists()),
    ("chromedriver (apt-get install chromium-driver)", CHROMEDRIVER.exists()),
) if not present]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"missing: {', '.join(MISSING)}")


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture(scope="module")
def board(db_server, tmp_path_factory):
    """Two fast lottery runs in a fresh database and Omniboard serving it."""
    import os
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")))
    spec = f"{db_server.address}:omniboard_db"
    for criterion, seed in (("large_final", 1), ("random", 2)):
        result = run_cli("experiments.lottery", "with", "fast", "data.name=synthetic", f"criterion.name={criterion}",
                         f"seed={seed}", "-m", spec, env=env)
        assert result.returncode == 0, result.stderr
    port = free_port()
    log = open(tmp_path_factory.mktemp("omniboard") / "omniboard.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "experiments.omniboard", "-m", spec, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/sacred"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if get(f"{base}/api/v1/Runs/count?query=%7B%7D")[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail(f"Omniboard did not answer on port {port}; see {log.name}")
    yield base, db_server.client()["omniboard_db"]
    process.terminate()
    process.wait(20)


def test_api_serves_runs_columns_metrics_and_artifacts(board):
    base, db = board
    status, body = get(f"{base}/api/v1/Runs?select=_id,omniboard,config&sort_by=_id&order_by=1")
    runs = json.loads(body)
    assert status == 200 and [r["config"]["criterion"]["name"] for r in runs] == ["large_final", "random"]
    assert runs[0]["omniboard"]["tags"] == ["large_final", "original", "zero", "lenet300_100", "synthetic", "seed=1"]
    columns = {c["name"]: c["config_path"] for c in db["omniboard.custom.columns"].find()}
    assert columns["Criterion"] == "criterion.name" and columns["Mask-1"] == "treatment.mask1"
    metric = db["metrics"].find_one({"run_id": 1, "name": "val_acc"})
    assert len(metric["values"]) == 12
    artifact = db["runs"].find_one({"_id": 1})["artifacts"][1]
    status, payload = get(f"{base}/api/v1/files/download/{artifact['file_id']}/{artifact['name']}")
    assert status == 200 and len(payload) > 100_000  # round_00.pt: weights and mask of lenet300_100


def test_run_list_renders_in_headless_chromium(board):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = board
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1600,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(base)
        text = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731
        WebDriverWait(driver, 60).until(lambda _: "large_final" in text() and "random" in text())
        assert "2 experiments" in text() and "COMPLETED" in text()
        headers = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".public_fixedDataTableCell_cellContent")]
        assert {"Id", "Status", "Tags"} <= set(headers)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
    assert SCREENSHOT.stat().st_size > 20_000
