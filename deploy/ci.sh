#!/usr/bin/env bash
# deploy/ci.sh: the Kubernetes packaging's CI step, from the repository root
# on a fresh machine with only Go (as root or not):
#   - installs helm into .ci/bin (from the Go module proxy);
#   - helm lint --strict and helm template for every value set in
#     helm/twc-auth-proxy/ci/, and for the example chart that includes the
#     sidecar (helm/examples/dashboard-with-sidecar);
#   - kustomize-builds deploy/ when kubectl is there;
#   - builds the release binary exactly as the Dockerfile does
#     (deploy/build.sh) and checks that it is statically linked.
# Then the Go tests check every object strictly; they find helm by $HELM:
#   bash deploy/ci.sh && HELM=$PWD/.ci/bin/helm go test -race ./deploy/...
# Sourced (. deploy/ci.sh), it leaves HELM exported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

HELM_VERSION=v3.22.0
bin="$PWD/.ci/bin"
helm="$bin/helm"
mkdir -p "$bin"

echo "== helm $HELM_VERSION"
# Built outside this module (pkg@version): go.mod is untouched. Quick when
# the build cache has it. The -X gives helm its full version, as releases do.
GOBIN="$bin" go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$helm" version --short

chart=helm/twc-auth-proxy
shopt -s nullglob
sets=("$chart"/ci/*-values.yaml)
if [ "${#sets[@]}" -lt 3 ]; then
  echo "expected at least 3 value sets in $chart/ci, found ${#sets[@]}" >&2
  exit 1
fi
for values in "${sets[@]}"; do
  echo "== helm lint + template: $values"
  "$helm" lint --strict "$chart" -f "$values"
  "$helm" template twc "$chart" --namespace twc -f "$values" >/dev/null
done

echo "== helm: a chart without a session secret is refused"
if out=$("$helm" template twc "$chart" -f "$chart/ci/default-values.yaml" --set session.secret= 2>&1); then
  echo "helm template rendered without session.secret" >&2
  exit 1
fi
grep -q "session.secret is required" <<<"$out" || { echo "$out" >&2; exit 1; }

echo "== helm lint + template: the example chart that includes the sidecar"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -R helm/examples/dashboard-with-sidecar "$tmp/example"
rm -rf "$tmp/example/charts" "$tmp/example/Chart.lock"
mkdir -p "$tmp/example/charts"
cp -R "$chart" "$tmp/example/charts/twc-auth-proxy"
"$helm" lint --strict "$tmp/example" -f "$tmp/example/ci-values.yaml"
"$helm" template twc "$tmp/example" -f "$tmp/example/ci-values.yaml" >/dev/null

if command -v kubectl >/dev/null 2>&1; then
  echo "== kubectl kustomize deploy"
  kubectl kustomize deploy >/dev/null
else
  echo "== kubectl not installed: kustomize build of deploy/ skipped (the Go test checks its resources)"
fi

echo "== static binary, as the Dockerfile builds it (deploy/build.sh)"
sh deploy/build.sh "$bin/twc-auth-proxy"
go run ./deploy/checkstatic "$bin/twc-auth-proxy"

export HELM="$helm"
echo "deploy/ci.sh: OK (for the tests: HELM=$HELM)"
