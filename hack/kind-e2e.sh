#!/usr/bin/env bash
# End to end on a real cluster: kind, images, helm install, the examples, Ready, a chat, tear down.
# NOT run on Den's CI machine (no kind node image can be pulled there); needs kind, Docker and
# network access. helm and kubectl come from hack/k8s-tools.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER="${CLUSTER:-den-e2e}"
NS=den-system
BIN="$(bash "$ROOT/hack/k8s-tools.sh")"
export PATH="$BIN:$PATH"
DEN="$ROOT/.venv/bin/den"

cleanup() { kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
# hack/build-image.sh --operator (with the venv): den-runtime, den-gateway and den-operator :latest
make -C "$ROOT" image-operator
for image in den-runtime:latest den-gateway:latest den-operator:latest; do
  kind load docker-image "$image" --name "$CLUSTER"
done

kubectl create namespace "$NS"
kubectl -n "$NS" create secret generic den-provider-keys --from-literal=OPENAI_API_KEY="${OPENAI_API_KEY:-none}"
helm install den "$ROOT/charts/den" -n "$NS" --set 'gateway.providerKeySecrets={den-provider-keys}' --wait

# hello talks to a scripted model on the host (`den dev model`): point its base_url at one the
# cluster can reach, or export OPENAI_API_KEY and use a real model, for the chat below to answer.
for example in "$ROOT"/examples/*/Agentfile; do
  "$DEN" export "$example" --kubernetes | kubectl apply -n "$NS" -f -
done
kubectl -n "$NS" wait agent --all --for=condition=Ready --timeout=300s
kubectl -n "$NS" get agents

kubectl -n "$NS" port-forward svc/den-den-system-hello 18800:8800 >/dev/null &
FORWARD=$!
trap 'kill $FORWARD 2>/dev/null || true; cleanup' EXIT
sleep 2
TOKEN=$(kubectl -n "$NS" get secret den-den-system-hello-env -o jsonpath='{.data.env\.json}' | base64 -d \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["DEN_API_TOKEN"])')
curl -fsS localhost:18800/v1/chat/completions -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"model":"hello","messages":[{"role":"user","content":"Say hello."}]}'
echo
kubectl -n "$NS" delete agents --all --wait
echo "kind e2e passed"
