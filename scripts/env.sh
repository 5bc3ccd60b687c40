# Sourced by the scripts in this folder: makes (once) and activates the Python
# environment. It lives outside the repository, under ~/.cache/qms/, keyed by
# a hash of the dependency lists of both pyproject.toml files and of
# .ci/constraints.txt (not of tool settings), so a warm machine reuses it and a
# changed dependency list builds a new one; a lock keeps two shells from building
# the same one at once. pip's own cache stays warm in
# ~/.cache/pip, so a cold venv does not download torch again.
set -euo pipefail
QMS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QMS_CACHE=${QMS_CACHE:-$HOME/.cache/qms}
_key=$(python3 - "$QMS_ROOT" <<'PY'
import hashlib, json, sys, tomllib
root = sys.argv[1]
tables = []
for path in (f"{root}/pyproject.toml", f"{root}/tests/cluster/pyproject.toml"):
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    tables.append([project.get("dependencies"), project.get("optional-dependencies")])
with open(f"{root}/.ci/constraints.txt", "rb") as f:
    constraints = f.read().decode()
digest = hashlib.sha256(json.dumps([tables, constraints, sys.version_info[:2]]).encode())
print(digest.hexdigest()[:12])
PY
)
QMS_VENV=$QMS_CACHE/venv-py$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')-$_key
mkdir -p "$QMS_CACHE"
if [ ! -x "$QMS_VENV/bin/.qms-ready" ]; then
  exec 9>"$QMS_VENV.lock"
  flock 9
  if [ ! -x "$QMS_VENV/bin/.qms-ready" ]; then
    echo "== setting up the Python environment in $QMS_VENV (first time: several minutes, torch is large)"
    rm -rf "$QMS_VENV"
    python3 -m venv "$QMS_VENV"
    "$QMS_VENV/bin/pip" install --quiet --upgrade pip
    # One line per package pip collects (progress); its whole output kept for a failure.
    if ! "$QMS_VENV/bin/pip" install --progress-bar off -c "$QMS_ROOT/.ci/constraints.txt" \
        "$QMS_ROOT[dev]" 2>&1 | tee "$QMS_VENV.pip.log" \
        | grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed)' \
        | sed -u 's/^\(.\{0,100\}\).*/  pip: \1/'; then
      tail -n 40 "$QMS_VENV.pip.log" >&2
      echo "== pip failed; its whole output: $QMS_VENV.pip.log" >&2
      exit 1
    fi
    printf '#!/bin/sh\n' > "$QMS_VENV/bin/.qms-ready" && chmod +x "$QMS_VENV/bin/.qms-ready"
  fi
  exec 9>&-
fi
# The venv is shared between clones: point its editable installs of qms and of
# the test control plane (qms-cluster, a separate distribution: not in the
# product wheel) at whichever checkout runs this script (fast, no dependencies).
"$QMS_VENV/bin/pip" install --quiet --no-deps -e "$QMS_ROOT" -e "$QMS_ROOT/tests/cluster" >/dev/null
# The editable installs follow the checkout that sourced this last; PYTHONPATH (which
# comes before them) makes every process of this shell import this checkout's code,
# also while another checkout shares the venv (a clean-clone check beside a work tree).
export PYTHONPATH="$QMS_ROOT/operator:$QMS_ROOT/runtime:$QMS_ROOT/tests/cluster${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$QMS_VENV/bin:$PATH" VIRTUAL_ENV="$QMS_VENV"
export PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$QMS_ROOT"
