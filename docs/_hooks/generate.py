"""mkdocs hook: the reference pages, generated from the code at build time.

A page holds a marker and the hook puts the generated Markdown in its place:

- ``<!-- generated: cli -->``: every command's ``--help`` as typer documents it
  (typer's own ``typer ... utils docs`` renderer, run on ``datapruning.cli.app``);
- ``<!-- generated: config -->``: one table per section of
  ``datapruning.config.PipelineConfig`` (field, type, default, description), the
  description being the field's ``description=``, else the comment above the field
  in its class (the code's own documentation of it);
- ``<!-- generated: api -->``: a mkdocstrings block for every name in
  ``datapruning.__all__``, at the module where it is defined, then the extra public
  names listed in ``EXTRA_API``.

Nothing here is copied by hand, so the pages follow the code.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

MARKER = re.compile(r"<!-- generated: (\w+) -->")

# Public entry points that live outside datapruning.__all__.
EXTRA_API = ["datapruning.train.loop.train", "datapruning.train.algorithms.Algorithm"]


# --- the CLI ---------------------------------------------------------------------------


def cli_markdown() -> str:
    import click
    import typer
    from typer.cli import get_docs_for_click

    from datapruning.cli import app

    command = typer.main.get_command(app)
    ctx = click.Context(command, info_name="datapruning")
    text = get_docs_for_click(obj=command, ctx=ctx, name="datapruning", title="")
    # typer writes the title as a level-1 heading; the page has its own.
    text = re.sub(r"\A#\s*\n+", "", text)
    return text


# --- the config ------------------------------------------------------------------------


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the ``#`` comment lines right above it (or on its line) in ``cls``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    pending: list[str] = []
    body_indent: int | None = None
    lines = source.splitlines()
    # Drop the class's docstring lines and nested bodies: only body-level lines count.
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    docstring_lines: set[int] = set()
    for tok in tokens:
        if tok.type == tokenize.STRING and tok.start[1] > 0:
            docstring_lines.update(range(tok.start[0], tok.end[0] + 1))
            break
    for number, line in enumerate(lines[1:], start=2):
        if number in docstring_lines:
            continue
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        indent = len(line) - len(line.lstrip())
        if body_indent is None:
            body_indent = indent
        if indent != body_indent:
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"([A-Za-z_]\w*)\s*:", stripped)
        if match and not stripped.startswith(("def ", "class ", "@")):
            trailing = ""
            if "  # " in line:
                trailing = line.split("  # ", 1)[1].strip()
                if trailing.startswith("type:"):
                    trailing = ""
            text = " ".join([*pending, trailing]).strip()
            if text:
                found[match.group(1)] = text
        pending = []
    return found


def _section_classes(annotation: Any) -> list[type]:
    """The config sections an annotation holds (a section, an optional one, a union)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _section_classes(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [c for arg in get_args(annotation) for c in _section_classes(arg)]
    return []


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in get_args(annotation))
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    text = repr(annotation).replace("typing.", "").replace("pathlib.", "")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r"\b(?:datapruning|pydantic)[\w.]*\.(\w+)", r"\1", text)
    return text.replace("NoneType", "None")


def _default(field: Any) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section below)"
    if isinstance(value, Path):
        value = str(value)
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _own_doc(cls: type) -> str:
    """The first paragraph of the docstring ``cls`` itself defines (not pydantic's)."""
    doc = cls.__dict__.get("__doc__")
    if not doc or not cls.__module__.startswith("datapruning"):
        return ""
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ")


def _section_table(path: str, cls: type, out: list[str], seen: set[tuple[str, type]]) -> None:
    if (path, cls) in seen:
        return
    seen.add((path, cls))
    comments = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("datapruning"):
            comments.update(_comments(klass))
    out.append(f"### `{path}` ({cls.__name__})" if path else f"### The top level ({cls.__name__})")
    out.append("")
    if doc := _own_doc(cls):
        out += [doc, ""]
    out.append("| field | type | default | description |")
    out.append("|---|---|---|---|")
    nested: list[tuple[str, type]] = []
    for name, field in cls.model_fields.items():
        description = field.description or comments.get(name, "")
        sections = _section_classes(field.annotation)
        if not description and len(sections) == 1:
            # A section field without a comment: its class's docstring says what it holds.
            description = _own_doc(sections[0])
        key = f"{path}.{name}" if path else name
        out.append(
            f"| `{name}` | `{_cell(_type_name(field.annotation))}` | "
            f"`{_cell(_default(field))}` | {_cell(description)} |"
        )
        for section in sections:
            nested.append((key, section))
    out.append("")
    for key, section in nested:
        _section_table(key, section, out, seen)


def config_markdown() -> str:
    from datapruning.config import PipelineConfig

    out: list[str] = []
    _section_table("", PipelineConfig, out, set())
    return "\n".join(out)


# --- the Python API --------------------------------------------------------------------


def _where(name: str) -> str | None:
    """The dotted path at which the public name ``name`` is defined."""
    import datapruning

    exports = getattr(datapruning, "_EXPORTS", {})
    value = getattr(datapruning, name)
    if inspect.ismodule(value):
        return value.__name__
    if inspect.isclass(value) or inspect.isfunction(value):
        return f"{value.__module__}.{value.__qualname__}"
    if name in exports:
        return f"{exports[name]}.{name}"
    return None


def api_markdown() -> str:
    import datapruning

    out: list[str] = []
    documented: set[str] = set()
    names = [n for n in datapruning.__all__ if not n.startswith("__")]
    for name in sorted(names, key=str.lower):
        where = _where(name)
        if where is None or where in documented:
            continue
        documented.add(where)
        out += [f"## `datapruning.{name}`", "", f"::: {where}", ""]
    # Each object once: an extra that __all__ came to export is already above.
    extras = [where for where in EXTRA_API if where not in documented]
    if extras:
        out += ["## Outside `datapruning.__all__`", ""]
    for where in extras:
        out += [f"### `{where}`", "", f"::: {where}", "    options:", "      heading_level: 4", ""]
    return "\n".join(out)


GENERATORS = {"cli": cli_markdown, "config": config_markdown, "api": api_markdown}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        return GENERATORS[match.group(1)]()

    return MARKER.sub(replace, markdown)
