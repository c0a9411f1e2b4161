#!/usr/bin/env bash
# `make demo`: the image, a model, the hello agent up, one real chat request through its API.
set -euo pipefail
cd "$(dirname "$0")/.."
DEN=".venv/bin/den"
PY=".venv/bin/python"
export LITELLM_LOCAL_MODEL_COST_MAP=True
home="${DEN_HOME:-$HOME/.den}"
mkdir -p "$home"

# The venv (make dev) and the images are independent: on a fresh machine they are made side by
# side (the images' wheels are built with the same Python the venv is made from).
mkdir -p .den-build
started=$SECONDS
make --no-print-directory dev >.den-build/dev.log 2>&1 &
dev_pid=$!
PYTHON="$(command -v "${PYTHON:-python3}")" bash hack/build-image.sh
if ! wait "$dev_pid"; then
  tail -n 30 .den-build/dev.log >&2
  echo "error: make dev failed (full log: .den-build/dev.log)" >&2
  exit 1
fi
echo "== venv and images ready in $((SECONDS - started))s"

# No provider key configured: run Den's scripted model where the container can reach it
# (the Docker bridge gateway, i.e. host.docker.internal; this machine only).
gateway="$("$PY" -c 'from den.operator.docker_backend import host_gateway_ip; print(host_gateway_ip())')"
port=8765
if ! curl -fsS "http://${gateway}:${port}/v1/models" >/dev/null 2>&1; then
  echo "== starting the scripted model on ${gateway}:${port} (log: ${home}/dev-model.log)"
  nohup "$DEN" dev model --host "$gateway" --port "$port" --rules examples/hello/scripted-rules.yaml \
    >"${home}/dev-model.log" 2>&1 &
  echo $! > "${home}/dev-model.pid"
  for _ in $(seq 1 50); do
    curl -fsS "http://${gateway}:${port}/v1/models" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

echo "== den up examples/hello/Agentfile"
"$DEN" up examples/hello/Agentfile

api="$("$DEN" api hello -o json)"
endpoint="$(printf '%s' "$api" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])')"
token="$(printf '%s' "$api" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
echo "== asking the agent through its OpenAI-compatible API at ${endpoint}/v1"
"$PY" - "$endpoint" "$token" <<'PYEOF'
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
reply = client.chat.completions.create(
    model="hello", messages=[{"role": "user", "content": "Hello, who are you?"}]
)
print("\nhello says:", reply.choices[0].message.content, "\n")
PYEOF

cat <<'TXT'
Try next:
  .venv/bin/den status                     # phase, endpoint, CPU, memory, uptime
  .venv/bin/den api hello                  # URL and a ready curl line
  .venv/bin/den logs hello --tail 5        # one JSON object per line
  .venv/bin/den exec hello -- ls -la /den  # inside its sandbox
  .venv/bin/den down hello                 # stop it; its volume stays
  .venv/bin/den destroy hello --yes        # remove it and its memory
TXT
