"""``pappus tenant``: tenants of a state directory (tokens, quotas, scheduling weights)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import FieldError, ValidationError
from .common import check_state_dir, note_missing_state_dir

EPILOG = """\
examples:
  pappus tenant add alice                       # the last line printed is alice's token
  pappus tenant add bob --weight 2 --quota libraries=10 --quota request_rate=50
  pappus tenant list [--json]
  pappus tenant rotate alice                    # new token; the old one stops working
  pappus tenant set alice --quota concurrent_invocations=8 --operator
  pappus tenant defaults --quota queued_invocations=64
  pappus tenant remove alice                    # token and alice's libraries and functions

quotas: concurrent_invocations, queued_invocations, pool_bytes_per_invocation, library_bytes,
        libraries, functions, request_rate (per second), request_burst, fault_rate (faults per
        second), fault_burst; 'none' = unlimited.
Only a keyed hash of a token is stored: a lost token cannot be shown again, only rotated.
"""


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("tenant", formatter_class=formatter, help="manage tenants: tokens, quotas, weights",
                       description="Manage the tenants of a state directory. Changes reach running "
                                   "servers within a fraction of a second.", epilog=EPILOG)
    tsub = p.add_subparsers(dest="tenant_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--state-dir", metavar="DIR",
                       help="registry and tenants (default: $PAPPUS_HOME or ~/.local/share/pappus)")

    def quota_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--quota", action="append", metavar="NAME=VALUE", help="a quota override; repeatable")
        q.add_argument("--weight", type=int, metavar="N", help="fair-scheduling weight, 1-1000 (default: 1)")

    a = tsub.add_parser("add", formatter_class=formatter, help="create a tenant and print its token once")
    a.add_argument("name", help="the new tenant's name: up to 64 of a-z, 0-9, '_', '.', '-', starting with "
                                "a letter or digit")
    quota_flags(a)
    a.add_argument("--operator", action="store_true", help="may read /metrics (all tenants' figures)")
    common(a)
    a.set_defaults(func=run_add)

    ls = tsub.add_parser("list", formatter_class=formatter, help="list tenants (never tokens)")
    ls.add_argument("--json", action="store_true",
                    help="print a JSON list: each tenant's settings and effective quotas (never tokens)")
    common(ls)
    ls.set_defaults(func=run_list)

    r = tsub.add_parser("remove", formatter_class=formatter, help="delete a tenant (and, by default, its objects)")
    r.add_argument("name", help="the tenant to delete (its token stops working)")
    r.add_argument("--keep-objects", action="store_true",
                   help="keep the tenant's libraries and functions (a tenant added later under the "
                        "same name would own them)")
    common(r)
    r.set_defaults(func=run_remove)

    rot = tsub.add_parser("rotate", formatter_class=formatter, help="give a tenant a new token")
    rot.add_argument("name", help="the tenant whose token to replace; the old token stops working")
    common(rot)
    rot.set_defaults(func=run_rotate)

    s = tsub.add_parser("set", formatter_class=formatter, help="change a tenant's quotas, weight, operator flag")
    s.add_argument("name", help="the tenant to change (it must exist: pappus tenant add NAME)")
    quota_flags(s)
    s.add_argument("--unset", action="append", metavar="QUOTA", help="drop an override (back to the default)")
    s.add_argument("--operator", action=argparse.BooleanOptionalAction, default=None,
                   help="--operator: may read /metrics (all tenants' figures); --no-operator: may not "
                        "(default: unchanged)")
    common(s)
    s.set_defaults(func=run_set)

    d = tsub.add_parser("defaults", formatter_class=formatter, help="show or change default quotas")
    d.add_argument("--quota", action="append", metavar="NAME=VALUE", help="a default quota; repeatable")
    d.add_argument("--json", action="store_true",
                   help="print the default quotas as one JSON object (null: unlimited)")
    common(d)
    d.set_defaults(func=run_defaults)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def quota_pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError(FieldError("quota", f"{item!r} is not NAME=VALUE"), what="arguments")
        out[name.strip()] = value.strip()
    return out


def _store(args: argparse.Namespace, *, create: bool = True) -> Any:
    """The tenant store of --state-dir; ``None`` when it does not exist and ``create`` is false
    (read-only commands never create a state directory)."""
    from ..serve.settings import SERVE_QUOTAS
    from ..tenants import TenantStore

    if not check_state_dir(args.state_dir) and not create:
        note_missing_state_dir(args.state_dir)
        return None
    # Effective quotas as 'pappus serve' sees them (before its --quota / config-file defaults).
    return TenantStore(args.state_dir, base_quotas=SERVE_QUOTAS)


def run_add(args: argparse.Namespace) -> int:
    store = _store(args)
    weight = 1 if args.weight is None else args.weight  # 0 is refused like 'tenant set --weight 0'
    token = store.add(args.name, weight=weight, operator=args.operator, quotas=quota_pairs(args.quota))
    print(f"tenant {args.name} created; its token is shown once, below (store it now):")
    print(token)
    return 0


def _store_of_existing(args: argparse.Namespace) -> Any:
    """The store holding tenant ``args.name``: commands that change a tenant never create a state
    directory (there is no tenant in one that does not exist)."""
    store = _store(args, create=False)
    if store is None:
        from ..errors import NotFound

        raise NotFound("tenant", args.name)
    return store


def run_rotate(args: argparse.Namespace) -> int:
    token = _store_of_existing(args).rotate(args.name)
    print(f"tenant {args.name}: new token below; the old one no longer works:")
    print(token)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    removed = _store_of_existing(args).remove(args.name, purge=not args.keep_objects)
    extra = f", {len(removed)} object{'' if len(removed) == 1 else 's'} removed" if removed else ""
    print(f"tenant {args.name} removed{extra}")
    return 0


def run_set(args: argparse.Namespace) -> int:
    store = _store_of_existing(args)
    quotas: dict[str, Any] = dict(quota_pairs(args.quota))
    store.update(args.name, weight=args.weight, operator=args.operator, quotas=quotas)
    if args.unset:
        from ..tenants import parse_quota_value

        for key in args.unset:
            parse_quota_value(key, None)  # checks the name
        store.unset_quotas(args.name, args.unset)
    t = store.get(args.name)
    print(f"tenant {t.name}: weight {t.weight}, operator {'yes' if t.operator else 'no'}, "
          f"quotas {_fmt(store.quotas(t.name).to_dict())}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    store = _store(args, create=False)
    tenants = store.list_tenants() if store is not None else []
    if args.json:
        print(json.dumps([dict(t.public(), effective_quotas=store.quotas(t.name).to_dict()) for t in tenants],
                         indent=2))
        return 0
    if not tenants:
        print("no tenants (add one: pappus tenant add NAME)")
    for t in tenants:
        flags = " operator" if t.operator else ""
        over = f"  overrides: {_fmt(t.quotas)}" if t.quotas else ""
        print(f"{t.name:24} weight {t.weight}{flags}{over}")
    return 0


def run_defaults(args: argparse.Namespace) -> int:
    quotas = quota_pairs(args.quota)
    store = _store(args, create=bool(quotas))
    if store is None:  # no state directory: the defaults 'pappus serve' would start with
        from ..serve.settings import SERVE_QUOTAS

        current = SERVE_QUOTAS
    else:
        current = store.set_defaults(quotas) if quotas else store.defaults()
    if args.json:
        print(json.dumps(current.to_dict(), indent=2))
    else:
        for key, value in current.to_dict().items():
            print(f"{key:28} {'unlimited' if value is None else value}")
    return 0


def _fmt(quotas: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'none' if v is None else v}" for k, v in quotas.items())
