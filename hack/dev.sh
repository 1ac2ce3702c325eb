#!/usr/bin/env bash
# Runs Ember locally, end to end, on a real local cluster: a control plane
# (etcd, kube-apiserver, controller-manager, scheduler, kwok for a fake GPU
# node) and a real node (containerd, runc, CNI bridge, kubelet, kube-proxy,
# CoreDNS), PostgreSQL and a model store serving MiniLM on the node's bridge.
# Ember itself is installed the way users install it, `config/default`
# (through a local overlay in .dev/overlay that only fills in addresses): the
# operator (2 replicas, leader election) and ember-api run as pods from the
# locally built images, with their ServiceAccount tokens. Then it applies
# examples/ (the ModelDeployment pointed at the local model store), waits
# for the Tenant and for the model pod to pass its readiness probe, and asks
# ember-api for embeddings with a token and with an API key. Ctrl-C stops
# everything. Needs root (the node manages cgroups, mounts and iptables).
#
#   bash hack/dev.sh           # run until interrupted
#   bash hack/dev.sh --check   # set up, verify (the embeddings, numerically), tear down (CI)
#
# State (kubeconfig, env file, logs) goes to .dev/; afterwards
# `source .dev/env` points kubectl at the cluster and sets $EMBER_API.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember/target}"
dev="$root/.dev"
mkdir -p "$dev"
rm -f "$dev/env"

