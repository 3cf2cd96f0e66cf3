"""A griffe extension: the docstrings' Sphinx roles as mkdocstrings cross-references.

The docstrings are shared with the code's readers and written with Sphinx roles
(``:class:`Dataset```, ``:func:`~datapruning.scores.select```, ``:mod:`...```), which
mkdocstrings does not read. At build time each role becomes an *optional* autorefs
reference to the name it resolves to from the docstring's own scope: a link where
the site documents that object, plain code where it does not (a private helper),
so ``mkdocs build --strict`` never fails on a name the API pages leave out. The
docstrings themselves are not edited.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:class|func|mod|data|meth|attr|exc|obj):`(~?)([^`<>]+?)`")


def _target(obj: Object, name: str) -> str:
    """The full path ``name`` means in ``obj``'s docstring (as written when unresolvable)."""
    if name.startswith("datapruning."):
        return name
    head, _, rest = name.partition(".")
    scopes = [obj, *([obj.parent] if obj.parent is not None else [])]
    for scope in scopes:
        try:
            resolved = scope.resolve(head)
        except Exception:  # griffe's NameResolutionError, or an alias it cannot follow
            continue
        return f"{resolved}.{rest}" if rest else resolved
    # A method named in its class's docstring: `:meth:`update`` on the class itself.
    if not rest and obj.is_class and head in obj.members:
        return f"{obj.path}.{head}"
    return name


def rewrite(text: str, obj: Object) -> str:
    """``text`` with every Sphinx role replaced by an optional cross-reference."""

    def replace(match: re.Match[str]) -> str:
        short, name = match.group(1), match.group(2).strip()
        shown = name.rsplit(".", 1)[-1] if short else name
        identifier = _target(obj, name)
        return (
            f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(shown)}</code></autoref>"
        )

    return ROLE.sub(replace, text)


class SphinxRoles(Extension):
    """Rewrites the roles of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen or obj.is_alias:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite(obj.docstring.value, obj)
            stack.extend(member for member in obj.members.values() if not member.is_alias)
