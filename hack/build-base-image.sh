#!/usr/bin/env bash
# Build the offline base image `den-base:bookworm` from Debian packages.
#
# No container registry is needed: the root filesystem is assembled with
# debootstrap (variant=minbase) from the Debian mirror this machine's apt is
# already configured to use, then imported with `docker import`.
#
#   hack/build-base-image.sh            # no-op if den-base:bookworm exists
#   hack/build-base-image.sh --force    # rebuild unconditionally
#
# DEN_BASE_IMAGE and DEN_BASE_PACKAGES make other bases the same way (the egress
# proxy's base holds squid and nftables instead of Python; hack/build-egress-image.sh).
#
# The mirror is never hard-coded: it is the first URI serving the `bookworm`
# suite in /etc/apt/sources.list.d/*.sources (deb822), /etc/apt/sources.list
# or /etc/apt/sources.list.d/*.list (one-line format). DEN_DEBIAN_MIRROR
# overrides it. Needs root (debootstrap) and a running Docker Engine.
set -euo pipefail

IMAGE="${DEN_BASE_IMAGE:-den-base:bookworm}"
SUITE="bookworm"
PACKAGES="${DEN_BASE_PACKAGES:-python3,python3-venv,ca-certificates,tini,libsqlite3-0}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

force=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) force=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

if [[ $force -eq 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already exists (use --force to rebuild)"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; re-run as root"

# --- find the mirror in the apt configuration -------------------------------
find_mirror() {
  local f
  # deb822: paragraphs separated by blank lines; want Types ∋ deb, Suites ∋ bookworm.
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "" && enabled != "no") {
          split(uris, u, " "); print u[1]; found = 1; exit
        }
        types = ""; suites = ""; uris = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        line = $0
        key = tolower(line); sub(/:.*/, "", key)
        val = line; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }
    ' "$f" | head -n1 | grep . && return 0
  done
  # one-line format: deb [opts] URI suite component...
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      /^[ \t]*#/ { next }
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }
    ' "$f" | head -n1 | grep . && return 0
  done
  return 1
}

if [[ -n ${DEN_DEBIAN_MIRROR:-} ]]; then
  mirror="$DEN_DEBIAN_MIRROR"
else
  mirror="$(find_mirror)" || die "no apt source for suite '$SUITE' found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set DEN_DEBIAN_MIRROR"
fi
mirror="${mirror%/}"
log "Debian mirror (from apt config): $mirror"

# --- tools -------------------------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

keyring_args=()
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] && keyring_args=(--keyring="$keyring")

# --- debootstrap ---------------------------------------------------------------
workdir="$(mktemp -d "${TMPDIR:-/tmp}/den-base.XXXXXX")"
cleanup() {
  # Never follow anything out of the chroot; just remove the tree.
  [[ -n ${workdir:-} && -d $workdir ]] && rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT
rootfs="$workdir/rootfs"

log "debootstrap --variant=minbase $SUITE (packages: $PACKAGES)"
start=$SECONDS
debootstrap --variant=minbase --include="$PACKAGES" "${keyring_args[@]}" \
  "$SUITE" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 40 "$workdir/debootstrap.log" >&2
    die "debootstrap failed"
  }
log "debootstrap done in $((SECONDS - start))s"

# --- slim down ---------------------------------------------------------------
log "trimming rootfs"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/cache/debconf/*-old \
       "$rootfs"/var/lib/dpkg/*-old \
       "$rootfs"/var/log/* \
       "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* \
       "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/lintian \
       "$rootfs"/usr/share/linda \
       "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
find "$rootfs" -xdev -name '__pycache__' -type d -prune -exec rm -rf {} +
# Docker supplies these at run time; do not bake in the build host's.
: >"$rootfs/etc/resolv.conf"
rm -f "$rootfs/etc/hostname"
: >"$rootfs/etc/machine-id" 2>/dev/null || true
# Keep future apt installs (if any) lean as well.
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d" "$rootfs/etc/apt/apt.conf.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/den-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/den-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

# sanity: what the runtime image relies on
if [[ ,$PACKAGES, == *,python3,* ]]; then
  chroot "$rootfs" /usr/bin/python3 -c 'import sqlite3, ssl, venv, ensurepip' \
    || die "python3 in the rootfs is missing sqlite3/ssl/venv/ensurepip"
fi
[[ -x $rootfs/usr/bin/tini ]] || die "tini missing from rootfs"

# --- import ------------------------------------------------------------------
log "importing rootfs as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL den.dev/base=bookworm den.dev/base-packages=$PACKAGES" \
  --change 'CMD ["/bin/bash"]' \
  --message "den base image: debootstrap minbase $SUITE" \
  - "$IMAGE" >/dev/null

size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
log "built $IMAGE ($((size / 1024 / 1024)) MiB) in $((SECONDS - start))s"
