#!/usr/bin/env bash
# Build Den's images (each also tagged :latest), sharing their layers:
#   den-runtime:<version>   an agent (no litellm, no provider keys)
#   den-gateway:<version>   the model gateway (litellm, the keys, the ledger)
#   den-operator:<version>  only with --operator: the Kubernetes operator of the
#                           Helm chart (the k8s extra: kopf, kubernetes; no litellm)
# and, through hack/build-egress-image.sh, den-egress:latest (the egress proxy and the
# agents' network containers: squid and nftables from Debian).
#
#   hack/build-image.sh              # no-op when the images are up to date
#   hack/build-image.sh --operator   # den-operator too (make image-operator)
#   hack/build-image.sh --force      # rebuild even if up to date
#
# Up to date = the image exists with a label den.dev/content-hash equal to the
# sha256 over runtime/Dockerfile, pyproject.toml, this script, every *.py under
# den/ api/ operator/ runtime/ cli/, and the chosen base/mode. Of the images
# asked for, only the stale ones are built; the others are just re-tagged :latest.
#
# Two paths:
#   online   when `python:3.12-slim` is present locally, or DEN_IMAGE_BASE is
#            set to something other than den-base:bookworm. Only the
#            den-agent wheel is built on the host; the image build fetches
#            dependencies from PyPI (OFFLINE=0).
#   offline  otherwise. hack/build-base-image.sh makes den-base:bookworm with
#            debootstrap, every wheel is built on the host
#            (${PYTHON:-.venv/bin/python}, falling back to python3; it must be
#            the same Python minor version as the base) into the cache
#            .den-build/wheels, and the image build never touches an index
#            (OFFLINE=1).
#
# Environment: DEN_IMAGE_BASE, PYTHON, DEN_IMAGE_REPO (default den-runtime),
# DEN_GATEWAY_REPO (default den-gateway), DEN_OPERATOR_REPO (default den-operator).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

REPO="${DEN_IMAGE_REPO:-den-runtime}"
GATEWAY_REPO="${DEN_GATEWAY_REPO:-den-gateway}"
OPERATOR_REPO="${DEN_OPERATOR_REPO:-den-operator}"
OFFLINE_BASE="den-base:bookworm"
ONLINE_BASE="python:3.12-slim"
BUILD_DIR="$ROOT/.den-build"
SRC_DIRS=(den api operator runtime cli)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%ss' "$((SECONDS - $1))"; }

force=0
operator=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) force=1 ;;
    --operator) operator=1 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--operator] [--force])" ;;
  esac
done

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine"

# --- version (parsed, not imported) ------------------------------------------
version="$(python3 -c '
import re, sys
src = open("den/__init__.py", encoding="utf-8").read()
m = re.search(r"^__version__\s*=\s*[\x27\"]([^\x27\"]+)[\x27\"]", src, re.M)
sys.exit("no __version__ in den/__init__.py") if not m else print(m.group(1))
')"
IMAGE="$REPO:$version"
GATEWAY_IMAGE="$GATEWAY_REPO:$version"
OPERATOR_IMAGE="$OPERATOR_REPO:$version"
# What to build: Dockerfile targets, their images, their repositories. The operator only
# when asked (the test fixture's runs do not pay for it).
targets=(runtime gateway)
images=("$IMAGE" "$GATEWAY_IMAGE")
repos=("$REPO" "$GATEWAY_REPO")
if [[ $operator == 1 ]]; then
  targets+=(operator)
  images+=("$OPERATOR_IMAGE")
  repos+=("$OPERATOR_REPO")
fi

# --- path: online (PyPI during build) or offline (local wheels) --------------
if [[ -n ${DEN_IMAGE_BASE:-} ]]; then
  base="$DEN_IMAGE_BASE"
elif docker image inspect "$ONLINE_BASE" >/dev/null 2>&1; then
  base="$ONLINE_BASE"
else
  base="$OFFLINE_BASE"
fi
if [[ $base == "$OFFLINE_BASE" ]]; then offline=1; else offline=0; fi

