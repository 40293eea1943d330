"""The README as a user follows it, in order, into ONE database that lives through every command.

Each step is a test, in the README's order, against the local run database the README starts (real SecantusDB over
TCP, real processes, the command lines a user types or copies from what ticketlab printed, run exactly as printed
from the repository): smoke runs of every experiment, a population, a sweep, the study (``experiments.study``) and
every command it prints, every open-question study (``experiments.questions all``) with its figures read back, a
lottery run killed right after it printed a finished round and resumed with the command ``ticketlab runs`` prints,
and a report over everything. A step that fails names what the user would have seen.

``TINY`` is ``make journey`` (marked ``journey``: about 8 minutes on 2 cores, so apart from the default suite; CI runs
it after ``make test``); ``FULL`` is the same journey at the README's sizes (the study and the questions at their
defaults) and is also marked slow (``make test-all``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from experiments import datasets
from experiments.localdb import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

pytestmark = [pytest.mark.journey,
              pytest.mark.skipif(not datasets.DEBIAN_FASHION_MNIST.is_dir(),
                                 reason="Debian's dataset-fashion-mnist is not installed (make setup)")]


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    study: tuple[str, ...]  # the study's options (empty: its defaults)
    questions: tuple[str, ...]  # experiments.questions' options (empty: its defaults)
    run: tuple[str, ...]  # the config of the smoke runs, the sweep and the killed run
    timeout: int  # seconds a study may take


TINY = Size("tiny", ("--criteria", "large_final,random", "--seeds", "1,2", "--rounds", "1", "--iterations", "60"),
            ("--seeds", "1,2", "--iterations", "200", "--rounds", "1"), ("fast", "data.name=fashion_mnist"), 900)
FULL = Size("full", (), (), ("reduced", "data.name=fashion_mnist", "training.iterations=1000", "pruning.rounds=2"),
            7200)


@dataclasses.dataclass
class Journey:
    size: Size
    home: Path
    port: int
    env: dict
    seen: dict = dataclasses.field(default_factory=dict)  # what earlier steps printed, for later steps

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.port}:lottery"

    @property
    def home_options(self) -> list[str]:
        return ["--home", str(self.home), "--port", str(self.port)]

    def python(self, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        """``python -m ...`` as the README writes it (the venv's Python), from the repository."""
        result = subprocess.run([PYTHON, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"{shlex.join(args)} exited {result.returncode}:\n" \
                                           f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def as_printed(self, line: str, timeout: int = 600) -> subprocess.CompletedProcess:
        """A command line ticketlab printed, run exactly as printed (a shell, from the repository)."""
        result = subprocess.run(line, shell=True, cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"printed command {line!r} exited {result.returncode}:\n" \
                                       f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def db(self):
        import pymongo

        return pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=5000)["lottery"]


@pytest.fixture(scope="module", params=[TINY, pytest.param(FULL, marks=pytest.mark.slow)], ids=lambda s: s.name)
def journey(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"journey_{request.param.name}") / "home"
    env = dict(os.environ, TICKETLAB_HOME=str(home), TICKETLAB_FAILURE_DIR=str(home / "failed_runs"),
               PYTHONWARNINGS="ignore")
    env.pop("TICKETLAB_MONGO_URI", None)
    trip = Journey(request.param, home, free_port(), env)
    yield trip
    subprocess.run([PYTHON, "-m", "experiments.localdb", "stop", "--home", str(home)], cwd=ROOT, env=env,
                   capture_output=True, timeout=60)


def test_01_the_run_database_starts(journey):
    started = journey.python("-m", "experiments.localdb", "start", *journey.home_options)
    assert f"-m {journey.spec}" in started.stdout, started.stdout


def test_02_smoke_runs_of_every_experiment(journey):
    run = journey.size.run
    lottery = journey.python("-m", "experiments.lottery", "with", *run, "criterion.name=large_final",
                             "treatment.mask1=signed_constant", "seed=3", "-m", journey.spec)
    assert re.search(r"^round  0: 100\.00% left, test acc 0\.\d{4}", lottery.stdout, re.M), lottery.stdout
    documented = journey.python("-m", "experiments.lottery", "print_config", "with", "paper_conv4")
    assert "iterations = 25000" in documented.stdout
    supermask = journey.python("-m", "experiments.supermask", "with", "fast", "data.name=fashion_mnist", "seed=1",
                               "-m", journey.spec)
    assert re.search(r"supermask: test acc 0\.\d{4} \+- ", supermask.stdout), supermask.stdout
    members = journey.python("-m", "experiments.population", "-m", journey.spec, "--members",
                             "criterion.name=large_final,seed=1; criterion.name=random,seed=1; seed=2",
                             "with", *run)
    assert "population: 3 of 3 members completed" in members.stdout, members.stdout
    statuses = {doc["status"] for doc in journey.db()["runs"].find({}, {"status": 1})}
    assert statuses == {"COMPLETED"} and journey.db()["runs"].count_documents({}) == 5


def test_03_a_sweep(journey):
    logs = journey.home / "sweep_logs" / "readme"
    sweep = journey.python("-m", "experiments.sweep", "-m", journey.spec, "--criteria", "large_final,random",
                           "--seeds", "1,2,3", "--workers", "2", "--logs", str(logs), "with", *journey.size.run)
    # large_final of seeds 1 and 2 and random of seed 1 were trained as population members: the sweep sees them
    assert "6 runs in the grid, 3 already completed, 3 to run" in sweep.stdout, sweep.stdout
    assert "\r" not in sweep.stderr and len(sweep.stderr) < 5000, "a progress bar redrawn into a pipe"
    again = journey.python("-m", "experiments.sweep", "-m", journey.spec, "--criteria", "large_final,random",
                           "--seeds", "1,2,3", "--workers", "2", "--logs", str(logs), "with", *journey.size.run)
    assert "6 already completed, 0 to run" in again.stdout, again.stdout


def test_04_the_study_and_the_commands_it_prints(journey):
    study = journey.python("-m", "experiments.study", *journey.home_options, *journey.size.study,
                           timeout=journey.size.timeout)
    report = journey.home / "study_report" / "report.md"
    assert report.is_file() and "[criteria] large_final" in study.stdout, study.stdout[-3000:]
    text = report.read_text()
    assert "differ in more than" not in text, "the study's report pooled or refused runs of other settings"
    for figure in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        _is_a_figure(report.parent / figure)
    printed = study.stdout.split("browse and analyse the runs", 1)[1].splitlines()[1:]
    commands = {name: next(line.strip() for line in printed if marker in line)
                for name, marker in (("omniboard", "experiments.omniboard"), ("runs", "analysis runs"),
                                     ("report", "analysis report"), ("incense", "incense"), ("stop", "stop the"))}
    assert " --mongo " not in commands["runs"] + commands["report"], "the study printed the legacy --mongo form"
    assert not commands["runs"].startswith("python "), "a bare python lacks ticketlab's packages"
    listed = journey.as_printed(commands["runs"])
    assert "large_final" in listed.stdout and "supermask runs" in listed.stdout
    redone = journey.as_printed(commands["report"])
    assert (journey.home / "analysis_report" / "report.md").read_text().count("![") >= 2, redone.stdout
    loader = commands["incense"].split("incense: ", 1)[1]
    opened = journey.python("-c", f"import incense; loader = {loader}; print(loader.find_by_id(1).config.seed)")
    assert opened.stdout.strip() == "3"
    _omniboard_as_printed(journey, commands["omniboard"])
    journey.as_printed(commands["stop"].split("stop the database: ", 1)[1])
    restarted = journey.python("-m", "experiments.localdb", "start", *journey.home_options)
    assert f"-m {journey.spec}" in restarted.stdout  # its data stay (the next steps read them)


def _omniboard_as_printed(journey: Journey, line: str) -> None:
    if not (ROOT / "node_modules" / "omniboard").is_dir():
        return  # make setup installs it; without npm it is the one step a user cannot take
    port = free_port()
    command = shlex.split(line.split("#", 1)[0]) + ["--port", str(port)]
    with open(journey.home / "omniboard.log", "w") as log:
        board = subprocess.Popen(command, cwd=ROOT, env=journey.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            link = re.search(r"(http://\S+)", (journey.home / "omniboard.log").read_text())
            if link:
                try:
                    with urllib.request.urlopen(f"{link.group(1)}/api/v1/Runs/count?query=%7B%7D",
                                                timeout=5) as response:
                        assert response.status == 200 and b'"count"' in response.read()
                        return
                except OSError:
                    pass
            assert board.poll() is None, (journey.home / "omniboard.log").read_text()
            time.sleep(0.5)
        pytest.fail(f"Omniboard did not answer: {(journey.home / 'omniboard.log').read_text()}")
    finally:
        board.terminate()
        board.wait(20)


def _is_a_figure(path: Path) -> None:
    """A PNG that opens and is not blank."""
    import matplotlib.image

    assert path.is_file(), f"the report links a figure that does not exist: {path}"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 0.01, path


def test_05_every_open_question_study(journey):
    done = journey.python("-m", "experiments.questions", "all", *journey.home_options, *journey.size.questions,
                          timeout=journey.size.timeout * 2)
    for name in ("q9", "q8", "q7", "scaling"):
        report = journey.home / "questions" / name / "report.md"
        assert f"{name} report in {report}" in done.stdout, done.stdout[-3000:]
        text = report.read_text()
        assert "no completed runs yet" not in text and "no comparison possible" not in text, text
        figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
        assert figures, f"{name}: no figure in its report"
        for figure in figures:
            _is_a_figure(report.parent / figure)
    # a table cell is the mean over the runs in the database
    q8 = (journey.home / "questions" / "q8" / "report.md").read_text()
    scratch = [doc["info"]["test_acc_mean"] for doc in journey.db()["runs"].find(
        {"experiment.name": "supermask", "config.supermask.start": "scratch", "status": "COMPLETED",
         "config.training.iterations": _questions_iterations(journey)})]
    assert len(scratch) >= 2 and f"{sum(scratch) / len(scratch):.4g}" in q8
    logs = sorted(p.name for p in (journey.home / "questions_logs" / "q8").iterdir())
    assert logs == ["supermask-start=scratch", "supermask-start_criterion=large_final+random-start=criterion-"
                                               "start_percent=30.0"], logs


def _questions_iterations(journey: Journey) -> int:
    options = journey.size.questions
    return int(options[options.index("--iterations") + 1]) if "--iterations" in options else 1500


def test_06_a_killed_run_keeps_its_printed_rounds_and_resumes(journey):
    config = [*journey.size.run, "criterion.name=large_init", "seed=5", "pruning.rounds=3"]
    command = [PYTHON, "-m", "experiments.lottery", "with", *config, "-m", journey.spec]
    run = subprocess.Popen(command, cwd=ROOT, env=dict(journey.env, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in run.stdout:
        lines.append(line)
        if line.startswith("round  1:"):
            run.send_signal(signal.SIGKILL)  # right after the line: the user saw round 1 finish
            break
    run.wait(60)
    assert run.returncode == -signal.SIGKILL, "".join(lines)
    killed = journey.db()["runs"].find_one({"config.criterion.name": "large_init", "config.seed": 5})
    assert [r["round"] for r in killed["info"]["rounds"]] == [0, 1], "a round printed as finished is not stored"
    assert f"{killed['info']['rounds'][1]['test_acc']:.4f}" in lines[-1]

    listing = journey.python("-m", "ticketlab", "runs", "-m", journey.spec)
    row = next(line for line in listing.stdout.splitlines() if re.match(rf"^{killed['_id']}\s", line))
    assert "RUNNING" in row and "large_init" in row, row
    resume = next(line for line in listing.stdout.splitlines() if f"--resume {killed['_id']}" in line)
    resumed = journey.as_printed(resume)
    assert f"resuming run {killed['_id']} after round 1" in resumed.stdout, resumed.stdout
    done = journey.db()["runs"].find_one({"_id": killed["_id"]})
    assert done["status"] == "COMPLETED" and [r["round"] for r in done["info"]["rounds"]] == [0, 1, 2, 3]
    # the same point trained without a kill, in a database of its own: the same rounds, bit for bit (CPU)
    journey.python("-m", "experiments.lottery", "with", *config, "-m", journey.spec.replace(":lottery", ":reference"))
    reference = journey.db().client["reference"]["runs"].find_one({})
    assert [r["final_hash"] for r in done["info"]["rounds"]] == [r["final_hash"] for r in reference["info"]["rounds"]]


def test_07_a_report_over_everything(journey):
    out = journey.home / "everything"
    report = journey.python("-m", "ticketlab", "report", "-m", journey.spec, "--out", str(out))
    text = (out / "report.md").read_text()
    assert "Learned Supermasks" in text and "### Mask criteria" in text, text[:3000]
    for figure in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        _is_a_figure(out / figure)
    assert "report written to" in report.stdout
    # a key that only lottery runs have selects lottery runs; a key no run has is refused in one line
    study = journey.size.study
    study_rounds = study[study.index("--rounds") + 1] if "--rounds" in study else "8"
    rounds = journey.python("-m", "ticketlab", "report", "-m", journey.spec, "--where", f"rounds={study_rounds}",
                            "--out", str(journey.home / "study_rounds"))
    assert "report written to" in rounds.stdout
    unknown = journey.python("-m", "ticketlab", "report", "-m", journey.spec, "--where", "colour=red", "--out",
                             str(journey.home / "nothing"), check=False)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "unknown key 'colour'" in unknown.stderr
    valid = unknown.stderr.split("use a column (", 1)[1].split(")", 1)[0].split(", ")
    assert "colour" not in valid and {"rounds", "criterion", "seed"} <= set(valid), unknown.stderr
    helped = journey.python("-m", "ticketlab", "runs", "--help")
    assert helped.stdout.startswith("usage: ticketlab runs"), helped.stdout
