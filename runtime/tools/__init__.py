"""The agent's tools: eleven built-ins, custom DenTools from entry points, and the interceptor."""
