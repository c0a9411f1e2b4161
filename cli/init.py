"""den init: write a valid Agentfile, by questions or by flags."""

from __future__ import annotations

from pathlib import Path

import typer

from den.cli.main import app
from den.cli.output import say

DEFAULT_TOOLS = ["file_read", "file_write", "file_list", "memo_write", "memo_search"]


def render_agentfile(name: str, provider: str, model: str, system_prompt: str, tools: list[str]) -> str:
    """The Agentfile text ``den init`` writes: short, commented, valid."""
    from den.api.loader import dump_yaml

    body = dump_yaml(
        {
            "name": name,
            "model": {"provider": provider, "name": model},
            "identity": {"system_prompt": system_prompt},
            "tools": tools,
        }
    )
    return (
        "# Agentfile: what this agent is. Reference: docs/agentfile.md\n"
        "# Try it: den validate Agentfile && den up Agentfile\n" + body
    )


def _split_model(model: str) -> tuple[str, str]:
    from den.api.errors import DenError

    provider, sep, name = model.partition("/")
    if not sep or not provider or not name:
        raise DenError(
            f"--model {model!r} must be PROVIDER/NAME",
            hint="e.g. --model openai/gpt-4o-mini or --model ollama/llama3",
        )
    return provider, name


@app.command()
def init(
    name: str = typer.Option(None, "--name", help="Agent name (DNS label)."),
    model: str = typer.Option(None, "--model", help="PROVIDER/NAME, e.g. openai/gpt-4o-mini."),
    system_prompt: str = typer.Option(None, "--system-prompt", help="The agent's standing instructions."),
    tools: str = typer.Option(None, "--tools", help="Comma-separated tool names."),
    file: Path = typer.Option(Path("Agentfile"), "--file", "-f", help="Where to write."),
    non_interactive: bool = typer.Option(False, "--non-interactive", "-y", help="Ask nothing; use flags and defaults."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a new Agentfile (asks for name, model, system prompt and tools).

    Examples:

      den init

      den init --name helper --model openai/gpt-4o-mini --non-interactive

      den init --name scout --model ollama/llama3 --tools web_search,web_fetch -y
    """
    from den.api.agentfile import BUILTIN_TOOLS
    from den.api.errors import DenError, InvalidAgentfile
    from den.api.loader import load_text

    if file.exists() and not force:
        raise DenError(f"{file} already exists", hint="use --force to overwrite it")
    ask = not non_interactive
    if name is None:
        name = typer.prompt("Agent name", default=Path.cwd().name.lower()) if ask else "my-agent"
    if model is None:
        model = typer.prompt("Model (provider/name)", default="openai/gpt-4o-mini") if ask else "openai/gpt-4o-mini"
    if system_prompt is None:
        default_prompt = "You are a helpful assistant."
        system_prompt = typer.prompt("System prompt", default=default_prompt) if ask else default_prompt
    if tools is None:
        if ask:
            say("Built-in tools: " + ", ".join(BUILTIN_TOOLS))
            tools = typer.prompt("Tools (comma-separated)", default=",".join(DEFAULT_TOOLS))
        else:
            tools = ",".join(DEFAULT_TOOLS)
    provider, model_name = _split_model(model)
    tool_list = [t.strip() for t in tools.split(",") if t.strip()]
    text = render_agentfile(name, provider, model_name, system_prompt, tool_list)
    _, problems = load_text(text, str(file))
    if problems:
        raise InvalidAgentfile(problems)
    file.write_text(text, encoding="utf-8")
    say(f"[green]wrote[/green] {file} (agent {name}, model {provider}/{model_name})")
    say(f"next: den validate {file} && den apply -f {file}")
