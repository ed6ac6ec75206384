"""The ``pixgen`` command line: run | resume | plugins | info | models | classify | search | render.

Every command raises :class:`pixgen.errors.PixgenError` for problems the user can fix;
:func:`main` turns those into one message on stderr and the error's exit status. Set
``PIXGEN_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from pixgen.errors import PixgenError

app = typer.Typer(
    name="pixgen",
    help="Paint pictures by optimisation, guided by CLIP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        import platform

        import torch

        import pixgen

        sys.stdout.write(
            f"pixgen {pixgen.__version__} (torch {torch.__version__}, "
            f"Python {platform.python_version()})\n"
        )
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        is_eager=True,
        callback=_print_version,
        help="print pixgen's, torch's and Python's versions and exit",
    ),
) -> None:
    """Paint pictures by optimisation, guided by CLIP."""


# Each module adds its commands (its heavy imports happen inside the commands).
COMMAND_MODULES = [
    "pixgen.commands.run",
    "pixgen.commands.plugins",
    "pixgen.commands.info",
    "pixgen.commands.models",
    "pixgen.commands.clip",
    "pixgen.commands.render",
]

for _module_name in COMMAND_MODULES:
    importlib.import_module(_module_name).register(app)


_plugin_commands_added = False


def register_plugin_commands(extra: list[object] | None = None) -> None:
    """Let installed plugins (and ``extra`` ones) add commands via ``register_commands``."""
    global _plugin_commands_added
    from pixgen.plugins import default_plugins, load_plugins

    if extra:
        load_plugins(extra=extra).hook.register_commands(cli=app)
        return
    if not _plugin_commands_added:
        _plugin_commands_added = True
        default_plugins().hook.register_commands(cli=app)


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """click's ClickException, and typer's vendored copy of it where typer has one."""
    import click

    types: list[type[BaseException]] = [click.ClickException]
    try:
        from typer import _click

        types.append(_click.ClickException)
    except (ImportError, AttributeError):
        pass
    return tuple(types)


def _usage_message(exc: Any) -> str:
    """click's usage error as our one line: "no such option: --stepz … (see 'pixgen run -h')"."""
    message = exc.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)  # a usage error knows its command
    return f"{message} (see '{ctx.command_path} -h')" if ctx is not None else message


def _error(message: str) -> None:
    sys.stderr.write(f"error: {message.rstrip()}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pixgen`` script; returns the exit status."""
    try:
        register_plugin_commands()
        app(args=argv, standalone_mode=False, prog_name="pixgen")
    except PixgenError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _error("aborted")
        return 130
    except Exception as exc:  # click usage errors and the unexpected
        click_errors = _click_exception_types()
        if isinstance(exc, click_errors):
            click_error: Any = exc  # ClickException: show(), exit_code
            if type(exc).__name__ == "NoArgsIsHelpError":
                click_error.show()  # prints the help text
                return 0
            _error(_usage_message(exc))
            return int(click_error.exit_code)
        if os.environ.get("PIXGEN_DEBUG"):
            raise
        _error(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in pixgen or a plugin; run with PIXGEN_DEBUG=1 for the traceback."
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
