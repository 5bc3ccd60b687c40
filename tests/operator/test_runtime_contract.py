"""The operator-runtime contract: every QMS_* variable the operator's Deployment sets is
a setting of the runtime (qms_runtime.settings.RuntimeSettings), and the runtime parses
each value the operator writes into exactly that value.

Product code never crosses (import-linter forbids the operator importing the runtime);
this test imports both, for the examples in deploy/examples/ and a spec with every
optional variable on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qms_operator.builders import desired_children
from qms_operator.spec import parse_spec
from qms_runtime import cli
from qms_runtime.models.hub import snapshot_path
from qms_runtime.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    f"{path.stem}/{doc['metadata']['name']}": doc["spec"]
    for path in sorted((ROOT / "deploy/examples").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc.get("kind") == "QwenModelServer"
}
EVERYTHING = {
    "model": {"name": "qwen3-omni", "source": {"imagePath": "/models/qwen3-omni"}},
    "runtime": {
        "quantization": "int8",
        "audioOutput": True,
        "remoteMedia": {"enabled": True, "allowedDomains": ["media.example.com"]},
    },
    "apiKeySecret": {"name": "qwen-api", "key": "token"},
}
SPECS = {**EXAMPLES, "every-optional-variable": EVERYTHING}
SETTINGS = {f"QMS_{name.upper()}": name for name in RuntimeSettings.model_fields}


def operator_env(spec: dict[str, Any]) -> dict[str, str]:
    [deployment] = [
        c
        for c in desired_children("s", "ns", "uid-1", parse_spec(spec))
        if c["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("QMS_")}


def test_the_examples_are_all_here() -> None:
    assert sorted(EXAMPLES) == [
        "autoscaled/qwen3-omni-scaled",
        "gateway-inference-pool/qwen3-omni-routed",
        "minimal-cpu/qwen3-small",
        "multi-gpu/qwen3-omni-2gpu",
        "seed-faithful/qwen3-omni",
        "weights-from-hub/qwen3-hub",
        "weights-from-image/qwen3-omni-oci",
    ]


def test_the_download_container_runs_the_runtimes_download_into_the_model_dir() -> None:
    """The init container's command parses as `qms-runtime download`, and the directory
    it downloads into is the runtime container's QMS_MODEL_DIR."""
    source = {
        "huggingFace": {
            "repoId": "Qwen/Qwen3-0.6B",
            "revision": "refs/pr/7",
            "tokenSecret": {"name": "hf"},
            "cacheClaim": "hf-cache",
        }
    }
    spec = parse_spec({"model": {"name": "q", "source": source}})
    [deployment] = [
        c for c in desired_children("s", "ns", "uid-1", spec) if c["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    [download] = pod["initContainers"]
    assert download["command"][0] == "qms-runtime"
    args = cli.build_parser().parse_args(download["command"][1:])
    assert (args.command, args.repo_id, args.revision) == (
        "download",
        "Qwen/Qwen3-0.6B",
        "refs/pr/7",
    )
    assert args.token_file == Path("/var/run/secrets/huggingface/token")
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert snapshot_path(args.cache_dir, args.repo_id, args.revision) == Path(env["QMS_MODEL_DIR"])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_qms_variable_the_operator_sets_is_a_runtime_setting(name: str) -> None:
    env = operator_env(SPECS[name])
    assert [n for n in env if n not in SETTINGS] == []
    assert len(env) >= 15


def test_the_optional_variables_appear() -> None:
    assert set(operator_env(EVERYTHING)) - set(
        operator_env(EXAMPLES["minimal-cpu/qwen3-small"])
    ) == {
        "QMS_ALLOWED_MEDIA_DOMAINS",
        "QMS_API_KEY_FILE",
    }


def _rendered(value: Any) -> str:
    """A parsed setting written back the way the operator writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(value)
    return str(value)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_runtime_parses_each_value_the_operator_writes(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = operator_env(SPECS[name])
    for variable in SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    if "QMS_API_KEY_FILE" in env:  # the mounted Secret, here a file of the test's
        key = tmp_path / "api-key"
        key.write_text("sk-test\n")
        monkeypatch.setenv("QMS_API_KEY_FILE", str(key))
        env["QMS_API_KEY_FILE"] = str(key)
    settings = RuntimeSettings()  # type: ignore[call-arg]
    parsed = {variable: _rendered(getattr(settings, SETTINGS[variable])) for variable in env}
    assert parsed == env
