#!/usr/bin/env bash
# Installs everything pybuild and its tests need on a fresh Debian 12 machine (run as root), idempotently:
#   scripts/setup.sh demo  -> busybox-static + the venv with pybuild
#   scripts/setup.sh test  -> also the referee tools (skopeo, umoci, runc, docker.io for `docker load`),
#                             the test registry, a real credential helper (docker-credential-pass over pass)
#                             and OpenSSH's agent (RUN --mount=type=ssh)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-test}"

packages=(python3-venv  # `python3 -m venv` on a Debian python (ensurepip is a package of its own)
          busybox-static iproute2 libseccomp2 uidmap slirp4netns  # rootless: newuidmap/newgidmap, user-mode network
          fuse-overlayfs)  # rootless: --snapshotter fuse-overlayfs, where the kernel refuses overlayfs
if [ "$mode" = test ] || [ "$mode" = bench ]; then
  packages+=(skopeo umoci runc docker-registry docker.io golang-docker-credential-helpers pass openssh-client
             gcc libc6-dev e2fsprogs)  # the confinement probe is compiled -static; chattr for a store test
fi
if [ "$mode" = bench ]; then
  packages+=(buildah time podman passt)  # scenario 9: rootless podman; pasta measured against slirp4netns
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras="test"
[ "$mode" = demo ] && extras=""
stamp=".venv/.installed-pth-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # editable_mode=compat: a plain .pth line with this directory instead of setuptools' import-hook finder,
  # which every `pybuild` start paid ~10 ms to import (a fully cached rebuild takes ~0.12 s in all).
  .venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat \
    -e ".${extras:+[$extras]}"
  touch "$stamp"
fi

# Byte-compile once: machines here set PYTHONDONTWRITEBYTECODE, so without this every pybuild run would
# recompile its modules (~50 ms of a 0.2 s cached rebuild, measured by bench/).
.venv/bin/python -m compileall -q grammar builder cache >/dev/null

# The busybox base image is built from the static binary Debian ships.
cp -f /bin/busybox testdata/busybox/busybox
