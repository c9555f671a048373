"""Placeholder for `bench regress`: being written (see the issues); replaced by the real module."""
import click


@click.command("regress", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Not yet available."""
    raise click.UsageError("bench regress is not available yet")
