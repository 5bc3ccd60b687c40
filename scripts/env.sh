# Sourced by the scripts in this folder: makes (once) and activates the Python
# environment. It lives outside the repository, under ~/.cache/qms/, keyed by
# a hash of both pyproject.toml files and .ci/constraints.txt, so a warm machine reuses it
# and a changed dependency list builds a new one. pip's own cache stays warm in
# ~/.cache/pip, so a cold venv does not download torch again.
set -euo pipefail
QMS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QMS_CACHE=${QMS_CACHE:-$HOME/.cache/qms}
_key=$(cat "$QMS_ROOT/pyproject.toml" "$QMS_ROOT/tests/cluster/pyproject.toml" "$QMS_ROOT/.ci/constraints.txt" | sha256sum | cut -c1-12)
QMS_VENV=$QMS_CACHE/venv-py$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')-$_key
if [ ! -x "$QMS_VENV/bin/.qms-ready" ]; then
  echo "== setting up the Python environment in $QMS_VENV (first time: several minutes, torch is large)"
  rm -rf "$QMS_VENV"
  mkdir -p "$QMS_CACHE"
  python3 -m venv "$QMS_VENV"
  "$QMS_VENV/bin/pip" install --quiet --upgrade pip
  "$QMS_VENV/bin/pip" install --quiet -c "$QMS_ROOT/.ci/constraints.txt" "$QMS_ROOT[dev]"
  printf '#!/bin/sh\n' > "$QMS_VENV/bin/.qms-ready" && chmod +x "$QMS_VENV/bin/.qms-ready"
fi
# The venv is shared between clones: point its editable installs of qms and of
# the test control plane (qms-cluster, a separate distribution: not in the
# product wheel) at whichever checkout runs this script (fast, no dependencies).
"$QMS_VENV/bin/pip" install --quiet --no-deps -e "$QMS_ROOT" -e "$QMS_ROOT/tests/cluster" >/dev/null
export PATH="$QMS_VENV/bin:$PATH" VIRTUAL_ENV="$QMS_VENV"
export PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$QMS_ROOT"
