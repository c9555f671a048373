"""Plugin discovery through the entry-point group `bench.plugins`.

Any installed distribution that declares
    [project.entry-points."bench.plugins"]
    myname = "mypkg.module:MyPlugin"
appears in `bench list` with no edit to the core.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points

from bench.contract import Plugin
from bench.params import UsageError

GROUP = "bench.plugins"


class DiscoveryError(Exception):
    """Installed plugins conflict (two with one name)."""


@dataclass
class Found:
    name: str
    target: str  # "module:attr" as declared
    dist: str  # distribution that declared it
    plugin: Plugin | None
    load_error: str | None


def discover() -> dict[str, Found]:
    """Load every declared plugin. A plugin that fails to import is kept with its error.

    Two entry points with one name is an error naming both, not a silent override.
    """
    found: dict[str, Found] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        plugin: Plugin | None = None
        err: str | None = None
        try:
            cls = ep.load()
            plugin = cls()
            declared = getattr(plugin, "name", "")
            if declared and declared != ep.name:
                err = f"entry point {ep.name!r} loads a plugin named {declared!r}"
                plugin = None
        except Exception as e:  # a broken third-party plugin must not break `bench list`
            err = f"{type(e).__name__}: {e}"
        if ep.name in found:
            prev = found[ep.name]
            if prev.target == ep.value:
                continue  # the same distribution seen twice on sys.path
            raise DiscoveryError(
                f"two plugins are named {ep.name!r}: {prev.target} (from {prev.dist}) "
                f"and {ep.value} (from {dist}); uninstall or rename one"
            )
        found[ep.name] = Found(ep.name, ep.value, dist, plugin, err)
    return dict(sorted(found.items()))


def _load_one(name: str) -> dict[str, Found]:
    """Load only the entry points called `name` (a worker needs one plugin, not all)."""
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    targets = {ep.value: ep for ep in eps}
    if len(targets) > 1:
        a, b = list(targets.values())[:2]
        raise DiscoveryError(
            f"two plugins are named {name!r}: {a.value} (from {getattr(a.dist, 'name', '?')}) "
            f"and {b.value} (from {getattr(b.dist, 'name', '?')}); uninstall or rename one"
        )
    if not eps:
        return discover()  # unknown: the full list gives the closest names
    ep = eps[0]
    try:
        return {name: Found(name, ep.value, getattr(ep.dist, "name", "?"), ep.load()(), None)}
    except Exception as e:
        return {name: Found(name, ep.value, getattr(ep.dist, "name", "?"), None, f"{type(e).__name__}: {e}")}


def get_plugin(name: str, found: dict[str, Found] | None = None) -> Plugin:
    found = _load_one(name) if found is None else found
    f = found.get(name)
    if f is None:
        close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown plugin {name!r}{hint} (installed: {', '.join(found) or 'none'})"
        )
    if f.plugin is None:
        raise UsageError(f"plugin {name!r} ({f.target}) failed to load: {f.load_error}")
    return f.plugin
