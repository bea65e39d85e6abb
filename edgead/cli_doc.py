"""docs/reference/cli.md, generated from the command line's own parsers.

    python -m edgead.cli_doc > docs/reference/cli.md

Every option's text is the ``help`` its parser shows, so the page and ``--help`` cannot disagree;
tests/test_docs.py regenerates the page and compares. ``edgead export`` lives on the workstation
side: its parser is reached through the workstation entry points, never imported by name.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from edgead.cli import COMMANDS, eval_parser, info_parser, score_parser

HEADER = """# Command line reference

Generated from the parsers by `python -m edgead.cli_doc`; do not edit by hand.
`edgead COMMAND --help` prints the same text. Errors in your input (a missing file, a bad image,
a bad artifact) print one line naming the file and exit with status 2.
"""


def parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from edgead.bench import build_parser as bench_parser
    from edgead.demo import build_parser as demo_parser
    from edgead.service.main import build_parser as serve_parser
    from edgead.teach.cli import model_parser, teach_parser
    from edgead.workstation import feature

    return {"export": lambda: feature("export_parser")(), "score": score_parser, "eval": eval_parser,
            "info": info_parser, "serve": serve_parser, "bench": bench_parser, "demo": demo_parser,
            "teach": teach_parser, "model": model_parser}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    d = action.default
    if action.required and action.option_strings:
        return "required"
    if d is None or d is argparse.SUPPRESS or isinstance(action, (argparse._StoreTrueAction,
                                                                  argparse._StoreFalseAction)):
        return ""
    return f"`{d}`"


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("+", "*") else "")
    value = ""
    if action.nargs != 0:
        if action.choices:
            value = " {" + ",".join(map(str, action.choices)) + "}"
        else:
            value = f" {action.metavar or action.dest.upper()}"
    return ", ".join(f"`{o}{value}`" for o in action.option_strings)


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {"default": action.default, "prog": prog}
    return text


def command_section(name: str, parser: argparse.ArgumentParser) -> str:
    lines = [f"## edgead {name}", "", _cell(parser.description or COMMANDS[name]), ""]
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    lines += ["```", usage, "```", ""]
    rows = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    if rows:
        lines += ["| option | default | what |", "|---|---|---|"]
        lines += [f"| {_cell(_name(a))} | {_default(a)} | {_cell(_help(a, parser.prog))} |" for a in rows]
        lines.append("")
    if parser.epilog:
        lines += [_cell(parser.epilog), ""]
    return "\n".join(lines)


def render() -> str:
    from edgead.workstation import WorkstationMissing

    out = [HEADER]
    out += ["| command | what |", "|---|---|"]
    out += [f"| [`edgead {n}`](#edgead-{n}) | {_cell(t)} |" for n, t in COMMANDS.items()]
    out.append("")
    for name, build in parsers().items():
        try:
            parser = build()
        except WorkstationMissing:
            out += [f"## edgead {name}", "", f"{COMMANDS[name]}. Install `edgead[export]` to see its options.", ""]
            continue
        out.append(command_section(name, parser))
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
