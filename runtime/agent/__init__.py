"""The agent: context building, the tool-calling loop, checks, sessions."""
