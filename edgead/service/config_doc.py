"""docs/reference/configuration.md, generated from the configuration model itself.

    python -m edgead.service.config_doc > docs/reference/configuration.md

Each setting's text is its field's ``description`` in edgead/service/config.py, its type, default
and limits come from the field: the page cannot drift from what ``edgead serve`` accepts
(tests/test_docs.py regenerates it and compares).
"""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from edgead.service.config import ENV_PREFIX, EdgeadConfig

HEADER = f"""# Configuration reference

Generated from the daemon's configuration model (`edgead/service/config.py`) by
`python -m edgead.service.config_doc`; do not edit by hand.

`edgead serve --config FILE.toml` reads one TOML file; every setting can be overridden from the
environment as `{ENV_PREFIX}<SECTION>__<KEY>` (for example `{ENV_PREFIX}SERVER__PORT=8081`) and the main
ones by flags (see [the command line](cli.md#edgead-serve)). Precedence: flags, then environment,
then the file, then the defaults below. Every bad value is reported with where it came from.
`edgead serve --config FILE --check` validates a file and the model without starting.
Annotated examples: [`deploy/edgead.toml`](../../deploy/edgead.toml) (a Raspberry Pi) and
[`deploy/workstation.toml`](../../deploy/workstation.toml) (a workstation, the demo model).
"""

_LIMITS = ((annotated_types.Ge, ">=", "ge"), (annotated_types.Gt, ">", "gt"), (annotated_types.Le, "<=", "le"),
           (annotated_types.Lt, "<", "lt"))


def type_text(annotation: Any) -> str:
    """A TOML-minded name of a field's type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{str(a).lower()}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        kinds = [type_text(a) for a in args if a is not type(None)]
        if set(kinds) == {"integer", "string"}:
            return "pin (BCM number or name like `\"GPIO17\"`)"
        return " or ".join(kinds)
    if origin in (list, tuple):
        inner = type_text(args[0]) if args else "value"
        return f"array of {len(args)} {inner}s" if origin is tuple and Ellipsis not in args else f"array of {inner}s"
    if origin is dict:
        return "table"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path",
             SecretStr: "string (secret)"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (str, Path)):
        return f'`"{value}"`'
    if isinstance(value, (list, tuple, dict)) and not value:
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{value!r}`"


def limits_text(info: FieldInfo) -> str:
    out = [f"{sign} {getattr(m, attr):,}" for m in info.metadata
           for cls, sign, attr in _LIMITS if isinstance(m, cls)]
    return ", ".join(out)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc(model: type) -> str:
    doc = inspect.getdoc(model) or ""
    return "" if doc == inspect.getdoc(BaseModel) else _cell(doc)


def section_table(prefix: str, fields: dict[str, FieldInfo]) -> list[str]:
    lines = ["| key | type | default | limits | what |", "|---|---|---|---|---|"]
    for name, info in fields.items():
        env = f"{ENV_PREFIX}{prefix.upper()}{'__' if prefix else ''}{name.upper()}"
        what = _cell(info.description or "")
        lines.append(f"| `{name}` | {type_text(info.annotation)} | {default_text(info)} | {limits_text(info)} | "
                     f"{what} (`{env}`) |")
    return lines


def render() -> str:
    out = [HEADER]
    plain = {n: f for n, f in EdgeadConfig.model_fields.items() if not _is_section(f)}
    out += ["## Top level", "", *section_table("", plain), ""]
    for name, info in EdgeadConfig.model_fields.items():
        if not _is_section(info):
            continue
        out += [f"## [{name}]", ""]
        if _doc(info.annotation):
            out += [_doc(info.annotation), ""]
        out += [*section_table(name, info.annotation.model_fields), ""]
    return "\n".join(out).rstrip() + "\n"


def _is_section(info: FieldInfo) -> bool:
    return inspect.isclass(info.annotation) and issubclass(info.annotation, BaseModel)


if __name__ == "__main__":
    sys.stdout.write(render())
