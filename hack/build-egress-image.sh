#!/usr/bin/env bash
# Build den-egress:latest: the egress proxy (squid) and the agents' network containers
# (nftables + setpriv), from runtime/egress/. No Den Python code goes into it.
#
#   hack/build-egress-image.sh            # no-op when up to date
#   hack/build-egress-image.sh --force    # rebuild
#
# online   when debian:bookworm-slim is present locally, or DEN_EGRESS_BASE is set:
#          apt installs squid and nftables during the build.
# offline  otherwise: hack/build-base-image.sh makes den-egress-base:bookworm with
#          debootstrap (squid, nftables, tini included) and the build touches no index.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE="${DEN_EGRESS_IMAGE:-den-egress:latest}"
OFFLINE_BASE="den-egress-base:bookworm"
ONLINE_BASE="debian:bookworm-slim"
log() { printf '==> %s\n' "$*" >&2; }

force=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) force=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'error: unknown argument %s\n' "$arg" >&2; exit 1 ;;
  esac
done

if [[ -n ${DEN_EGRESS_BASE:-} ]]; then
  base="$DEN_EGRESS_BASE"
elif docker image inspect "$ONLINE_BASE" >/dev/null 2>&1; then
  base="$ONLINE_BASE"
else
  base="$OFFLINE_BASE"
fi
offline=0
[[ $base == "$OFFLINE_BASE" ]] && offline=1
if [[ $offline == 1 ]]; then
  DEN_BASE_IMAGE="$OFFLINE_BASE" DEN_BASE_PACKAGES="squid,nftables,tini,ca-certificates" \
    hack/build-base-image.sh
fi

hash="$( { printf 'base=%s id=%s offline=%s\n' "$base" \
            "$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null || echo missing)" "$offline"
          sha256sum runtime/egress/* hack/build-egress-image.sh; } | sha256sum | cut -d' ' -f1)"
current="$(docker image inspect -f '{{index .Config.Labels "den.dev/content-hash"}}' "$IMAGE" 2>/dev/null || true)"
if [[ $force == 0 && $current == "$hash" ]]; then
  echo "$IMAGE is up to date"
  exit 0
fi
log "building $IMAGE (base $base)"
docker build --quiet --label "den.dev/content-hash=$hash" --build-arg "BASE=$base" \
  --build-arg "OFFLINE=$offline" -t "$IMAGE" runtime/egress >/dev/null
log "built $IMAGE ($(( $(docker image inspect -f '{{.Size}}' "$IMAGE") / 1024 / 1024 )) MiB)"
