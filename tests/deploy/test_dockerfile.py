"""The container image definition, read without docker (no engine runs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ._dockerfile import dockerignore_excludes, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
STAGES = parse_dockerfile(ROOT / "Dockerfile")
BUILD, RUNTIME = STAGES[0], STAGES[-1]
IGNORE = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
COMPILERS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|build-essential|make|cmake|rustc|cargo|libpq-dev|python3-dev|"
    r"[a-z0-9.+-]+-dev)\b"
)


def test_image_is_multi_stage_on_a_pinned_python_311_slim_base() -> None:
    assert len(STAGES) >= 2
    for stage in STAGES:
        assert re.fullmatch(
            r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", stage.base
        ), stage.base
    assert RUNTIME.base == BUILD.base, "build and runtime must share the Python ABI"


def test_final_stage_runs_as_numeric_non_root_user() -> None:
    (user,) = RUNTIME.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user


def test_final_stage_entrypoint_is_python_m_service_in_exec_form() -> None:
    assert RUNTIME.exec_form("ENTRYPOINT") == ["python", "-m", "service"]
    assert RUNTIME.all("CMD") == []


def test_final_stage_installs_no_compiler_or_build_tools() -> None:
    for command in RUNTIME.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|yum|dnf)\b.*\binstall\b", command), command
        assert not re.search(r"\bpip\b.*\binstall\b", command), command
        assert not COMPILERS.search(command), command


def test_build_stage_installs_only_wheels_pinned_by_constraints() -> None:
    installs = [r for r in BUILD.all("RUN") if re.search(r"\bpip install\b", r)]
    assert installs
    for command in installs:
        for part in re.split(r"&&", command):
            if "pip install" in part:
                assert "--only-binary=:all:" in part, part
                assert "-c constraints.txt" in part, part
    assert not any(COMPILERS.search(r) for r in BUILD.all("RUN") if "apt" in r)


def test_final_stage_copies_only_the_built_venv() -> None:
    copies = RUNTIME.all("COPY")
    assert copies
    for copy in copies:
        assert copy.startswith(f"--from={BUILD.name} "), copy
        assert copy.split()[1:] == ["/opt/venv", "/opt/venv"], copy
    assert "/opt/venv/bin" in RUNTIME.env()["PATH"]


def test_final_stage_environment_ports_and_no_healthcheck() -> None:
    env = RUNTIME.env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["GRPC_LISTEN"].endswith(":50051")
    assert env["IPN_LISTEN"].endswith(":8081")
    assert env["ADMIN_LISTEN"].endswith(":9464")
    exposed = {p for line in RUNTIME.all("EXPOSE") for p in line.split()}
    assert exposed == {"50051", "8081", "9464"}
    assert all(kw != "HEALTHCHECK" for stage in STAGES for kw, _ in stage.instructions)
    assert not any(k.startswith(("DATABASE_URL", "AMAZON_PAY_", "PII_")) for k in env)


def test_build_context_holds_everything_copied_and_every_packaged_package() -> None:
    sources: list[str] = []
    for copy in BUILD.all("COPY"):
        if copy.startswith("--from"):
            continue
        sources.extend(copy.split()[:-1])
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(IGNORE, source), f"{source} is in .dockerignore"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    readme = pyproject["project"]["readme"]
    assert readme in sources
    for where in find["where"]:
        for pattern in find["include"]:
            top = pattern.rstrip("*.")
            package = (ROOT / where / top).relative_to(ROOT).as_posix()
            if (ROOT / package / "__init__.py").exists():
                assert any(package == s or package.startswith(s + "/") for s in sources), (
                    f"package {package} is packaged but never copied into the build stage"
                )


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".data/postgres/PG_VERSION",
        ".git/HEAD",
        "clients/node/node_modules/x",
        "service/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v",
        ".mypy_cache/x",
        ".ruff_cache/x",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str) -> None:
    assert dockerignore_excludes(IGNORE, path)


def test_dockerignore_matcher_applies_docker_rules() -> None:
    assert dockerignore_excludes(["**/node_modules"], "a/b/node_modules/c")
    assert dockerignore_excludes(["*.egg-info"], "x.egg-info/PKG-INFO")
    assert not dockerignore_excludes(["*.egg-info"], "service/x.egg-info")
    assert not dockerignore_excludes(["tests", "!tests/keep"], "tests/keep/a")
    assert not dockerignore_excludes(["service/x"], "service/xy")
