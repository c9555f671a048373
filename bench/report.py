"""Placeholder for `bench report`: being written (see the issues); replaced by the real module."""
import click


@click.command("report", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Not yet available."""
    raise click.UsageError("bench report is not available yet")
