"""The `allinone` command: a thin shell over the Assistant and the jobs.

This module is the click group and its list of commands; each command group lives in its own
module (chat, sessions, classify, serve, models, measuring), and what they share in
app.cli.common (model flags, loading, errors as one line) and app.cli.progress (progress bars).
The commands import their heavy parts inside themselves, so `allinone --help` stays instant.
"""

from __future__ import annotations

import click

from app.cli import chat, classify, measuring, models, serve, sessions


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="allinone")
def main() -> None:
    """All-in-One: one small local LLM for sentiment, empathetic chat, and both at once."""


main.add_command(chat.chat)
main.add_command(chat.run)
main.add_command(sessions.sessions)
main.add_command(classify.classify)
main.add_command(serve.serve)
main.add_command(models.roles)
main.add_command(models.download)
main.add_command(models.train_head)
main.add_command(measuring.evaluate)
main.add_command(measuring.eval_chat)
main.add_command(measuring.bench)
