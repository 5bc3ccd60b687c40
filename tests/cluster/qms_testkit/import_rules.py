"""A custom import-linter contract: no import of an external package's submodule
(by its dotted prefix) outside the modules allowed to.

import-linter's own `forbidden` contract accepts external packages only as a whole
(`transformers`), but the runtime may use transformers' public API everywhere and its
private continuous-batching internals in one module only (qms_runtime.compat).
grimp keeps each import's source line, so the check reads those lines, including
imports inside functions. Registered in pyproject's [tool.importlinter].
"""

from __future__ import annotations

from typing import Any

from importlinter import Contract, ContractCheck, fields, output


class ForbiddenImportPrefixContract(Contract):
    type_name = "forbidden_import_prefix"

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_prefix = fields.StringField()
    allowed_importers = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        prefix = str(self.forbidden_prefix)
        root = prefix.split(".")[0]
        allowed = set(self.allowed_importers or [])  # type: ignore[arg-type]
        sources: set[str] = set()
        for source in self.source_modules:  # type: ignore[attr-defined]
            sources.add(source)
            sources.update(graph.find_descendants(source))
        violations = []
        for module in sorted(sources - allowed):
            if root not in graph.find_modules_directly_imported_by(module):
                continue
            for detail in graph.get_import_details(importer=module, imported=root):
                line = detail["line_contents"]
                if _names(line, prefix):
                    violations.append((module, detail["line_number"], line))
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, line_number, line in check.metadata["violations"]:
            output.print_error(f"{module}:{line_number}: {line}")
            output.new_line()


def _names(line: str, prefix: str) -> bool:
    words = line.replace(",", " ").split()
    return any(word == prefix or word.startswith(prefix + ".") for word in words)
