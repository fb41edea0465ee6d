#!/usr/bin/env bash
# Smoke test of nanofaas on a real Kubernetes cluster: the one the current kubeconfig context
# points at (kind, k3d, minikube, a cloud cluster). It
#
#   1. builds the images (scripts/docker-images.sh control-plane examples) and gets them to the
#      cluster: `kind load`, `k3d image import` or `minikube image load` for those contexts, else
#      a push to NANOFAAS_K8S_REGISTRY;
#   2. creates an admin API token and the Secret nanofaas-api-tokens with its hash;
#   3. deploys deploy/kubernetes (kubectl kustomize | kubectl apply) and waits for the rollout;
#   4. reaches the API through `kubectl port-forward`, registers the example functions
#      hello-python and hello-java (their images), invokes each once cold and three times warm,
#      and prints the timings;
#   5. deletes the functions and waits for their pods to go;
#   6. removes everything, on any exit (the namespace, with all it holds; the port-forward).
#
# Not run in CI (no cluster there); see docs/kubernetes.md. It refuses to run when the namespace
# nanofaas exists already, since it deletes it at the end.
#
# Usage: scripts/k8s-smoke.sh [--no-build] [--keep]
#   --no-build   use the images already on the Docker engine (NANOFAAS_IMAGE_TAG)
#   --keep       leave the deployment running at the end (delete it with
#                `kubectl delete namespace nanofaas`)
#
# Environment: KUBECTL (default kubectl); NANOFAAS_BIN (the nanofaas command; default
# target/release/nanofaas, built when missing); NANOFAAS_IMAGE_TAG (default latest);
# NANOFAAS_K8S_REGISTRY (push the images there, e.g. registry.example.com/team, for clusters
# that cannot load local images); NANOFAAS_K8S_TIMEOUT (seconds per wait, default 180).
#
# Exit codes: 0 passed, 1 a step failed, 2 bad usage or a missing tool.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf 'k8s-smoke: %s\n' "$*" >&2; }
die() { printf 'k8s-smoke: error: %s\n' "$*" >&2; exit 1; }
usage() { printf 'k8s-smoke: %s (see --help)\n' "$*" >&2; exit 2; }

build=1
keep=0
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown argument '$a'" ;;
  esac
done

kubectl=${KUBECTL:-kubectl}
tag=${NANOFAAS_IMAGE_TAG:-latest}
registry=${NANOFAAS_K8S_REGISTRY:-}
timeout=${NANOFAAS_K8S_TIMEOUT:-180}
ns=nanofaas
[[ $timeout =~ ^[0-9]+$ ]] || usage "NANOFAAS_K8S_TIMEOUT must be a number of seconds"
command -v "$kubectl" >/dev/null 2>&1 || usage "$kubectl is not installed"
command -v docker >/dev/null 2>&1 || usage "docker is not installed (it builds the images)"

context=$("$kubectl" config current-context 2>/dev/null) || die "no current kubeconfig context"
say "cluster: context $context"
if "$kubectl" get namespace "$ns" >/dev/null 2>&1; then
  die "namespace $ns exists already; this script deploys into it and deletes it at the end: delete it first or use another cluster"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/nanofaas-k8s-smoke.XXXXXX")
pf_pid=
deployed=0
cleanup() {
  local rc=$?
  if [[ -n $pf_pid ]]; then
    kill "$pf_pid" 2>/dev/null || true
    wait "$pf_pid" 2>/dev/null || true
  fi
  if ((deployed)); then
    if ((keep)); then
      say "--keep: the deployment stays (kubectl delete namespace $ns removes it)"
    else
      say "removing namespace $ns"
      "$kubectl" delete namespace "$ns" --ignore-not-found --wait=true --timeout="${timeout}s" >&2 \
        || say "could not remove namespace $ns: remove it by hand"
    fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. images -------------------------------------------------------------------------------
cp_image=nanofaas/control-plane:$tag
py_image=nanofaas/example-python-hello:$tag
java_image=nanofaas/example-java-hello:$tag
if ((build)); then
  say "building the images (scripts/docker-images.sh control-plane examples)"
  "$root/scripts/docker-images.sh" control-plane examples >/dev/null || die "building the images failed"
fi
for i in "$cp_image" "$py_image" "$java_image"; do
  docker image inspect "$i" >/dev/null 2>&1 || die "image $i is not on the Docker engine (run without --no-build)"
done
images=("$cp_image" "$py_image" "$java_image")
if [[ -n $registry ]]; then
  pushed=()
  for i in "${images[@]}"; do
    docker tag "$i" "$registry/$i" || die "docker tag $registry/$i failed"
    docker push "$registry/$i" >&2 || die "pushing $registry/$i failed"
    pushed+=("$registry/$i")
  done
  images=("${pushed[@]}")
  cp_image=${images[0]} py_image=${images[1]} java_image=${images[2]}
else
  case "$context" in
    kind-*) say "loading the images into kind cluster ${context#kind-}"
            kind load docker-image --name "${context#kind-}" "${images[@]}" >&2 || die "kind load failed" ;;
    k3d-*) say "importing the images into k3d cluster ${context#k3d-}"
           k3d image import -c "${context#k3d-}" "${images[@]}" >&2 || die "k3d image import failed" ;;
    minikube) say "loading the images into minikube"
              for i in "${images[@]}"; do minikube image load "$i" >&2 || die "minikube image load $i failed"; done ;;
    *) die "context $context is not kind, k3d or minikube: set NANOFAAS_K8S_REGISTRY to a registry the cluster pulls from" ;;
  esac
