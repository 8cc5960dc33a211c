"""The deployment files: compose topology, environment example, Dockerfile stages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_defines_the_hospital_topology() -> None:
    services = _compose()["services"]
    assert {"postgres", "migrate", "app", "scheduler", "worker"} <= set(services)
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["command"] == ["lvt", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["command"][:2] == ["dask", "worker"]
    assert "replicas" in services["worker"]["deploy"]
    # app and workers share the image store
    shared = {v.split(":")[0] for v in services["app"]["volumes"]}
    assert shared & {v.split(":")[0] for v in services["worker"]["volumes"]}
    assert "pgdata" in _compose()["volumes"]


def test_no_secret_is_committed() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD:?" in text and "LVT_SECRET_KEY:?" in text
    example = (REPO / ".env.example").read_text()
    assert "change-me" in example
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_dockerfile_is_multistage_with_cpu_torch_default() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2
    assert "whl/cpu" in text and "ARG TORCH_INDEX" in text


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_validates() -> None:
    done = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr


def _lvt_commands() -> list[list[str]]:
    """Every `lvt …` command line the compose services and the image run."""
    commands = [s["command"] for s in _compose()["services"].values()
                if isinstance(s.get("command"), list) and s["command"][:1] == ["lvt"]]
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD ["):
            commands.append(yaml.safe_load(line[len("CMD "):]))
    return commands


def test_every_lvt_command_of_the_deployment_parses() -> None:
    """The compose app and the image ran `lvt app --address 0.0.0.0`, an option `lvt app` does
    not have: the container exited at once and restarted for ever."""
    import typer

    from app.cli.main import app

    root = typer.main.get_command(app)
    commands = _lvt_commands()
    assert ["lvt", "app", "--port", "8501", "--host", "0.0.0.0"] in commands and len(commands) >= 3
    for command in commands:
        name, rest, node = "lvt", list(command[1:]), root
        while hasattr(node, "get_command"):  # a group: descend by the sub-command's name
            name, rest = rest[0], rest[1:]
            node = node.get_command(node.context_class(node), name)
            assert node is not None, f"{command}: no sub-command {name!r}"
        node.make_context(name, rest)  # parses every option: an unknown one raises


def test_every_lvt_variable_the_deployment_sets_is_a_setting() -> None:
    """Compose gave the app LVT_DASK_SCHEDULER, which no setting read: the app's batches ran
    in-process beside Streamlit while the Dask workers sat idle."""
    from app.settings import Settings

    known = {f"LVT_{name.upper()}" for name in Settings.model_fields}
    services = _compose()["services"]
    variables = set(_compose().get("x-lvt-env", {}) or {})
    for service in services.values():
        environment = service.get("environment") or {}
        variables |= set(environment if isinstance(environment, dict) else (e.split("=")[0] for e in environment))
    set_here = {v for v in variables if v.startswith("LVT_")}
    assert "LVT_DASK_SCHEDULER" in set_here and set_here <= known, sorted(set_here - known)
