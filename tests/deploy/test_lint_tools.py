"""The linters `make lint` runs over the deployment files: hadolint on the Dockerfile and
scripts/check_manifests.py (real `kubectl kustomize` + kubernetes-validate). Each is shown to pass
on the repository and to fail on a broken input, so a green `make lint` means something."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _check_manifests() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_manifests", ROOT / "scripts" / "check_manifests.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cm() -> ModuleType:
    return _check_manifests()


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = _hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_an_unpinned_base_and_apt_install(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3008" in result.stdout  # unpinned apt package


def test_every_overlay_renders_with_kubectl_and_validates(cm: ModuleType) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_manifests.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for overlay in ("sandbox", "production"):
        for version in cm.KUBERNETES_VERSIONS:
            assert f"k8s-check: {overlay}: " in result.stdout
            assert re.search(
                rf"{overlay}: \d+ objects, Kubernetes {re.escape(version)}: ok", result.stdout
            )


def _deployment(cm: ModuleType) -> dict[str, Any]:
    objects = cm.render(ROOT / "deploy" / "k8s" / "overlays" / "sandbox")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    return copy.deepcopy(deployment)


def test_an_unknown_field_in_a_rendered_object_is_an_error(cm: ModuleType) -> None:
    deployment = _deployment(cm)
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicie"] = "Always"
    errors, custom = cm.check([deployment], cm.KUBERNETES_VERSIONS[0])
    assert custom == []
    assert len(errors) == 1
    assert "imagePullPolicie" in errors[0]


def test_a_wrong_type_in_a_rendered_object_is_an_error(cm: ModuleType) -> None:
    deployment = _deployment(cm)
    deployment["spec"]["replicas"] = "three"
    errors, _ = cm.check([deployment], cm.KUBERNETES_VERSIONS[-1])
    assert errors
    assert "replicas" in errors[0]


def test_a_misspelt_builtin_kind_is_an_error_but_a_custom_resource_is_listed(
    cm: ModuleType,
) -> None:
    deployment = _deployment(cm)
    deployment["kind"] = "Deploymnet"
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "amazonpay-grpc"},
        "spec": {"groups": []},
    }
    errors, custom = cm.check([deployment, rule], cm.KUBERNETES_VERSIONS[0])
    assert len(errors) == 1
    assert "Deploymnet" in errors[0]
    assert custom == ["PrometheusRule/amazonpay-grpc (monitoring.coreos.com/v1)"]


def test_operations_guide_names_the_kubernetes_versions_validated(cm: ModuleType) -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    oldest, newest = cm.KUBERNETES_VERSIONS[0], cm.KUBERNETES_VERSIONS[-1]
    newest_minor = ".".join(newest.split(".")[:2])
    assert f"Kubernetes {oldest} through {newest_minor}" in text
