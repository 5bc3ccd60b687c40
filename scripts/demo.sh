#!/usr/bin/env bash
# The main job (README's first command): set up, start the local control plane
# with its real node, build both images and load them into that node, install
# QMS (the operator runs as a pod), show the seed article's example refused (its
# model does not fit one T4) and then Ready on the kwok H200 nodes, then serve a tiny Qwen3 from real pods and ask it through its
# Service with the official openai client.
# Where the real node cannot run (no root), the operator runs on the host and the
# runtime answers on a local port instead.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEMO=$QMS_CACHE/demo
mkdir -p "$DEMO"

echo "== local control plane"
qms-cluster up
export KUBECONFIG=$(qms-cluster kubeconfig)
BIN=$(python -c 'import qms_cluster; print(qms_cluster.current().bin_dir)')
export PATH="$BIN:$PATH"
REAL_NODE=$(python -c 'import qms_cluster; print(int(qms_cluster.current().real_node))')

echo "== CRD"
kubectl apply --server-side -f crds/modelservers.serving.qms.io.yaml
kubectl wait --for=condition=Established crd/modelservers.serving.qms.io --timeout=60s

if [ "$REAL_NODE" = 1 ]; then
  echo "== images (cold: several minutes; then cached layers) into the real node"
  qms-cluster images --load
  echo "== QMS installed with kubectl apply -k deploy/overlays/local (operator in a pod)"
  kubectl apply --server-side -k deploy/overlays/local
  # The image keeps its tag (:dev) when rebuilt: restart the pods so a second run of the
  # demo runs the operator just built, not the one a first run left running.
  kubectl rollout restart -n qms-system deployment/qms-operator
  kubectl rollout status -n qms-system deployment/qms-operator --timeout=180s
else
  echo "== operator on the host (log: $DEMO/operator.log)"
  qms-operator run --all-namespaces --metrics-port 19090 --health-port 18081 >"$DEMO/operator.log" 2>&1 &
  OPERATOR=$!
  trap 'kill $OPERATOR 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -sf localhost:18081/healthz >/dev/null && break; sleep 0.2; done
fi

echo "== the seed article's example QwenModelServer: Qwen3-Omni-30B-A3B-Instruct on one T4"
kubectl create namespace qms-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f deploy/demo/weights.yaml
kubectl wait -n qms-demo --for=jsonpath='{.status.phase}'=Bound pvc/qwen-weights --timeout=60s
# A server left by an earlier run would keep its pods (the refusal leaves children alone).
kubectl delete modelserver qwen3-omni -n qms-demo --ignore-not-found --wait
kubectl apply -n qms-demo -f deploy/examples/seed-faithful.yaml
kubectl wait -n qms-demo --for=jsonpath='{.status.conditions[?(@.type=="Stalled")].reason}'=DoesNotFit \
  modelserver/qwen3-omni --timeout=60s
kubectl get modelservers -n qms-demo -o wide
echo "== the same model with its preset, accepting H200s instead (kwok nodes)"
kubectl patch modelserver qwen3-omni -n qms-demo --type=merge -p '{"spec":{"model":{"preset":"qwen3-omni-30b-a3b-instruct"},"resources":{"gpu":{"acceleratorTypes":["nvidia-h200"]}}}}'
kubectl wait -n qms-demo --for=condition=Ready modelserver/qwen3-omni --timeout=180s
kubectl get modelservers -n qms-demo -o wide
kubectl get modelserver qwen3-omni -n qms-demo -o jsonpath='status.effective: {.status.effective}{"\n"}'
kubectl get deployments,services,hpa,pdb,networkpolicies,ingresses,pods -n qms-demo -o wide

if [ "$REAL_NODE" != 1 ]; then
  echo "== runtime: a tiny Qwen3 model answering through the official openai client"
  qms-runtime demo --workdir "$DEMO/runtime"
  echo "== done. The control plane stays up: 'qms-cluster down' stops it."
  exit 0
fi

echo "== a tiny Qwen3 served from real pods on the real node (deploy/demo/real-node.yaml)"
VOLUMES=$(python -c 'import qms_cluster as q; from qms_cluster.cluster import node_layout; print(node_layout(q.current()).volumes)')
[ -f "$VOLUMES/weights/tiny-qwen3/SHA256SUMS" ] || qms-runtime tiny-model "$VOLUMES/weights/tiny-qwen3" --arch qwen3
chmod -R a+rX "$VOLUMES/weights"
kubectl create namespace qms-real --dry-run=client -o yaml | kubectl apply -f -
sed "s|QMS_NODE_VOLUMES|$VOLUMES|" deploy/demo/real-node.yaml | kubectl apply -f -
kubectl wait -n qms-real --for=condition=Ready modelserver/tiny-qwen --timeout=300s
kubectl get modelservers -n qms-real
kubectl get pods -n qms-real -o wide
kubectl get pods -n qms-system -o wide
IP=$(kubectl get service tiny-qwen -n qms-real -o jsonpath='{.spec.clusterIP}')
echo "== asking it through the Service (ClusterIP $IP, kube-proxy) with the openai client"
python - "$IP" <<'EOF'
import sys

from openai import OpenAI

client = OpenAI(base_url=f"http://{sys.argv[1]}:8080/v1", api_key="unused", max_retries=0)
question = "What runs where?"
answer = client.chat.completions.create(
    model="tiny-qwen3", messages=[{"role": "user", "content": question}], max_tokens=16
)
print(f"Q: {question}")
print(f"A: {answer.choices[0].message.content!r} (random weights: the words mean nothing)")
print(f"   finish_reason={answer.choices[0].finish_reason} usage={answer.usage}")
EOF
echo "== done. The control plane stays up: 'qms-cluster down' stops it."
