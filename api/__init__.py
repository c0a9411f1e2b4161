"""den.api: the Agentfile and the Agent resource (shared by the CLI, operator and runtime)."""

from den.api.agentfile import BUILTIN_TOOLS, Agentfile, AgentSpec
from den.api.errors import DenError, InvalidAgentfile, Problem
from den.api.resource import API_VERSION, Agent, AgentStatus, Condition, to_agent, to_agentfile

__all__ = [
    "API_VERSION",
    "BUILTIN_TOOLS",
    "Agent",
    "AgentSpec",
    "AgentStatus",
    "Agentfile",
    "Condition",
    "DenError",
    "InvalidAgentfile",
    "Problem",
    "to_agent",
    "to_agentfile",
]
