"""The whole plugin API of synthbench: four hooks.

A plugin is a module named by an entry point in the ``synthbench`` group. It implements any of
these hooks with the :data:`synthbench.hookimpl` marker, and may declare the API version it was
written for as a module attribute ``SYNTHBENCH_API = 1`` (see :data:`HOOK_API_VERSION`).
"""

from __future__ import annotations

import pluggy

#: Version of this hook API. A plugin declaring another major version is not loaded.
HOOK_API_VERSION = 1

hookspec = pluggy.HookspecMarker("synthbench")
hookimpl = pluggy.HookimplMarker("synthbench")


@hookspec
def register_synthesizers(register):
    """Call ``register(cls)`` for each :class:`synthbench.Synthesizer` subclass the plugin adds,
    or ``register("package.module:Class", name="x")`` to import the class only when ``x`` is
    used (start-up then never imports the plugin's networks, torch included)."""


@hookspec
def register_metrics(register):
    """Call ``register(cls)`` (or ``register("module:Class", name=...)``) for each
    :class:`synthbench.Metric` subclass the plugin adds."""


@hookspec
def register_downstream_tasks(register):
    """Call ``register(cls)`` (or ``register("module:Class", name=...)``) for each
    :class:`synthbench.DownstreamTask` subclass the plugin adds."""


@hookspec
def register_commands(cli):
    """Add commands to the ``synthbench`` Typer app ``cli`` (e.g. ``@cli.command()``)."""
