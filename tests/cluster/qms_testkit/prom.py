"""Prometheus text exposition, parsed with prometheus-client's own parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


def samples(text: str) -> Samples:
    """Every sample: (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The first sample named `name` whose labels include `labels` (0 if absent)."""
    wanted = (labels or {}).items()
    for (sample_name, sample_labels), value in samples(text).items():
        if sample_name == name and wanted <= dict(sample_labels).items():
            return value
    return 0.0
