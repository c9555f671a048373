"""Plugin discovery through the entry-point group `bench.plugins`.

Any installed distribution that declares
    [project.entry-points."bench.plugins"]
    myname = "mypkg.module:MyPlugin"
appears in `bench list` with no edit to the core. Each plugin is checked against the contract
(bench.contract.plugin_problem: a frozen Params dataclass, no flag that a `bench run` option
would swallow, well-formed claims whose evidence metric is declared); a plugin that fails to
import or breaks the contract is kept as one line with the reason and never breaks the others.
Two installed plugins with one name, or two plugins declaring one claim id, is an error naming both.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from bench.contract import Claim, Plugin, plugin_problem
from bench.errors import UsageError

GROUP = "bench.plugins"


class DiscoveryError(UsageError):
    """Installed plugins conflict (two with one name, one claim id declared twice): exit 2."""


@dataclass
class Found:
    name: str
    target: str  # "module:attr" as declared
    dist: str  # distribution that declared it
    plugin: Plugin | None
    load_error: str | None


def _dist(ep: EntryPoint) -> str:
    return getattr(getattr(ep, "dist", None), "name", None) or "?"


def _load(ep: EntryPoint) -> Found:
    try:
        cls = ep.load()
        plugin = cls()
    except Exception as e:  # a broken third-party plugin must not break `bench list`
        return Found(ep.name, ep.value, _dist(ep), None, f"{type(e).__name__}: {e}")
    if not isinstance(plugin, Plugin):
        return Found(ep.name, ep.value, _dist(ep), None, "not a bench.contract.Plugin")
    declared = getattr(plugin, "name", "")
    if declared != ep.name:
        return Found(ep.name, ep.value, _dist(ep), None, f"entry point {ep.name!r} loads a plugin named {declared!r}")
    try:
        why = plugin_problem(plugin)
    except Exception as e:
        why = f"contract check failed: {type(e).__name__}: {e}"
    if why:
        return Found(ep.name, ep.value, _dist(ep), None, f"breaks the plugin contract: {why}")
    return Found(ep.name, ep.value, _dist(ep), plugin, None)


def _conflict(name: str, a: EntryPoint, b: EntryPoint) -> DiscoveryError:
    return DiscoveryError(
        f"two plugins are named {name!r}: {a.value} (from {_dist(a)}) and {b.value} (from {_dist(b)}); "
        "uninstall or rename one"
    )


def discover() -> dict[str, Found]:
    """Load every declared plugin, sorted by name."""
    eps: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        prev = eps.get(ep.name)
        if prev is not None:
            if prev.value == ep.value:
                continue  # the same distribution seen twice on sys.path
            raise _conflict(ep.name, prev, ep)
        eps[ep.name] = ep
    found = {name: _load(ep) for name, ep in sorted(eps.items())}
    owner: dict[str, str] = {}
    for f in found.values():
        for c in f.plugin.claims if f.plugin else ():
            if c.id in owner:
                raise DiscoveryError(f"claim {c.id!r} is declared by two plugins: {owner[c.id]} and {f.name}")
            owner[c.id] = f.name
    return found


def _load_one(name: str) -> dict[str, Found]:
    """Load only the entry points called `name` (a worker needs one plugin, not all)."""
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    targets = {ep.value: ep for ep in eps}
    if len(targets) > 1:
        a, b = list(targets.values())[:2]
        raise _conflict(name, a, b)
    if not eps:
        return discover()  # unknown: the full list gives the closest names
    return {name: _load(eps[0])}


def get_plugin(name: str, found: dict[str, Found] | None = None) -> Plugin:
    found = _load_one(name) if found is None else found
    f = found.get(name)
    if f is None:
        close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown plugin {name!r}{hint} (installed: {', '.join(found) or 'none'})")
    if f.plugin is None:
        raise UsageError(f"plugin {name!r} ({f.target}) cannot be used: {f.load_error}")
    return f.plugin


def all_claims(found: dict[str, Found] | None = None) -> list[tuple[str, Claim]]:
    """(owning plugin, claim) of every usable installed plugin, in plugin order then declaration order."""
    found = discover() if found is None else found
    return [(f.name, c) for f in found.values() if f.plugin for c in f.plugin.claims]
