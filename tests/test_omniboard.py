"""Omniboard (the pinned npm package) serving a database written by real fast runs (lottery and Supermask), driven
by Debian's headless Chromium through chromedriver at 1600 x 1200, as a user sees it: the link the command prints
opens the run list; the first screen's Tags cells show every tag of each run in full, and no two runs' tags are
the same; after the README's one-time column reordering the Criterion, Mask-1, Mask-0, Start, accuracy, Density
and Result cells hold the runs' values. A database with authentication is reached with its password given as
``-m URI``, ``--mu URI`` or ``$TICKETLAB_MONGO_URI``, and the password is in no process's command line or
environment. Screenshots go to build/screenshots/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pymongo
import pymongo.errors
import pytest

from experiments import omniboard
from ticketlab import dbspec
from experiments.localdb import DatabaseServer, free_port, server_executable
from experiments.observers import ResilientMongoObserver
from tests.conftest import run_cli
from ticketlab import schema

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = omniboard.ROOT / "build" / "screenshots"
README = omniboard.ROOT / "README.md"
MISSING = [what for what, present in (
    ("node", shutil.which("node") is not None),
    ("Omniboard in node_modules (make setup)", (omniboard.ROOT / "node_modules" / "omniboard").is_dir()),
    ("chromium (apt-get install chromium)", CHROMIUM.exists()),
    ("chromedriver (apt-get install chromium-driver)", CHROMEDRIVER.exists()),
) if not present]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"missing: {', '.join(MISSING)}")
LOTTERY = {1: ("large_final", 1), 2: ("random", 2)}  # run id: (criterion, seed)
SUPERMASK = {  # run id: (config updates, the tags a user sees, the Start column)
    3: (["supermask.start=scratch"], ["supermask", "scratch", "synthetic", "lenet300_100/seed=1"], "scratch"),
    4: (["supermask.start=criterion", "supermask.start_criterion=large_final", "supermask.start_percent=30"],
        ["supermask", "from large_final/30%", "synthetic", "lenet300_100/seed=1"], "criterion"),
    5: (["supermask.start=run", "supermask.start_run=1", "supermask.start_round=1", "supermask.signed_constant=True",
         "supermask.rescale=True"], ["supermask/SC/rescale", "from run 1/round 1", "synthetic", "lenet300_100/seed=1"],
        "run"),
    6: (["supermask.start=criterion", "supermask.start_criterion=large_init_large_final"],  # the longest name
        ["supermask", "large_init_large_final", "synthetic", "lenet300_100/seed=1"], "criterion"),
}
RUNS = set(LOTTERY) | set(SUPERMASK)


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def start_omniboard(args: list[str], log_path: Path, env=None) -> tuple[subprocess.Popen, str]:
    """``python -m experiments.omniboard ARGS --port P`` as a user starts it; returns the process (Omniboard itself,
    once it answers: the command becomes it) and the link it printed."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "experiments.omniboard", *args, "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline, link = time.monotonic() + 90, None
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"(http://\S+)", log_path.read_text())
        if found:
            link = found.group(1)
            try:
                if get(f"{link}/api/v1/Runs/count?query=%7B%7D")[0] == 200:
                    break
            except OSError:
                pass
        time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail(f"Omniboard did not answer on port {port}:\n{log_path.read_text()}")
    assert link == f"http://127.0.0.1:{port}/sacred"  # no trailing slash: with one the app never loads
    return process, link


@pytest.fixture(scope="module")
def board(db_server, tmp_path_factory):
    """Fast lottery and Supermask runs in a fresh database and Omniboard serving it; yields (the printed link,
    database)."""
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")))
    spec = f"{db_server.address}:omniboard_db"
    for criterion, seed in LOTTERY.values():
        result = run_cli("experiments.lottery", "with", "fast", "data.name=synthetic", f"criterion.name={criterion}",
                         f"seed={seed}", "-m", spec, env=env)
        assert result.returncode == 0, result.stderr
    for updates, _, _ in SUPERMASK.values():
        result = run_cli("experiments.supermask", "with", "fast", "data.name=synthetic", "seed=1",
                         "supermask.sign_draws=0", *updates, "-m", spec, env=env)
        assert result.returncode == 0, result.stderr
    process, link = start_omniboard(["-m", spec], tmp_path_factory.mktemp("omniboard") / "omniboard.log")
    try:
        yield link, db_server.client()["omniboard_db"]
    finally:
        process.terminate()
        process.wait(20)


