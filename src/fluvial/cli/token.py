"""``fluvial token create|list|revoke``: the bearer tokens of ``fluvial serve``.

:mod:`fluvial.server.auth` is imported when a token command runs, not when the
parser is built: the ``fluvial.server`` package is for the ``serve`` command.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from fluvial.cli.app import GROUPS, arg, data_dir, subcommand
from fluvial.cli.fmt import iso, table, to_json
from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.server.auth import TokenStore

GROUPS["token"] = "create, list and revoke the bearer tokens of `fluvial serve`"

_CREATE_DESCRIPTION = """\
Create a bearer token and print it on stdout, alone on one line. It is shown
only this once: only its SHA-256 is kept (in DATA_DIR/tokens.db).

Roles (give exactly one):
  --device ID  may only post events whose 'device' field is ID
  --read       may only query: views, metrics
  --admin      everything, including batch runs, reprocessing and rollbacks

Clients send it as 'Authorization: Bearer <token>'."""


def _device_arg(text: str) -> str:
    from fluvial.server.auth import check_device_id

    try:
        return check_device_id(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _role_flags(parser: argparse.ArgumentParser) -> None:
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--device", type=_device_arg, metavar="ID",
                      help="a device token: may only post events of device ID")
    role.add_argument("--read", action="store_true", help="a read token: may only query")
    role.add_argument("--admin", action="store_true", help="an admin token: may do everything")


def _open(args: argparse.Namespace) -> TokenStore:
    from fluvial.server.auth import TOKENS_FILE, TokenStore

    path = data_dir(args)
    path.mkdir(parents=True, exist_ok=True)
    return TokenStore(path / TOKENS_FILE)


@subcommand(
    "token create",
    summary="create a bearer token and print it (shown once)",
    description=_CREATE_DESCRIPTION,
    example="TOKEN=$(fluvial token create --device dev-1 --note 'greenhouse sensor')\n"
            "fluvial token create --admin --note ops",
    args=[arg("--note", default="", metavar="TEXT",
              help="who or what holds the token (shown by `fluvial token list`)")],
    configure=_role_flags,
)
def create(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.device is not None:
            token, grant = store.create("device", device=args.device, note=args.note)
        else:
            token, grant = store.create("admin" if args.admin else "read", note=args.note)
    print(token)
    print(f"created {grant.role} token {grant.token_id}: it is shown only once, store it now "
          f"(revoke it with `fluvial token revoke {grant.token_id}`)", file=sys.stderr)
    return 0


@subcommand(
    "token list",
    summary="list the bearer tokens (not their secrets)",
    description="List the valid tokens, oldest first: id, role, device, note and creation "
                "time (UTC); with --all, the revoked ones too. The tokens themselves are not "
                "stored, so they cannot be shown.",
    example="fluvial token list\nfluvial token list --all --format json",
    args=[
        arg("--all", action="store_true", help="include revoked tokens"),
        arg("--format", choices=("table", "json"), default="table",
            help="output format (default: %(default)s)"),
    ],
)
def list_tokens(args: argparse.Namespace) -> int:
    with _open(args) as store:
        grants = store.list(include_revoked=args.all)
    if args.format == "json":
        print(to_json(grants))
        return 0
    if not grants:
        print("(no tokens: create one with `fluvial token create --admin`)")
        return 0
    headers = ["ID", "ROLE", "DEVICE", "NOTE", "CREATED"] + (["REVOKED"] if args.all else [])
    rows = [[g.token_id, g.role, g.device if g.device is not None else "-", g.note or "-",
             iso(g.created_ms)] + ([iso(g.revoked_ms)] if args.all else []) for g in grants]
    print(table(headers, rows))
    return 0


@subcommand(
    "token revoke",
    summary="revoke a bearer token by its id",
    description="Revoke the token whose id is ID (the 8 hex characters after 'flv_', as "
                "`fluvial token list` shows them). A running `fluvial serve` refuses it within "
                "5 s (how long it trusts a token it has verified).",
    example="fluvial token revoke 3f9c01ab",
    args=[arg("token_id", metavar="ID", help="the token's id (see `fluvial token list`)")],
)
def revoke(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if store.revoke(args.token_id):
            print(f"revoked token {args.token_id}")
            return 0
        known = {g.token_id: g for g in store.list(include_revoked=True)}
    if args.token_id in known:
        print(f"token {args.token_id} was already revoked at {iso(known[args.token_id].revoked_ms)}")
        return 0
    raise ConfigError(f"no token with id {args.token_id!r}: see `fluvial token list` for the ids")
