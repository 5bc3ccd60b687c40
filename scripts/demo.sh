#!/usr/bin/env bash
# The main job (README's first command): set up, start the local control plane,
# install the CRD, run the operator, apply the seed example and wait until it is
# Ready, then serve a tiny Qwen model with the runtime and ask it through the
# official openai client.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEMO=$QMS_CACHE/demo
mkdir -p "$DEMO"

echo "== local control plane"
qms-cluster up
export KUBECONFIG=$(qms-cluster kubeconfig)
BIN=$(python -c 'import qms_cluster; print(qms_cluster.current().bin_dir)')
export PATH="$BIN:$PATH"

echo "== CRD"
kubectl apply --server-side -f crds/modelservers.serving.qms.io.yaml
kubectl wait --for=condition=Established crd/modelservers.serving.qms.io --timeout=60s

echo "== operator (log: $DEMO/operator.log)"
qms-operator run --all-namespaces --metrics-port 19090 --health-port 18081 >"$DEMO/operator.log" 2>&1 &
OPERATOR=$!
trap 'kill $OPERATOR 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf localhost:18081/healthz >/dev/null && break; sleep 0.2; done

echo "== the seed article's example QwenModelServer"
kubectl create namespace qms-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f deploy/demo/weights.yaml
kubectl wait -n qms-demo --for=jsonpath='{.status.phase}'=Bound pvc/qwen-weights --timeout=60s
kubectl apply -n qms-demo -f deploy/examples/seed-faithful.yaml
kubectl wait -n qms-demo --for=condition=Ready modelserver/qwen3-omni --timeout=180s
kubectl get modelservers -n qms-demo -o wide
kubectl get deployments,services,hpa,pdb,networkpolicies,ingresses,pods -n qms-demo -o wide
echo "operator API writes so far:"
curl -s localhost:19090/metrics | grep '^qms_operator_api_requests_total' || true

echo "== runtime: a tiny Qwen3 model answering through the official openai client"
qms-runtime demo --workdir "$DEMO/runtime"

echo "== done. The control plane stays up: 'qms-cluster down' stops it."
