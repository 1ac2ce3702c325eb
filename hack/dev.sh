#!/usr/bin/env bash
# Runs Ember locally, end to end: a real control plane (etcd, kube-apiserver,
# controller-manager, scheduler, kwok) and PostgreSQL, the CRDs and RBAC,
# ember-operator (with exactly its ClusterRole, by impersonating its
# ServiceAccount) and ember-api (with a local stand-in identity provider and
# its own database), then applies examples/, waits for the Tenant and the
# ModelDeployment to become Ready and calls the REST API. Ctrl-C stops
# everything.
#
#   bash hack/dev.sh           # run until interrupted
#   bash hack/dev.sh --check   # set up, verify, tear down (used by CI)
#
# State (kubeconfig, env file, logs) goes to .dev/; afterwards
# `source .dev/env` points kubectl at the cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ember/target}"
dev="$root/.dev"
mkdir -p "$dev"
rm -f "$dev/env"

EMBER_CP_BIN="$(bash hack/build-control-plane.sh | tail -n 1)"
export EMBER_CP_BIN
cargo build -q -p ember-testenv -p ember-operator -p ember-api --bins
bin="$CARGO_TARGET_DIR/debug"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/ember-localenv" --dir "$dev" >"$dev/localenv.log" 2>&1 &
pids+=($!)
echo "starting the local control plane and PostgreSQL (log: .dev/localenv.log)..."
for _ in $(seq 1 1800); do
  [[ -f "$dev/env" ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dev/localenv.log"; echo "ember-localenv failed" >&2; exit 1; }
  sleep 0.1
done
[[ -f "$dev/env" ]] || { echo "timed out waiting for the local environment" >&2; exit 1; }
# shellcheck disable=SC1091
source "$dev/env"

kubectl apply --server-side -k config/crd >/dev/null
kubectl wait --for condition=Established crd/tenants.ember.dev crd/modeldeployments.ember.dev --timeout=60s >/dev/null
kubectl create namespace ember-system --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -k config/rbac >/dev/null
kubectl apply --server-side -k config/policy >/dev/null
kubectl -n ember-system create secret generic pg-local-admin \
  --from-literal=username=postgres --from-literal="password=$EMBER_PG_PASSWORD" \
  --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null

cat >"$dev/operator.yaml" <<YAML
platformNamespace: ember-system
databaseServers:
  - name: local
    host: 127.0.0.1
    port: $EMBER_PG_PORT
    database: postgres
    adminSecret: pg-local-admin
    networkCidr: 127.0.0.1/32
YAML
# The operator runs with exactly its ClusterRole: it impersonates its ServiceAccount.
sed 's|^    client-key: .*|&\n    as: system:serviceaccount:ember-system:ember-operator|' "$KUBECONFIG" >"$dev/operator.kubeconfig"

KUBECONFIG="$dev/operator.kubeconfig" "$bin/ember-operator" --config "$dev/operator.yaml" \
  --health-addr 127.0.0.1:18080 --log-format text >"$dev/operator.log" 2>&1 &
pids+=($!)
# A stand-in identity provider (JWKS + tokens in .dev/tokens/) and ember-api's
# own database, so the REST API works locally as it does in a cluster.
"$bin/ember-dev-idp" --addr 127.0.0.1:18090 --dir "$dev" \
  --user alice@acme.example --user bob@acme.example:acme-data-science >"$dev/idp.log" 2>&1 &
pids+=($!)
PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -q \
  -c 'DROP DATABASE IF EXISTS ember_api' -c 'CREATE DATABASE ember_api' >/dev/null
# ember-api, too, runs with exactly its ClusterRole.
sed 's|^    client-key: .*|&\n    as: system:serviceaccount:ember-system:ember-api|' "$KUBECONFIG" >"$dev/api.kubeconfig"
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:18090/jwks.json >/dev/null 2>&1 && break
  sleep 0.1
done
KUBECONFIG="$dev/api.kubeconfig" "$bin/ember-api" --addr 127.0.0.1:18081 \
  --jwt-issuer http://127.0.0.1:18090 --jwt-audience ember --jwks-uri http://127.0.0.1:18090/jwks.json \
  --database-url "${DATABASE_URL%/*}/ember_api" >"$dev/api.log" 2>&1 &
pids+=($!)

kubectl apply --server-side -f examples/tenant-acme.yaml
if ! kubectl wait --for=condition=Ready tenant/acme --timeout=120s; then
  kubectl get tenant acme -o yaml; tail -n 50 "$dev/operator.log"; exit 1
fi
kubectl apply --server-side -f examples/modeldeployment-minilm.yaml
# kwok makes the model pods ready without running ember-runtime, so this
# checks the operator's side (Deployment, Service, autoscaler, status).
if ! kubectl -n tenant-acme wait --for=condition=Ready modeldeployment/minilm --timeout=120s; then
  kubectl -n tenant-acme get modeldeployment minilm -o yaml; tail -n 50 "$dev/operator.log"; exit 1
fi
curl -fsS http://127.0.0.1:18080/readyz >/dev/null
for _ in $(seq 1 300); do
  curl -fsS http://127.0.0.1:18081/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl get tenants,modeldeployments -A
kubectl -n tenant-acme get resourcequota,networkpolicy,rolebinding,secret
kubectl -n tenant-acme get deployment,service,horizontalpodautoscaler,poddisruptionbudget,pod

# The REST API, as alice (owner of acme): her tenants and their models.
alice=(-H "Authorization: Bearer $(cat "$dev/tokens/alice@acme.example.jwt")")
api=http://127.0.0.1:18081
echo "GET /v1/tenants as alice@acme.example:"
curl -fsS "${alice[@]}" "$api/v1/tenants"; echo
curl -fsS "${alice[@]}" "$api/v1/tenants/acme/deployments" | grep -q '"name":"minilm"' \
  || { echo "ember-api does not list acme's minilm" >&2; tail -n 30 "$dev/api.log"; exit 1; }
key=$(curl -fsS "${alice[@]}" -X POST -H 'Content-Type: application/json' \
  -d '{"name": "dev", "role": "view"}' "$api/v1/tenants/acme/api-keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
curl -fsS -H "Authorization: Bearer $key" "$api/v1/tenants/acme/deployments" | grep -q '"name":"minilm"' \
  || { echo "an API key of acme cannot read acme's deployments" >&2; exit 1; }

if [[ "${1:-}" == "--check" ]]; then
  echo "dev environment works"
  exit 0
fi
cat <<MSG

Ember is running. In another shell:  source .dev/env && kubectl get tenants
  operator: http://127.0.0.1:18080/metrics   (log: .dev/operator.log)
  api:      http://127.0.0.1:18081/v1/tenants (log: .dev/api.log), e.g.
            curl -H "Authorization: Bearer \$(cat .dev/tokens/alice@acme.example.jwt)" http://127.0.0.1:18081/v1/tenants/acme/deployments
Ctrl-C stops everything.
MSG
wait "${pids[0]}"
