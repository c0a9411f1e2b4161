"""The runtime's HTTP API, one router per concern: health, OpenAI-compatible, Den's own."""
