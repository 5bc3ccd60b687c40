#!/usr/bin/env bash
# The test command (README, .ci/run): lint, types, layers, static deploy checks,
# the control plane and the real node's binaries (built once, cached), both images,
# then every test tier.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy
echo "== import-linter (operator and runtime layers; no torch in the operator; transformers internals in one module)"
lint-imports
echo "== control plane binaries (cold build: several minutes, then cached)"
qms-cluster build
echo "== images from Dockerfile.operator and Dockerfile.runtime (cold: several minutes, then cached layers)"
qms-cluster images
echo "== deploy checks (hadolint, kustomize, checkov)"
bash scripts/check-deploy.sh
echo "== pytest"
# Each run gets its own control plane state so a cluster left up elsewhere is untouched.
export QMS_CLUSTER_DIR=${QMS_CLUSTER_DIR:-$(mktemp -d /tmp/qms-cluster-test.XXXXXX)}
# A base temp dir of its own: pytest prunes old /tmp/pytest-of-$USER/pytest-N dirs, which
# deleted a concurrent run's tiny models and cluster state mid-run.
pytest -p no:cacheprovider --basetemp="$(mktemp -d /tmp/qms-pytest.XXXXXX)" "$@"