def test_api_serves_runs_columns_metrics_and_artifacts(board):
    base, db = board
    # what the run list asks for a custom column outside config (Density: info.expected_density)
    status, body = get(f"{base}/api/v1/Runs?select=_id,omniboard,config,info.expected_density&sort_by=_id"
                       f"&order_by=1")
    runs = {r["_id"]: r for r in json.loads(body)}
    assert status == 200 and set(runs) == RUNS
    assert [runs[i]["config"]["criterion"]["name"] for i in LOTTERY] == ["large_final", "random"]
    assert runs[1]["omniboard"]["tags"] == ["large_final", "original/zero", "synthetic", "lenet300_100/seed=1"]
    assert {i: runs[i]["omniboard"]["tags"] for i in SUPERMASK} == {i: shown for i, (_, shown, _) in SUPERMASK.items()}
    assert all(0 < runs[i]["info"]["expected_density"] < 1 for i in SUPERMASK)
    assert all(runs[i].get("info") == {} for i in LOTTERY)  # no such key: the lottery rows' Density stays empty
    columns = {c["name"]: c["config_path"] for c in db["omniboard.custom.columns"].find()}
    assert columns["Criterion"] == "config.criterion.name" and columns["Mask-1"] == "config.treatment.mask1"
    assert columns["Start"] == "config.supermask.start" and columns["Density"] == "info.expected_density"
    assert db["omniboard.settings"].find_one({"name": "row_height"})["value"] == schema.ROW_HEIGHT
    # the learning curves and per-round accuracies share one axis in the Metrics Plot: no 0-100 series among them
    metrics = {m["name"]: m["values"] for m in db["metrics"].find({"run_id": 1})}
    assert set(metrics) == {"train_loss", "val_loss", "val_acc", "round.test_acc", "round.untrained_test_acc"}
    assert len(metrics["val_acc"]) == 12 and max(max(v) for v in metrics.values()) < 5
    artifact = db["runs"].find_one({"_id": 1})["artifacts"][1]
    status, payload = get(f"{base}/api/v1/files/download/{artifact['file_id']}/{artifact['name']}")
    assert status == 200 and len(payload) > 100_000  # round_00.pt: weights and mask of lenet300_100


def test_older_runs_are_retagged_and_empty_columns_repaired(db_server, db_name):
    """What an older ticketlab left: one tag per value (the Tags cell cut them), columns without ``config.``."""
    db = db_server.client()[db_name]
    config = {"criterion": {"name": "large_final"}, "treatment": {"mask1": "original", "mask0": "zero"},
              "arch": {"name": "lenet300_100"}, "data": {"name": "fashion_mnist"}, "seed": 3}
    old = ["large_final", "original", "zero", "lenet300_100", "fashion_mnist", "seed=3"]
    supermask = {"supermask": {"start": "criterion", "start_criterion": "random", "start_percent": 12.5,
                               "signed_constant": False, "rescale": True},
                 "arch": {"name": "conv6"}, "data": {"name": "cifar10"}, "seed": 5}
    db["runs"].insert_many([{"_id": 1, "config": config, "omniboard": {"tags": old + ["mine"]}},
                            {"_id": 2, "config": dict(config, seed=4)},
                            {"_id": 3, "config": supermask, "experiment": {"name": "supermask"},  # as lottery's
                             "omniboard": {"tags": ["cifar10", "conv6/seed=5", "mine"]}}])
    db["omniboard.custom.columns"].insert_many([{"name": "Criterion", "config_path": "criterion.name"},
                                                {"name": "Arch", "config_path": "config.arch.name_mine"}])
    db["omniboard.settings"].insert_one({"name": "row_height", "value": 70})
    omniboard.ensure_columns(db)
    omniboard.ensure_row_height(db)
    assert omniboard.ensure_tags(db) == 3 and omniboard.ensure_tags(db) == 0  # idempotent
    tagged = {run["_id"]: run["omniboard"]["tags"] for run in db["runs"].find()}
    assert tagged == {1: ["large_final", "original/zero", "fashion_mnist", "lenet300_100/seed=3", "mine"],
                      2: ["large_final", "original/zero", "fashion_mnist", "lenet300_100/seed=4"],
                      3: ["supermask/rescale", "from random/12.5%", "cifar10", "conv6/seed=5", "mine"]}
    columns = {c["name"]: c["config_path"] for c in db["omniboard.custom.columns"].find()}
    assert columns["Criterion"] == "config.criterion.name"  # repaired
    assert columns["Arch"] == "config.arch.name_mine"  # the user's own choice stays
    assert set(columns) == {name for name, _ in schema.CUSTOM_COLUMNS}
    assert db["omniboard.settings"].find_one({"name": "row_height"})["value"] == schema.ROW_HEIGHT
    long = ResilientMongoObserver.tags(dict(config, treatment={"mask1": "signed_reshuffle",
                                                               "mask0": "zero_if_toward_zero"}))
    assert long[1:3] == ["signed_reshuffle", "zero_if_toward_zero"]  # a pair too long for one tag: two tags
    # a Supermask's start too long for one tag drops its "from", then its percent: four tags, whatever the start
    starts = {"start": "criterion", "start_criterion": "large_final", "start_percent": 12.5}
    assert ResilientMongoObserver.tags(dict(supermask, supermask=starts), "supermask")[:2] == \
           ["supermask", "large_final/12.5%"]
    for criterion in ("magnitude_increase", "large_init_large_final"):  # the browser shows the longest in full
        starts = {"start": "criterion", "start_criterion": criterion, "start_percent": 30.0}
        assert ResilientMongoObserver.tags(dict(supermask, supermask=starts), "supermask")[:2] == \
               ["supermask", criterion]
    starts = {"start": "run", "start_run": 12345, "start_round": 3, "signed_constant": True, "rescale": True}
    assert ResilientMongoObserver.tags(dict(supermask, supermask=starts), "supermask") == \
           ["supermask/SC/rescale", "run 12345/round 3", "cifar10", "conv6/seed=5"]


