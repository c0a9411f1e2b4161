"""What the operator, the runtime and the CLI agree on, in one place.

The operator writes these files and variables; the runtime reads them; the
CLI shows them. Each fact lives here once and is imported, never copied.
"""

from __future__ import annotations

import os
import re

#: The port the agent's API listens on inside its container.
CONTAINER_PORT = 8800
#: The agent's home (its volume) inside the container.
HOME_DIR = "/den"
#: Where the operator delivers the agent's files on its volume.
CONFIG_DIR = f"{HOME_DIR}/.den"
CONFIG_FILE = f"{CONFIG_DIR}/agent.json"
ENV_FILE = f"{CONFIG_DIR}/env.json"

#: The variable holding the agent's API bearer token (delivered in the env file).
TOKEN_ENV = "DEN_API_TOKEN"
#: Where the agent's model calls go (the model gateway's OpenAI base URL) and the per-agent
#: token it sends there: worthless anywhere but at that gateway, for that agent.
GATEWAY_URL_ENV = "DEN_GATEWAY_URL"
GATEWAY_TOKEN_ENV = "DEN_GATEWAY_TOKEN"
#: The only paths an agent answers without its token (probes carry no secrets).
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})


def provider_key_name(provider: str) -> str:
    """The variable holding a provider's API key: ``openai`` -> ``OPENAI_API_KEY`` (litellm's rule)."""
    return re.sub(r"[^A-Z0-9]", "_", provider.upper()) + "_API_KEY"


def offline_litellm() -> None:
    """litellm reads its price map from the wheel instead of fetching it (call before importing it)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
