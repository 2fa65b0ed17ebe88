"""deploy/grafana/imageforge.json is a Grafana dashboard whose every query reads metrics the service exports, and
that shows each metric family the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from imageforge.bootstrap import build_service
from imageforge.config import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "imageforge.json"
#: The series each type of family is read by in PromQL.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported(settings: Settings) -> dict[str, set[str]]:
    """The service's metric families, each with the series names a query may read it by (but the `_created`
    timestamps prometheus_client adds, which no dashboard reads)."""
    text = build_service(settings).metrics.exposition().decode()
    return {
        family.name: {family.name + suffix for suffix in SUFFIXES[family.type]}
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }


def queries(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Each panel's title with the expressions of its queries (rows hold none)."""
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
    }


def test_every_panel_queries_only_metrics_the_service_exports(settings: Settings) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    series = set().union(*exported(settings).values())

    for title, expressions in queries(dashboard).items():
        assert expressions, f"panel {title!r} has no query"
        for expression in expressions:
            named = set(re.findall(r"\bimageforge_[a-z_]+\b", expression))
            assert named, f"panel {title!r} reads no imageforge metric: {expression}"
            assert named <= series, f"panel {title!r} reads what the service does not export: {named - series}"


def test_the_dashboard_shows_every_metric_family_the_service_exports(settings: Settings) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    shown = {
        name
        for expressions in queries(dashboard).values()
        for e in expressions
        for name in re.findall(r"\bimageforge_[a-z_]+\b", e)
    }

    missing = {family for family, names in exported(settings).items() if not names & shown}

    assert missing == set(), f"no panel shows {sorted(missing)}"