# The run list as a user reads it: per body row, the text of each cell under its header's title, whether that text
# is shown in full (not cut by its cell's edge) and for the Tags cell each tag chip's text and whether it is shown
# in full (not cut by its chip, its cell or the window).
READ_TABLE = """
const headers = [...document.querySelectorAll('.public_fixedDataTable_header .public_fixedDataTableCell_main')]
  .map(h => ({text: h.innerText.trim(), left: h.getBoundingClientRect().left}));
const rows = [...document.querySelectorAll('.public_fixedDataTable_bodyRow')];
return rows.map(row => {
  const cells = {};
  for (const cell of row.querySelectorAll('.public_fixedDataTableCell_main')) {
    const box = cell.getBoundingClientRect();
    const header = headers.find(h => Math.abs(h.left - box.left) < 2);
    if (!header || !header.text) continue;
    const chips = [...cell.querySelectorAll('.select-cell [class*=multiValue]')].map(chip => {
      const label = chip.firstElementChild, r = chip.getBoundingClientRect();
      return {text: label.textContent, full: label.scrollWidth <= label.clientWidth && r.top >= box.top - 0.5
              && r.bottom <= box.bottom + 0.5 && r.right <= box.right && r.right <= window.innerWidth};
    });
    let right = box.left;  // where the cell's text ends, had it room
    for (const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT); walk.nextNode();) {
      const range = document.createRange();
      range.selectNodeContents(walk.currentNode);
      right = Math.max(right, range.getBoundingClientRect().right);
    }
    cells[header.text] = {text: cell.innerText.trim(), chips: chips, visible: box.right <= window.innerWidth,
                          full: right <= box.right + 0.5};
  }
  return cells;
});
"""