# --- content hash ---------------------------------------------------------------
# Over a source tree (the checkout, or the snapshot the image is built from),
# this script, the base name and the base image ID (so a rebuilt base, e.g.
# build-base-image.sh --force, also rebuilds the runtime).
compute_hash() {
  local dir="$1" base_id py_files
  base_id="$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null || echo missing)"
  (
    cd "$dir"
    mapfile -t py_files < <(find "${SRC_DIRS[@]}" -name '*.py' -type f -not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort)
    printf 'base=%s id=%s offline=%s\n' "$base" "$base_id" "$offline"
    printf '%s  hack/build-image.sh\n' "$(sha256sum <"$ROOT/hack/build-image.sh" | cut -d' ' -f1)"
    sha256sum runtime/Dockerfile pyproject.toml "${py_files[@]}"
  ) | sha256sum | cut -d' ' -f1
}
content_hash="$(compute_hash "$ROOT")"

mkdir -p "$BUILD_DIR"
# Serialise concurrent builds (parallel test runs) on the same checkout.
exec 9>"$BUILD_DIR/build.lock"
flock 9

# den-egress (the egress proxy and the agents' network containers) has no Den Python code:
# it has its own script and its own up-to-date check, and is built in the background while
# the rest builds (on a fresh machine its debootstrap overlaps the runtime's).
if [[ $EUID -eq 0 ]] && ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"  # once, before two debootstraps would race for apt's lock
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
"$ROOT/hack/build-egress-image.sh" &
egress_pid=$!
finish_egress() { wait "$egress_pid" || die "building den-egress failed (see above)"; }

current_hash() {
  docker image inspect -f '{{index .Config.Labels "den.dev/content-hash"}}' "$1" 2>/dev/null || true
}

# An up-to-date image is only re-tagged :latest (cheap, idempotent); the stale ones are built.
stale=()
for i in "${!images[@]}"; do
  if [[ $force == 0 && "$(current_hash "${images[i]}")" == "$content_hash" ]]; then
    docker tag "${images[i]}" "${repos[i]}:latest"
  else
    stale+=("$i")
  fi
