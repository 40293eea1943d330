"""docker/: no Docker engine runs here, so the compose file is parsed and checked for consistency."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
ENV_EXAMPLE = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))


def test_services_images_and_builds():
    services = COMPOSE["services"]
    assert set(services) == {"mongo", "omniboard", "runner", "dask-scheduler", "dask-worker"}
    assert re.fullmatch(r"mongo:7\.\d+\.\d+", services["mongo"]["image"]), "MongoDB pinned to a 7.x release"
    for name in ("omniboard", "runner", "dask-scheduler", "dask-worker"):
        build = services[name]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    assert "package-lock.json" in (DOCKER / "omniboard.Dockerfile").read_text()


def test_ports_bound_to_loopback_and_data_on_named_volumes():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in COMPOSE["volumes"], f"{name} mounts {source}, not a named volume"


def test_health_checks_and_startup_order():
    services = COMPOSE["services"]
    assert "healthcheck" in services["mongo"] and "healthcheck" in services["omniboard"]
    for name in ("omniboard", "runner"):
        assert services[name]["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_every_variable_is_in_env_example_without_secrets():
    text = (DOCKER / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used <= set(ENV_EXAMPLE), f"not in .env.example: {used - set(ENV_EXAMPLE)}"
    assert ENV_EXAMPLE["MONGO_ROOT_PASSWORD"] == "change-me"
    assert "docker/.env" in (DOCKER.parent / ".gitignore").read_text().split()


def test_uris_authenticate_against_admin():
    text = (DOCKER / "docker-compose.yml").read_text()
    uris = re.findall(r"mongodb://[^\"\s]+", text)
    assert len(uris) == 3 and all("authSource=admin" in uri for uri in uris)


def test_no_password_on_a_command_line():
    """A container's command line shows in ps on the host: the URIs with a password are environment values."""
    for name, service in COMPOSE["services"].items():
        command = service.get("command") or []
        assert "MONGO_ROOT_PASSWORD" not in " ".join(command if isinstance(command, list) else [command]), name
    assert "MONGO_ROOT_PASSWORD" in COMPOSE["services"]["omniboard"]["environment"]["MONGO_URI"]


def test_runner_command_is_a_real_entry_point():
    runner = COMPOSE["services"]["runner"]
    module = runner["command"][0]
    assert importlib.util.find_spec(module) is not None, module
    source = Path(importlib.util.find_spec(module).origin).read_text()
    assert 'if __name__ == "__main__":' in source
    assert "TICKETLAB_MONGO_URI" in runner["environment"]
    assert '"-m"' in (DOCKER / "Dockerfile").read_text().replace("'", '"')  # ENTRYPOINT python -m


def test_dask_services_share_the_runners_database_and_image():
    services = COMPOSE["services"]
    scheduler, worker, runner = services["dask-scheduler"], services["dask-worker"], services["runner"]
    assert scheduler["build"] == worker["build"] == runner["build"], "workers run the runner's code"
    assert worker["environment"]["TICKETLAB_MONGO_URI"] == runner["environment"]["TICKETLAB_MONGO_URI"]
    assert "runner-data:/data/ticketlab" in worker["volumes"]
    assert worker["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert worker["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    assert "healthcheck" in scheduler
    port = scheduler["command"][scheduler["command"].index("--port") + 1]
    assert f"tcp://dask-scheduler:{port}" in worker["command"]
    assert any(p.endswith(f":{port}") for p in scheduler["ports"])
    assert worker["command"][worker["command"].index("--nthreads") + 1] == "1"


def test_dask_commands_are_real_entry_points():
    for name in ("dask-scheduler", "dask-worker"):
        command = COMPOSE["services"][name]["command"]  # after the image's ENTRYPOINT python -m
        assert command[0] == "dask" and importlib.util.find_spec("dask.__main__") is not None
        assert command[1] in {"scheduler", "worker"}
        help_text = subprocess.run([sys.executable, "-m", "dask", command[1], "--help"], capture_output=True,
                                   text=True, timeout=60).stdout
        for flag in (part for part in command if part.startswith("--")):
            assert flag in help_text, f"{name}: dask {command[1]} has no {flag}"
    from experiments import sweep

    assert "tcp://dask-scheduler:8786" in (DOCKER / "docker-compose.yml").read_text()
    assert "dask" in sweep.EXECUTORS