fi

# --- 2. token --------------------------------------------------------------------------------
nanofaas=${NANOFAAS_BIN:-$root/target/release/nanofaas}
if [[ ! -x $nanofaas ]]; then
  say "building the nanofaas command (cargo build --release -p nanofaas-cli)"
  cargo build --release -p nanofaas-cli >&2 || die "cargo build failed"
fi
token=$("$nanofaas" token create --role admin 2>/dev/null) || die "nanofaas token create failed"
[[ $token =~ ^nf_[0-9a-f]{64}$ ]] || die "unexpected token from nanofaas token create"
# The control plane is given only the token's SHA-256 (docs/security.md).
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
callback_secret=$(head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1)

# --- 3. deploy -------------------------------------------------------------------------------
deployed=1
say "deploying deploy/kubernetes into namespace $ns"
"$kubectl" apply -f "$root/deploy/kubernetes/namespace.yaml" >&2 || die "creating namespace $ns failed"
"$kubectl" -n "$ns" create secret generic nanofaas-api-tokens \
  --from-literal=tokens="admin:$hash" --from-literal=callback_secret="$callback_secret" >&2 \
  || die "creating the Secret nanofaas-api-tokens failed"
"$kubectl" kustomize "$root/deploy/kubernetes" >"$work/all.yaml" || die "kubectl kustomize failed"
# The control plane's image as the cluster knows it (the registry's name, with NANOFAAS_K8S_REGISTRY).
sed "s#image: nanofaas/control-plane:.*#image: $cp_image#" "$work/all.yaml" >"$work/deploy.yaml"
"$kubectl" apply -f "$work/deploy.yaml" >&2 || die "kubectl apply failed"
started=$SECONDS
if ! "$kubectl" -n "$ns" rollout status deployment/nanofaas-control-plane --timeout="${timeout}s" >&2; then
  "$kubectl" -n "$ns" describe pods -l app.kubernetes.io/component=control-plane >&2 || true
  "$kubectl" -n "$ns" logs -l app.kubernetes.io/component=control-plane --tail=40 >&2 || true
  die "the control plane did not become ready within ${timeout} s"
fi
say "control plane ready in $((SECONDS - started)) s"

# --- 4. functions ----------------------------------------------------------------------------
: >"$work/port-forward.log"
"$kubectl" -n "$ns" port-forward service/nanofaas :8080 >>"$work/port-forward.log" 2>&1 &
pf_pid=$!
port=
for _ in $(seq 1 100); do
  port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/port-forward.log" | head -n1) || port=
  [[ -n $port ]] && break
  kill -0 "$pf_pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n $port ]] || { cat "$work/port-forward.log" >&2; die "kubectl port-forward did not start"; }
export NANOFAAS_ENDPOINT="http://127.0.0.1:$port" NANOFAAS_TOKEN="$token"
say "API at $NANOFAAS_ENDPOINT (port-forward)"

cat >"$work/functions.yaml" <<EOF
functions:
  - name: hello-python
    image: $py_image
    resources: { memory: 128Mi, cpu: 500m }
    timeoutMs: 30000
  - name: hello-java
    image: $java_image
    resources: { memory: 256Mi, cpu: "1" }
    timeoutMs: 30000
EOF
"$nanofaas" fn apply -f "$work/functions.yaml" >&2 || die "nanofaas fn apply failed"

now_ms() { date +%s%3N; }
cold_re='"coldStart": *true'
# invoke NAME: one invocation; prints "MS COLD" (COLD is true or false), fails on an error.
invoke() {
  local t0 t1 out cold=false
  t0=$(now_ms)
  out=$("$nanofaas" -o json invoke "$1" -d '{"name": "Kubernetes"}') || die "invoking $1 failed: $out"
  t1=$(now_ms)
  [[ $out == *'"greeting"'* ]] || die "$1 answered without a greeting: $out"
  [[ $out =~ $cold_re ]] && cold=true
  echo "$((t1 - t0)) $cold"
}

results=()
for f in hello-python hello-java; do
  r=$(invoke "$f")
  read -r ms cold <<<"$r"
  [[ $cold == true ]] || die "$f: the first invocation was not a cold start"
  line="$f  cold ${ms} ms  warm"
  for _ in 1 2 3; do
    r=$(invoke "$f")
    read -r ms cold <<<"$r"
    [[ $cold == false ]] || die "$f: an invocation after the first was a cold start"
    line+=" ${ms} ms"
  done
  results+=("$line")
done
"$kubectl" -n "$ns" get pods -l app.kubernetes.io/managed-by=nanofaas -o wide >&2 || true

# --- 5. delete -------------------------------------------------------------------------------
for f in hello-python hello-java; do
  "$nanofaas" fn delete "$f" >&2 || die "nanofaas fn delete $f failed"
  left=
  for _ in $(seq 1 "$timeout"); do
    left=$("$kubectl" -n "$ns" get pods -l "nanofaas.dev/function=$f" -o name) || die "listing the pods of $f failed"
    [[ -z $left ]] && break
    sleep 1
  done
  [[ -z $left ]] || die "the pods of $f were not removed ${timeout} s after DELETE: $left"
done

echo "k8s-smoke: timings (each invocation through the CLI and kubectl port-forward, end to end)"
printf '  %s\n' "${results[@]}"
echo "k8s-smoke: passed on context $context"
