"""The ``camlens`` command line (click).

User errors (a bad name, a bad file) print one line and no traceback, unless ``--verbose``;
unknown names of models, layers, methods and classes exit with status 2 and the closest names; a
batch that could not read some files explains the others and exits with status 1.
"""

from __future__ import annotations

import click

from camlens.cli.audio import explain_audio
from camlens.cli.audit import audit
from camlens.cli.caption import caption
from camlens.cli.data import data
from camlens.cli.embed import embed
from camlens.cli.evaluate import evaluate
from camlens.cli.experiments import demo, reproduce, train
from camlens.cli.explain import explain, layers, methods
from camlens.cli.representations import invert, visualize
from camlens.cli.serve import serve

__all__ = ["main"]


class Group(click.Group):
    """Turns an unexpected exception into one line (exit status 1) unless --verbose."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence of a CLI
            if ctx.params.get("verbose") or (ctx.obj or {}).get("verbose"):
                raise
            click.echo(f"error: {error} (run with --verbose for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="camlens")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """camlens: why did this model predict that? Class activation maps for PyTorch models."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


for command in (methods, train, reproduce, demo, caption, explain, layers, audit, explain_audio,
                serve, data, evaluate, visualize, invert, embed):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