done
if [[ ${#stale[@]} == 0 ]]; then
  finish_egress
  echo "${images[*]} up to date"
  exit 0
fi
building=()
for i in "${stale[@]}"; do building+=("${images[i]}"); done

t_total=$SECONDS
log "building ${building[*]} (base $base, $([[ $offline == 1 ]] && echo offline || echo online), hash ${content_hash:0:12})"

# --- base image (offline path), in the background while the wheels are built ---------
base_pid=""
if [[ $offline == 1 ]]; then
  "$ROOT/hack/build-base-image.sh" &
  base_pid=$!
fi

# --- host python for building wheels --------------------------------------
PY="${PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x $PY ]] || ! "$PY" -m pip --version >/dev/null 2>&1; then
  PY="$(command -v python3)" || die "no python3 to build wheels with"
  "$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip"
fi

# --- clean source snapshot (no stale build/ dir, no __pycache__) ------------
src="$BUILD_DIR/src"
rm -rf "$src"
mkdir -p "$src"
extra=()
for f in README.md README.rst LICENSE NOTICE MANIFEST.in setup.cfg setup.py; do
  [[ -e $f ]] && extra+=("$f")
done
tar -c --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
  pyproject.toml "${extra[@]}" "${SRC_DIRS[@]}" | tar -x -C "$src"
# pyproject declares readme = "README.md"; setuptools refuses a missing one.
[[ -e $src/README.md ]] || printf '# den-agent\n' >"$src/README.md"


pip_q=(--quiet --disable-pip-version-check)
# Run a command with its output in a log file; show the tail only if it fails.
logged() {
  local logfile="$1"; shift
  "$@" >"$logfile" 2>&1 || { tail -n 40 "$logfile" >&2; die "failed: $* (full log: $logfile)"; }
}
# Reproducible den-agent wheel (fixed zip timestamps) so unchanged code hits the layer cache.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"

# --- wheels ----------------------------------------------------------------------
t=$SECONDS
context="$BUILD_DIR/context"
rm -rf "$context"
mkdir -p "$context/wheels/den" "$context/wheels/deps" "$context/wheels/gateway" "$context/wheels/operator"
cp runtime/Dockerfile "$context/Dockerfile"

if [[ $offline == 1 ]]; then
  wheels="$BUILD_DIR/wheels"
  mkdir -p "$wheels"
  rm -f "$wheels"/den_agent-*.whl
  # setuptools+wheel are cached too, so the build backend resolves offline next time.
  extras=gateway
  [[ $operator == 0 ]] || extras=gateway,k8s
  log "building wheels into .den-build/wheels (cache-only first)"
  if ! "$PY" -m pip wheel "${pip_q[@]}" --no-index --find-links "$wheels" --wheel-dir "$wheels" "$src[$extras]" 2>"$BUILD_DIR/pip-offline.log"; then
    log "cache incomplete; fetching missing wheels from the package index"
    logged "$BUILD_DIR/pip-wheel.log" \
      "$PY" -m pip wheel "${pip_q[@]}" --find-links "$wheels" --wheel-dir "$wheels" "$src[$extras]" setuptools wheel
  fi
  den_wheel="$(ls "$wheels"/den_agent-*.whl)"
  # The exact sets the images need (the cache may hold older versions too): the agent's,
  # and what the gateway adds on top of it.
  resolve() {  # resolve REPORT REQUIREMENT -> the local wheel paths, one a line (not den-agent)
    logged "$BUILD_DIR/pip-report.log" \
      "$PY" -m pip install "${pip_q[@]}" --dry-run --ignore-installed --no-index \
      --find-links "$wheels" --report "$1" "$2"
    "$PY" - "$1" <<'EOF'
import json, sys, urllib.parse, urllib.request
report = json.load(open(sys.argv[1]))
for item in report["install"]:
    if item["metadata"]["name"].lower().replace("_", "-") == "den-agent":
        continue
    url = item["download_info"]["url"]
    if not url.startswith("file:") or not url.endswith(".whl"):
        sys.exit(f"not a local wheel: {url}")
    print(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
EOF
  }
  mapfile -t dep_wheels < <(resolve "$BUILD_DIR/report.json" "$den_wheel")
  mapfile -t all_wheels < <(resolve "$BUILD_DIR/report-gateway.json" "$den_wheel[gateway]")
  [[ ${#dep_wheels[@]} -gt 0 ]] || die "could not resolve the dependency wheels (see $BUILD_DIR/report.json)"
  mapfile -t gateway_wheels < <(comm -13 <(printf '%s\n' "${dep_wheels[@]}" | sort) <(printf '%s\n' "${all_wheels[@]}" | sort))
  [[ ${#gateway_wheels[@]} -gt 0 ]] || die "the gateway adds no wheels: is litellm in the [gateway] extra?"
  for w in "${dep_wheels[@]}"; do
    ln "$w" "$context/wheels/deps/" 2>/dev/null || cp "$w" "$context/wheels/deps/"
  done
  for w in "${gateway_wheels[@]}"; do
    ln "$w" "$context/wheels/gateway/" 2>/dev/null || cp "$w" "$context/wheels/gateway/"
  done
  operator_note=""
  if [[ $operator == 1 ]]; then
    # The operator's set is computed like the gateway's: the k8s extra minus the agent's wheels.
    mapfile -t k8s_wheels < <(resolve "$BUILD_DIR/report-operator.json" "$den_wheel[k8s]")
    mapfile -t operator_wheels < <(comm -13 <(printf '%s\n' "${dep_wheels[@]}" | sort) <(printf '%s\n' "${k8s_wheels[@]}" | sort))
    [[ ${#operator_wheels[@]} -gt 0 ]] || die "the operator adds no wheels: are kopf and kubernetes in the [k8s] extra?"
    for w in "${operator_wheels[@]}"; do
      ln "$w" "$context/wheels/operator/" 2>/dev/null || cp "$w" "$context/wheels/operator/"
    done
    operator_note=" + ${#operator_wheels[@]} for the operator"
  fi
  non_manylinux=$(printf '%s\n' "${dep_wheels[@]##*/}" | grep -E 'linux_[a-z0-9_]+\.whl$' | grep -v manylinux || true)
  [[ -z $non_manylinux ]] || log "note: built locally (host-linked) wheels: ${non_manylinux//$'\n'/ }"
  log "wheels ready: 1 + ${#dep_wheels[@]} agent dependencies + ${#gateway_wheels[@]} for the gateway$operator_note ($(elapsed $t))"
else
  log "building the den-agent wheel"
  rm -f "$BUILD_DIR"/wheels-online/den_agent-*.whl
  logged "$BUILD_DIR/pip-wheel.log" \
    "$PY" -m pip wheel "${pip_q[@]}" --no-deps --wheel-dir "$BUILD_DIR/wheels-online" "$src"
  den_wheel="$(ls "$BUILD_DIR"/wheels-online/den_agent-*.whl)"
  log "wheel ready ($(elapsed $t))"
fi
ln "$den_wheel" "$context/wheels/den/" 2>/dev/null || cp "$den_wheel" "$context/wheels/den/"
# The classic builder handles empty dirs, but keep COPY sources non-empty anyway.
touch "$context/wheels/deps/.keep" "$context/wheels/gateway/.keep" "$context/wheels/operator/.keep"

# --- the base image, and its Python against the wheels' ----------------------------
if [[ -n $base_pid ]]; then
  wait "$base_pid" || die "building the base image $base failed (see above)"
  log "base image ready"
  host_pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  base_pyver="$(docker run --rm --network none --entrypoint python3 "$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [[ $host_pyver == "$base_pyver" ]] || die "wheels are built with $PY (Python $host_pyver) but $base has Python $base_pyver; set PYTHON to a python$base_pyver"
fi

# The label describes exactly what goes into the image (others may be editing
# the checkout meanwhile; the next run then sees a different hash and rebuilds).
content_hash="$(compute_hash "$src")"

# --- docker build ----------------------------------------------------------------
old_ids="$(docker image inspect -f '{{.Id}}' "${building[@]}" 2>/dev/null || true)"
t=$SECONDS
# den.dev/component is a LABEL in the Dockerfile (cached); each --label is one more
# uncached build step with the classic builder, which builds every stage up to the target:
# the runtime's build makes deps, system, gateway and runtime; the gateway's then finds them
# all in the cache; the operator (the last stage) is built only when asked.
build() {  # build TARGET IMAGE REPO; each step's start time in the log, a failure's tail shown
  local logfile="$BUILD_DIR/docker-build-$1.log" began=$SECONDS
  log "docker build --target $1 -t $2 -t $3:latest (log: ${logfile#"$ROOT"/})"
  if ! docker build \
      --label "den.dev/content-hash=$content_hash" \
      --build-arg "BASE=$base" \
      --build-arg "OFFLINE=$offline" \
      --target "$1" \
      -t "$2" -t "$3:latest" \
      "$context" 2>&1 | while IFS= read -r line; do printf '%4ss %s\n' "$((SECONDS - began))" "$line"; done >"$logfile"; then
    tail -n 40 "$logfile" >&2
    die "docker build --target $1 failed (full log: $logfile)"
  fi
}
for i in "${stale[@]}"; do
  build "${targets[i]}" "${images[i]}" "${repos[i]}"
done
log "docker build done ($(elapsed $t))"

# Drop the images this build replaced, if nothing else refers to them any more.
for old_id in $old_ids; do
  if [[ -z "$(docker image inspect -f '{{join .RepoTags " "}}' "$old_id" 2>/dev/null)" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
done

for image in "${building[@]}"; do
  size="$(docker image inspect -f '{{.Size}}' "$image")"
  log "built $image ($((size / 1024 / 1024)) MiB)"
done
finish_egress
log "done in $(elapsed $t_total)"
