"""The PrometheusRule and the Grafana dashboard, offline: shape, thresholds and runbook links.
That every expression names a metric the running service exports is checked against a real
scrape in tests/e2e/test_first_hour.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "amazonpay-grpc-dashboard.json"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def rules(overlay: str) -> list[dict[str, Any]]:
    [rule] = [o for o in render(K8S / "overlays" / overlay) if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


@pytest.mark.parametrize("overlay", ["sandbox", "production"])
def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists(overlay: str) -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    alerts = rules(overlay)
    assert len(alerts) >= 10
    for alert in alerts:
        assert re.fullmatch(r"AmazonPay[A-Za-z]+", alert["alert"]), alert
        assert alert["labels"]["severity"] in {"page", "ticket"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor in anchors, f"{alert['alert']}: no heading #{anchor} in operations.md"
        assert re.search(r"\bamazonpay_[a-z_]+", alert["expr"]), alert["alert"]


def test_the_documented_thresholds_are_the_rules_thresholds() -> None:
    by_name = {a["alert"]: a for a in rules("production")}
    assert "> 0.05" in by_name["AmazonPayGrpcErrorRatio"]["expr"]
    assert by_name["AmazonPayGrpcErrorRatio"]["for"] == "10m"
    assert "> 0.01" in by_name["AmazonPayUnavailable"]["expr"]
    assert "> 600" in by_name["AmazonPayPendingOperations"]["expr"]  # 10 minutes
    assert "> 691200" in by_name["AmazonPayOldestPendingObject"]["expr"]  # 8 days
    assert by_name["AmazonPayOwedReadsFailing"]["for"] == "1h"
    assert "> 600" in by_name["AmazonPayIpnBacklog"]["expr"]
    assert by_name["AmazonPayCredentialsRefused"]["labels"]["severity"] == "page"
    assert "== 2" in by_name["AmazonPayCircuitOpen"]["expr"]
    text = OPERATIONS.read_text(encoding="utf-8")
    for name in by_name:
        assert f"`{name}`" in text, f"{name} is not in the alerts table of operations.md"


def test_the_dashboard_is_grafana_json_with_a_prometheus_query_per_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"]
    assert dashboard["title"]
    assert len(dashboard["panels"]) >= 10
    for panel in dashboard["panels"]:
        [target] = panel["targets"]
        assert re.search(r"\bamazonpay_[a-z_]+", target["expr"]), panel["title"]
    # The rule file is YAML a Prometheus Operator accepts: plain strings, no tabs.
    assert "\t" not in (K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8"))
