"""Optional dependencies: what only some users need is an extra of the package
(``pip install 'tacotrain[tune]'`` ...), see pyproject.toml. A command that needs a missing
one stops with :class:`MissingExtra` naming the package and the install command, instead of a
bare ``ModuleNotFoundError`` from deep inside."""

from __future__ import annotations

import importlib.util


class MissingExtra(RuntimeError):
    """An optional dependency that this command needs is not installed."""


def require(extra: str, what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` unless every module in ``modules`` can be imported; ``what``
    says what needs them (a command or a config key), ``extra`` which extra installs them."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, which is not installed: "
                           f"pip install 'tacotrain[{extra}]'")
