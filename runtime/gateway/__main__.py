"""``python -m den.runtime.gateway``: serve the model gateway (the den-gateway container's command).

=================================  ====================  =====================================
``DEN_GATEWAY_CONFIG_DIR``         ``/etc/den-gateway``  agents.json and keys.json (read-only)
``DEN_GATEWAY_DATA``               ``/data``             the ledger (its own volume)
``DEN_GATEWAY_HOST``               ``0.0.0.0``           listen address
``DEN_GATEWAY_PORT``               ``8900``              listen port
``DEN_GATEWAY_DIRECT``             ``1``                 0: OpenAI-compatible calls go through
                                                         litellm too (no direct forwarding)
``DEN_GATEWAY_MAX_REQUEST_BYTES``  ``33554432``          the largest request body (32 MiB);
                                                         a larger one is refused with 413
``DEN_LOG_LEVEL``                  ``info``              debug, info, warning or error
=================================  ====================  =====================================
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from den.api.contract import offline_litellm

offline_litellm()


def main() -> int:
    import uvicorn

    from den.runtime.gateway.app import DEFAULT_MAX_REQUEST_BYTES, build_app
    from den.runtime.logging import configure_logging

    level = os.environ.get("DEN_LOG_LEVEL", "info").lower()
    configure_logging("den-gateway", level)
    limit = os.environ.get("DEN_GATEWAY_MAX_REQUEST_BYTES", str(DEFAULT_MAX_REQUEST_BYTES))
    if not limit.isdigit() or int(limit) < 1024:
        sys.stdout.write(f"DEN_GATEWAY_MAX_REQUEST_BYTES: expected a number of bytes (1024 or more), got {limit!r}\n")
        return 2
    app = build_app(Path(os.environ.get("DEN_GATEWAY_CONFIG_DIR", "/etc/den-gateway")),
                    Path(os.environ.get("DEN_GATEWAY_DATA", "/data")),
                    direct=os.environ.get("DEN_GATEWAY_DIRECT", "1") != "0", max_request_bytes=int(limit))
    uvicorn.run(app, host=os.environ.get("DEN_GATEWAY_HOST", "0.0.0.0"),
                port=int(os.environ.get("DEN_GATEWAY_PORT", "8900")), access_log=False, log_config=None,
                log_level=level, proxy_headers=False, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
