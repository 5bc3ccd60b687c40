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
echo "== pytest, in two lanes side by side"
# The cluster lane (tests/e2e: the kwok control plane, then the real node) spends most
# of its time waiting on controllers and pods; the process lane (every other tier:
# runtime models, Prometheus, cosign, the operator without a cluster, repository
# checks) spends it on the cores. Each lane is one pytest run with its own base temp
# dir (pytest prunes old /tmp/pytest-of-$USER/pytest-N dirs, which deleted a concurrent
# run's tiny models and cluster state mid-run) and its lines prefixed by its name.
# Each control plane a test starts gets its own state dir, so a cluster left up
# elsewhere is untouched. Extra arguments go to both lanes.
export QMS_CLUSTER_DIR=${QMS_CLUSTER_DIR:-$(mktemp -d /tmp/qms-cluster-test.XXXXXX)}
lane() {
  local name=$1
  shift
  pytest -p no:cacheprovider --basetemp="$(mktemp -d /tmp/qms-pytest.XXXXXX)" "$@" 2>&1 \
    | sed -u "s/^/[$name] /"
  return "${PIPESTATUS[0]}"
}
lane cluster tests/e2e "$@" &
cluster_lane=$!
process_status=0
lane process tests/operator tests/repo tests/runtime_units tests/runtime tests/monitoring \
  tests/signing "$@" \
  || process_status=$?
cluster_status=0
wait "$cluster_lane" || cluster_status=$?
echo "== pytest lanes: cluster exit $cluster_status, process exit $process_status"
[ "$cluster_status" -eq 0 ] && [ "$process_status" -eq 0 ]
