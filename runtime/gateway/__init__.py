"""The model gateway: the second program Den runs in a container (``python -m den.runtime.gateway``).

One per installation. It holds the provider keys and litellm; every agent
speaks the plain OpenAI protocol to it with a per-agent gateway token that
is worthless anywhere else. The gateway maps the token to that agent's model
settings and budget, forwards the call (directly for OpenAI-compatible
upstreams, through litellm for the providers that need translation), meters
tokens and cost per agent, model and UTC day in its ledger, and refuses calls
over budget.

The agent's code never imports this package (nor litellm): the layering test
says so.
"""
