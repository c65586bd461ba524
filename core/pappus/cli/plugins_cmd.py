"""``pappus plugins``: what is installed, what each plugin registered, what can run here."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("plugins", formatter_class=formatter, help="list plugins, backends, engines and fault monitors",
                       description="List installed plugins, the backends and fault monitors they registered, "
                                   "and whether each can run on this machine (with the reason when not).")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..plugins import get_plugins

    report = get_plugins().report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Every text that comes from a plugin is escaped: "pip install 'pappus[hip]'" is not markup.
    console = Console()
    table = Table(title="backends", show_lines=False)
    for col in ("engine", "available", "capabilities", "plugin"):
        table.add_column(col)
    for b in report["backends"]:
        avail = "[green]yes[/]" if b["available"] else f"[red]no[/]: {escape(str(b['reason']))}"
        for e in b["engines"]:
            table.add_row(escape(e["name"]), avail, escape(", ".join(b["capabilities"]) or "-"), escape(b["plugin"]))
    console.print(table)
    if report["fault_monitors"]:
        mt = Table(title="fault monitors")
        for col in ("name", "backends", "available", "plugin"):
            mt.add_column(col)
        for m in report["fault_monitors"]:
            avail = "[green]yes[/]" if m["available"] else f"[red]no[/]: {escape(str(m['reason']))}"
            mt.add_row(escape(m["name"]), escape(", ".join(m["backends"])), avail, escape(m["plugin"]))
        console.print(mt)
    wl = report["worker_lockdown"]
    console.print(f"worker processes (docs/security.md): seccomp deny-list after open: {wl['seccomp']}; "
                  f"Landlock scope before open: {wl['scope']}", highlight=False, markup=False)
    broken = [p for p in report["plugins"] if not p["ok"]]
    for p in broken:
        console.print(f"[red]plugin {escape(repr(p['name']))} failed to load:[/] {escape(str(p['error']))}")
    return 0