EMBER_CP_BIN="$(bash hack/build-control-plane.sh | tail -n 1)"
EMBER_NODE_BIN="$(bash hack/build-node.sh | tail -n 1)"
# The release build of the whole workspace (tools included) and the images.
images="$(bash hack/build-images.sh | tail -n 1)"
export EMBER_CP_BIN EMBER_NODE_BIN
bin="$CARGO_TARGET_DIR/release"
minilm="$(bash ml-runtime/scripts/fetch-minilm.sh)"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/ember-localenv" --dir "$dev" --images "$images" --model-dir "$minilm" >"$dev/localenv.log" 2>&1 &
pids+=($!)
echo "starting the local cluster, PostgreSQL and the model store (log: .dev/localenv.log)..."
for _ in $(seq 1 3000); do
  [[ -f "$dev/env" ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dev/localenv.log"; echo "ember-localenv failed" >&2; exit 1; }
  sleep 0.1
done
[[ -f "$dev/env" ]] || { echo "timed out waiting for the local environment" >&2; exit 1; }
# shellcheck disable=SC1091
source "$dev/env"

# A stand-in identity provider (JWKS over HTTPS from a throwaway CA, tokens
# in .dev/tokens/) on the node's gateway, where ember-api's pods fetch its keys.
idp="https://$EMBER_GATEWAY:18090"
rm -f "$dev/idp-ca.crt"
"$bin/ember-dev-idp" --addr "$EMBER_GATEWAY:18090" --dir "$dev" \
  --user alice@acme.example --user bob@acme.example:acme-data-science >"$dev/idp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [[ -s "$dev/idp-ca.crt" ]] && break; sleep 0.1; done
PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -q \
  -c 'DROP DATABASE IF EXISTS ember_api' -c 'CREATE DATABASE ember_api' >/dev/null

# The overlay: config/default plus where things are on this machine.
overlay="$dev/overlay"
rm -rf "$overlay"
mkdir -p "$overlay"
cat >"$overlay/config.yaml" <<YAML
platformNamespace: ember-system
databaseServers:
  - name: local
    host: $EMBER_GATEWAY
    port: $EMBER_PG_PORT
    database: postgres
    adminSecret: pg-local-admin
    networkCidr: $EMBER_GATEWAY/32
runtimeImage: ghcr.io/ember-dev/ember-runtime:0.1.0
runtimeWgpuImage: ghcr.io/ember-dev/ember-runtime:0.1.0-wgpu
modelStores:
  - {name: local, cidr: $EMBER_GATEWAY/32, ports: [${EMBER_MODEL_STORE##*:}]}
YAML
cp "$dev/idp-ca.crt" "$overlay/idp-ca.crt"
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../config/default
configMapGenerator:
  - name: ember-operator-config
    namespace: ember-system
    behavior: replace
    files: [config.yaml]
  - name: ember-api-idp-ca
    namespace: ember-system
    files: [idp-ca.crt]
secretGenerator:
  # Referenced by name from the operator's config: no hash suffix.
  - name: pg-local-admin
    namespace: ember-system
    options: {disableNameSuffixHash: true}
    literals: [username=postgres, password=$EMBER_PG_PASSWORD]
  - name: ember-api-database
    namespace: ember-system
    literals: [url=postgres://postgres:$EMBER_PG_PASSWORD@$EMBER_GATEWAY:$EMBER_PG_PORT/ember_api]
patches:
  - target: {kind: Deployment, name: ember-api}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/env
        value:
          - {name: EMBER_API_JWT_ISSUER, value: "$idp"}
          - {name: EMBER_API_JWT_AUDIENCE, value: ember}
          - {name: EMBER_API_JWKS_URI, value: "$idp/jwks.json"}
          - {name: EMBER_API_JWKS_CA_FILE, value: /etc/ember/idp-ca/idp-ca.crt}
          - {name: EMBER_API_PLATFORM_ADMIN_GROUP, value: ember-platform-admins}
          - name: EMBER_API_DATABASE_URL
            valueFrom: {secretKeyRef: {name: ember-api-database, key: url}}
      - op: add
        path: /spec/template/spec/volumes
        value:
          - {name: idp-ca, configMap: {name: ember-api-idp-ca}}
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts
        value:
          - {name: idp-ca, mountPath: /etc/ember/idp-ca, readOnly: true}
YAML
kubectl apply --server-side -k "$overlay" >/dev/null
for deployment in ember-operator ember-api; do
  if ! kubectl -n ember-system rollout status "deployment/$deployment" --timeout=180s; then
    kubectl -n ember-system get pods -o wide; kubectl -n ember-system describe pods | tail -n 40
    kubectl -n ember-system logs "deployment/$deployment" --tail=40 || true
    exit 1
  fi
done
api="http://$(kubectl -n ember-system get service ember-api -o jsonpath='{.spec.clusterIP}')"
echo "export EMBER_API=$api" >>"$dev/env"

kubectl apply --server-side -f examples/tenant-acme.yaml
if ! kubectl wait --for=condition=Ready tenant/acme --timeout=120s; then
  kubectl get tenant acme -o yaml; kubectl -n ember-system logs deployment/ember-operator --tail=40; exit 1
fi
# The example names an example.com model store; here the local one serves
# the same files (same digests). Its 2 CPUs would not fit beside the
# platform's pods on a 2-core machine: one CPU and 1 GiB serve MiniLM well.
sed -e "s|https://models.acme.example/all-minilm-l6-v2|$EMBER_MODEL_STORE|" \
  -e 's|^    cpu: "2"$|    cpu: "1"|' -e 's|^    memory: 2Gi$|    memory: 1Gi|' \
  examples/modeldeployment-minilm.yaml >"$dev/modeldeployment-minilm.yaml"
grep -q 'cpu: "1"' "$dev/modeldeployment-minilm.yaml" || { echo "examples/modeldeployment-minilm.yaml changed shape" >&2; exit 1; }
kubectl apply --server-side -f "$dev/modeldeployment-minilm.yaml"
# Ready means an ember-runtime pod downloaded and verified the weights,
# loaded the model and passed its readiness probe.
if ! kubectl -n tenant-acme wait --for=condition=Ready modeldeployment/minilm --timeout=300s; then
  kubectl -n tenant-acme get modeldeployment minilm -o yaml; kubectl -n tenant-acme get pods -o wide
  kubectl -n tenant-acme logs deployment/minilm --tail=40 || true; exit 1
fi
kubectl get tenants,modeldeployments -A
kubectl -n tenant-acme get deployment,service,horizontalpodautoscaler,poddisruptionbudget,pod -o wide

# The REST API, as alice (owner of acme): her tenants, then embeddings.
alice=(-H "Authorization: Bearer $(cat "$dev/tokens/alice@acme.example.jwt")")
for _ in $(seq 1 300); do
  curl -fsS "${alice[@]}" "$api/v1/tenants" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "${alice[@]}" "$api/v1/whoami" | grep -q '"alice@acme.example"' \
  || { echo "ember-api (in its pod) does not know alice's token" >&2; exit 1; }
echo "GET /v1/tenants as alice@acme.example:"
curl -fsS "${alice[@]}" "$api/v1/tenants"; echo
sentence='{"input": ["This is an example sentence"]}'
curl -fsS "${alice[@]}" -H 'Content-Type: application/json' -d "$sentence" \
  "$api/v1/tenants/acme/deployments/minilm/embeddings" >"$dev/embeddings-alice.json" \
  || { echo "ember-api did not return alice's embeddings" >&2; kubectl -n ember-system logs deployment/ember-api --tail=30; exit 1; }
key=$(curl -fsS "${alice[@]}" -X POST -H 'Content-Type: application/json' \
  -d '{"name": "dev", "role": "view"}' "$api/v1/tenants/acme/api-keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$sentence" \
  "$api/v1/tenants/acme/deployments/minilm/embeddings" >"$dev/embeddings-key.json" \
  || { echo "an API key of acme cannot call acme's model" >&2; exit 1; }
echo "POST .../deployments/minilm/embeddings: $(head -c 160 "$dev/embeddings-alice.json")..."

if [[ "${1:-}" == "--check" ]]; then
  # Both answers must be the committed reference embedding of that sentence.
  for answer in "$dev/embeddings-alice.json" "$dev/embeddings-key.json"; do
    python3 - "$answer" ml-runtime/tests/fixtures/minilm_reference.json <<'PY'
import json, math, sys
got = json.load(open(sys.argv[1]))["data"][0]["embedding"]
ref = next(s["embedding"] for s in json.load(open(sys.argv[2]))["sentences"]
           if s["text"] == "This is an example sentence")
cos = sum(a * b for a, b in zip(got, ref)) / math.sqrt(sum(a * a for a in got) * sum(b * b for b in ref))
assert len(got) == len(ref) == 384 and cos >= 0.999, f"cosine {cos} against the reference"
print(f"embedding matches the reference (cosine {cos:.6f})")
PY
  done
  echo "dev environment works"
  exit 0
fi
cat <<MSG

Ember is running. In another shell:  source .dev/env && kubectl get tenants
  api:   $api/v1/tenants (kubectl -n ember-system logs deploy/ember-api), e.g.
         curl -H "Authorization: Bearer \$(cat .dev/tokens/alice@acme.example.jwt)" \\
           -d '{"input": ["Hello"]}' $api/v1/tenants/acme/deployments/minilm/embeddings
  model store: $EMBER_MODEL_STORE   cluster logs: .dev/localenv.log
Ctrl-C stops everything.
MSG
wait "${pids[0]}"