def _readme_snippet() -> str:
    """The README's JavaScript that brings ticketlab's columns to the front (the user pastes it once)."""
    section = README.read_text().split("## Browsing runs: Omniboard", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```js\n(.*?)```", section, re.S).group(1)


def test_run_list_in_headless_chromium(board):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    link, db = board
    tags = {run["_id"]: run["omniboard"]["tags"] for run in db["runs"].find()}
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1600,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def table(lottery: set[str], supermask: set[str] = frozenset()) -> dict[int, dict]:
        """The body rows by run id, once the lottery rows have the ``lottery`` columns filled, the Supermask rows
        the ``supermask`` ones."""
        def ready(_):
            rows = driver.execute_script(READ_TABLE)
            by_id = {int(r["Id"]["text"]): r for r in rows if r.get("Id", {}).get("text", "").isdigit()}
            done = set(by_id) == RUNS and all(by_id[i].get(c, {}).get("text") for i in LOTTERY for c in lottery) \
                and all(by_id[i].get(c, {}).get("text") for i in SUPERMASK for c in supermask)
            return by_id if done else False
        return WebDriverWait(driver, 60).until(ready)

    def number(cell: dict) -> float:
        return float(cell["text"])

    try:
        driver.get(link)  # exactly the printed link
        WebDriverWait(driver, 60).until(lambda _: f"{len(RUNS)} experiments" in
                                        driver.find_element(By.TAG_NAME, "body").text)
        # the first screen, as Omniboard first lays it out: the Tags cells tell the runs apart
        first = table({"Tags", "Status"}, {"Tags", "Status"})
        driver.save_screenshot(str(SCREENSHOTS / "omniboard_first_screen.png"))
        for run_id, row in first.items():
            chips = row["Tags"]["chips"]
            assert [c["text"] for c in chips] == tags[run_id] and row["Tags"]["visible"]
            assert all(c["full"] for c in chips), f"run {run_id}: tags cut in the Tags cell: {chips}"
            assert row["Status"]["text"] == "COMPLETED"
        assert {i: [c["text"] for c in first[i]["Tags"]["chips"]] for i in SUPERMASK} == \
               {i: shown for i, (_, shown, _) in SUPERMASK.items()}
        assert len({tuple(tags[i]) for i in RUNS}) == len(RUNS)  # no two runs look alike

        # the README's one-time reordering brings ticketlab's columns onto the first screen
        driver.execute_script(_readme_snippet())
        lottery = {"Criterion", "Mask-1", "Mask-0", "Best test acc", "Best untrained acc", "Result", "Status"}
        supermask = {"Start", "Density", "Result", "Status"}
        rows = table(lottery, supermask)
        driver.save_screenshot(str(SCREENSHOTS / "omniboard_ticketlab_columns.png"))
        for run_id, row in rows.items():
            assert all(row[c]["visible"] for c in lottery | supermask | {"Tags"}), row
            assert all(row[c]["full"] for c in lottery | supermask), (run_id, row)  # no value cut by its cell
            assert [c["text"] for c in row["Tags"]["chips"]] == tags[run_id]
            empty = supermask - lottery if run_id in LOTTERY else lottery - supermask
            assert all(row[c]["text"] == "" for c in empty), (run_id, row)  # the other kind's columns
        for run_id, (criterion, _) in LOTTERY.items():
            row = rows[run_id]
            assert (row["Criterion"]["text"], row["Mask-1"]["text"], row["Mask-0"]["text"]) == \
                   (criterion, "original", "zero")
            accuracies = [number(row[c]) for c in ("Best test acc", "Best untrained acc", "Result")]
            assert all(0 <= a <= 1 for a in accuracies) and accuracies[0] >= accuracies[2]
        for run_id, (_, _, start) in SUPERMASK.items():
            row, info = rows[run_id], db["runs"].find_one({"_id": run_id})["info"]
            assert row["Start"]["text"] == start
            assert abs(number(row["Density"]) - info["expected_density"]) < 5e-3, (row["Density"], info)
            assert abs(number(row["Result"]) - info["test_acc_mean"]) < 5e-3, (row["Result"], info)
        # a lottery run's Metrics Plot (the first tab under an expanded row): every metric on one axis, none off
        # its scale
        order = [int(r["Id"]["text"]) for r in driver.execute_script(READ_TABLE) if r.get("Id")]
        expander = driver.find_element(By.CSS_SELECTOR, f"a[test-attr='cell-row_expander-{order.index(2)}']")
        expander.click()
        plotted = WebDriverWait(driver, 60).until(lambda _: driver.execute_script(
            "const plot = document.querySelector('.js-plotly-plot');"
            "return plot && plot.data && plot.data.length ? plot.data.filter(t => !t.name.endsWith('.unsmoothed'))"
            ".map(t => [t.name, Math.min(...t.y), Math.max(...t.y)]) : false;"))
        plot = driver.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
        driver.execute_script("arguments[0].scrollIntoView()", plot)
        plot.screenshot(str(SCREENSHOTS / "omniboard_metrics_plot.png"))
        assert {name for name, *_ in plotted} == {"train_loss", "val_loss", "val_acc", "round.test_acc",
                                                  "round.untrained_test_acc"}
        assert all(0 <= low and high <= (1 if "acc" in name else 3) for name, low, high in plotted), plotted
        # Arch, Data, Rounds and Iterations follow, off the first screen: scroll them into view by widening (and
        # heightening: every row in view)
        driver.execute_script("arguments[0].click()", expander)  # folded again
        driver.set_window_size(6000, 1600)
        rows = table({"Arch", "Data", "Rounds", "Iterations"}, {"Arch", "Data", "Iterations"})
        for run_id, row in rows.items():
            assert (row["Arch"]["text"], row["Data"]["text"], row["Rounds"]["text"], row["Iterations"]["text"]) \
                   == ("lenet300_100", "synthetic", "2" if run_id in LOTTERY else "", "100")
    finally:
        driver.quit()
    assert (SCREENSHOTS / "omniboard_first_screen.png").stat().st_size > 20_000


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A SecantusDB server that requires authentication (SCRAM-SHA-256), with one user; yields (address, user,
    password): a user is created on the server started without authentication, which is then restarted with
    ``--auth``."""
    storage = tmp_path_factory.mktemp("secantus_auth") / "data"
    user, password = "lab", f"pw-{uuid.uuid4().hex}"  # a string found nowhere else on this machine
    plain = DatabaseServer(storage).start()
    with plain.client() as client:
        client.admin.command("createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}])
    plain.stop()
    with open(storage.with_suffix(".log"), "ab") as log:
        process = subprocess.Popen([server_executable(), "--host", "127.0.0.1", "--port", str(plain.port),
                                    "--storage-path", str(storage), "--log-level", "WARNING", "--auth"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    uri = f"mongodb://{user}:{password}@{plain.address}/admin"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with pymongo.MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                assert time.monotonic() < deadline and process.poll() is None, "secantusd-py --auth did not start"
                time.sleep(0.2)
        yield plain.address, user, password
    finally:
        process.terminate()
        process.wait(20)


def processes_showing(secret: str) -> list[str]:
    """Every process of this machine whose command line or environment (``/proc/PID/cmdline``, ``environ``: what
    ``ps`` and the same user can read) holds ``secret``."""
    found = []
    for proc in Path("/proc").iterdir():
        for name in ("cmdline", "environ") if proc.name.isdigit() else ():
            try:
                if secret.encode() in (proc / name).read_bytes():
                    found.append(f"{proc.name}/{name}")
            except OSError:  # gone meanwhile, or another user's
                pass
    return found


@pytest.mark.parametrize("form", ["-m URI", "TICKETLAB_MONGO_URI", "--mu URI"])
def test_password_reaches_omniboard_through_no_command_line(auth_server, tmp_path, form):
    """Omniboard on a database that requires a password, named the way every ticketlab command names one (and by
    the deprecated ``--mu``): it serves that database's runs, while the password is in no process's command line
    or environment, Omniboard's own included."""
    address, user, password = auth_server
    uri = f"mongodb://{user}:{password}@{address}/authdb?authSource=admin"
    with pymongo.MongoClient(uri) as client:
        client["authdb"]["runs"].delete_many({})
        client["authdb"]["runs"].insert_many([{"_id": i, "config": {"seed": i}, "status": "COMPLETED"}
                                              for i in (1, 2, 3)])
    with pytest.raises(pymongo.errors.OperationFailure):  # the server does refuse a client without the password
        with pymongo.MongoClient(f"mongodb://{address}", serverSelectionTimeoutMS=2000) as client:
            client["authdb"]["runs"].count_documents({})
    env = {name: value for name, value in os.environ.items() if name != dbspec.URI_VARIABLE}
    args = {"-m URI": ["-m", uri], "--mu URI": ["--mu", uri], "TICKETLAB_MONGO_URI": []}[form]
    if form == "TICKETLAB_MONGO_URI":
        env[dbspec.URI_VARIABLE] = uri
    process, link = start_omniboard(args, tmp_path / "omniboard.log", env=env)
    try:
        assert json.loads(get(f"{link}/api/v1/Runs/count?query=%7B%7D")[1]) == {"count": 3}
        assert [d["name"] for d in json.loads(get(f"{link.rsplit('/', 1)[0]}/api/v1/databases")[1])] == ["authdb"]
        # the process started is Omniboard (the command became it), and it shows the password nowhere
        command = (Path("/proc") / str(process.pid) / "cmdline").read_bytes().split(b"\0")
        assert command[0].endswith(b"node") and command[-2].endswith(b"omniboard/dist/start.js"), command
        assert processes_showing(password) == []
        printed = (tmp_path / "omniboard.log").read_text()
        assert password not in printed and f"mongodb://{user}:***@{address}" in printed
    finally:
        process.terminate()
        process.wait(20)


def test_wrong_password_stops_in_one_line(auth_server):
    address, user, password = auth_server
    pw = f"{password}-wrong"  # a wrong password (no literal one in the repository: tests/faults scans for them)
    wrong = run_cli("experiments.omniboard", "-m", f"mongodb://{user}:{pw}@{address}/authdb?authSource=admin",
                    "--port", str(free_port()), timeout=60)
    assert wrong.returncode == 2 and wrong.stdout == "" and pw not in wrong.stderr
    assert wrong.stderr.count("\n") == 1 and "authentication failed" in wrong.stderr.lower(), wrong.stderr
