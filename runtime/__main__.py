"""``python -m den.runtime``: serve the agent in ``DEN_CONFIG`` (the container's command)."""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from den.runtime.settings import ConfigError, Settings, apply_env, read_agent, read_env_file

    try:
        settings = Settings.from_env()
        env = read_env_file(settings.env_file)
        apply_env(env)
        agent = read_agent(settings.config)
    except ConfigError as exc:
        # Logging is not set up without an agent: one JSON line by hand.
        sys.stdout.write(json.dumps({"level": "error", "msg": str(exc)}) + "\n")
        return 2

    import logging

    import uvicorn

    from den.runtime.app import create_app
    from den.runtime.logging import configure_logging

    configure_logging(agent.name, settings.log_level)
    logging.getLogger("den.runtime").info(
        "starting",
        extra={"fields": {"namespace": agent.namespace, "generation": agent.metadata.generation,
                          "host": settings.host, "port": settings.port,
                          "env_file_variables": len(env)}},
    )
    app = create_app(agent, env=os.environ, secrets=env.values(), home=settings.home_dir,
                     config_path=settings.config)
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_config=None,
                log_level=settings.log_level, proxy_headers=False, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
