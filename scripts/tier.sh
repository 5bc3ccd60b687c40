#!/usr/bin/env bash
# One tier of the tests, without the lint, build and deploy-check steps of test.sh:
#   bash scripts/tier.sh operator      # the operator without a cluster (seconds)
#   bash scripts/tier.sh repo          # deploy manifests, Dockerfiles, machine checks
#   bash scripts/tier.sh runtime-units # the runtime without a model: its API over a fake backend
#   bash scripts/tier.sh runtime       # tiny and real-file models over HTTP (minutes)
#   bash scripts/tier.sh e2e           # the local control plane with kwok nodes
#   bash scripts/tier.sh real-node     # the images on the real node (builds them first)
#   bash scripts/tier.sh monitoring    # a real Prometheus over a real runtime
#   bash scripts/tier.sh signing       # cosign over images built here
# Extra arguments go to pytest (e.g. -k NAME). Several tiers: one run each, in order.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ $# -eq 0 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
tiers=()
while [ $# -gt 0 ] && [[ "$1" != -* ]]; do tiers+=("$1"); shift; done
export QMS_CLUSTER_DIR=${QMS_CLUSTER_DIR:-$(mktemp -d /tmp/qms-cluster-test.XXXXXX)}
# The tier's test paths.
tier_paths() {
  if [[ " operator repo runtime monitoring signing " == *" $1 "* ]]; then
    paths=("tests/$1")
  elif [ "$1" = runtime-units ]; then
    paths=("tests/runtime_units")
  elif [ "$1" = e2e ]; then
    paths=("tests/e2e" "--ignore=tests/e2e/test_real_node.py")
  elif [ "$1" = real-node ]; then
    qms-cluster images
    paths=("tests/e2e/test_real_node.py")
  else
    echo "unknown tier '$1': operator, repo, runtime-units, runtime, e2e, real-node, monitoring, signing" >&2
    exit 2
  fi
}
for tier in "${tiers[@]}"; do
  tier_paths "$tier"
  echo "== tier $tier"
  pytest -p no:cacheprovider --basetemp="$(mktemp -d /tmp/qms-pytest.XXXXXX)" "${paths[@]}" "$@"
done
