"""The runtime's shape: no import cycle, small modules, the CLI derived from the
settings, and the transformers compatibility checks that fail with a clear message."""

from __future__ import annotations

import types
from pathlib import Path

import grimp
import pytest

from qms_runtime import cli, compat
from qms_runtime.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("qms_runtime", "qms_operator")
MAX_LINES = 400


def _cycle(graph: grimp.ImportGraph, modules: set[str]) -> list[str] | None:
    """One import cycle among `modules` (function-level imports included), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(modules):
        if module not in state and (found := visit(module)):
            return found
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = grimp.build_graph(package)
    # A package's __init__ is not an import of its modules; leave packages out.
    modules = {m for m in graph.modules if not graph.find_children(m)}
    assert _cycle(graph, modules) is None


def test_the_cycle_finder_finds_one() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycle(graph, {"p.a", "p.b", "p.c"}) == ["p.a", "p.b", "p.c", "p.a"]


@pytest.mark.parametrize("folder", ["runtime/qms_runtime", "operator/qms_operator"])
def test_no_module_over_400_lines(folder: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / folder).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_serve_flags_are_the_settings_fields() -> None:
    parser = cli.build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action.choices, dict) and "serve" in action.choices
    )
    flags = {a.dest: a for a in serve._actions if a.option_strings}
    flags.pop("help")
    assert set(flags) == set(RuntimeSettings.model_fields) - {"api_key"}  # a key is env/file only
    for name, action in flags.items():
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.help is not None and f"(env QMS_{name.upper()})" in action.help
    assert flags["warmup"].choices == ["true", "false"]
    assert flags["port"].choices is None


def test_compat_accepts_the_installed_transformers() -> None:
    compat.check_transformers()  # raises if a piece is missing


def test_compat_names_a_missing_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.generation.continuous_batching import cb_logits_processors

    monkeypatch.delattr(cb_logits_processors, "ContinuousBatchingTopPLogitsWarper")
    with pytest.raises(compat.TransformersIncompatible) as caught:
        compat.check_transformers()
    message = str(caught.value)
    assert "cb_logits_processors.ContinuousBatchingTopPLogitsWarper" in message
    assert "was written for transformers 5.24" in message


def test_compat_checks_the_managers_private_state() -> None:
    router = types.SimpleNamespace(_lock=None)  # no result_handlers
    manager = types.SimpleNamespace(
        background_thread_status=None,
        output_router=router,
        logit_processor=types.SimpleNamespace(
            logits_processor=[], supported_keys=set(), tensors_required=0
        ),
    )
    with pytest.raises(compat.TransformersIncompatible, match=r"output_router\.result_handlers"):
        compat.check_manager(manager)
    router.result_handlers = {}
    compat.check_manager(manager)
