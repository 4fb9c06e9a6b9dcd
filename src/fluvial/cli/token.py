"""``fluvial token create|list|revoke``: the bearer tokens of ``fluvial serve``.

:mod:`fluvial.server.auth` is imported when a token command runs, not when the
parser is built: the ``fluvial.server`` package is for the ``serve`` command.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from fluvial.cli.app import GROUPS, arg, data_dir, subcommand
from fluvial.cli.fmt import duration_ms, iso, table, to_json
from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.server.auth import Grant, TokenStore

GROUPS["token"] = "create, list and revoke the bearer tokens of `fluvial serve`"

_CREATE_DESCRIPTION = """\
Create a bearer token and print it on stdout, alone on one line. It is shown
only this once: only its SHA-256 is kept (in DATA_DIR/tokens.db).

Roles (give exactly one):
  --device ID  may only post events whose 'device' field is ID
  --read       may only query: views, metrics
  --admin      everything, including batch runs, reprocessing and rollbacks

Clients send it as 'Authorization: Bearer <token>'. With --expires-in the
token stops working after that time (401 "token expired ..."); without it,
it is valid until revoked."""

def parse_duration_ms(text: str) -> int:
    """A token lifetime: :func:`~fluvial.cli.fmt.duration_ms`, more than 0 and at most 100 years.

    Example:
        >>> parse_duration_ms("30d"), parse_duration_ms("1h30m")
        (2592000000, 5400000)
    """
    from fluvial.server.auth import MAX_TTL_MS

    total = duration_ms(text)
    if not 0 < total <= MAX_TTL_MS:
        raise ConfigError(f"{text!r}: a token lifetime must be more than 0 s and at most 100 years")
    return total


def _duration_arg(text: str) -> int:
    try:
        return parse_duration_ms(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
            "fluvial token create --admin --note ops --expires-in 30d",
    args=[arg("--note", default="", metavar="TEXT",
              help="who or what holds the token (shown by `fluvial token list`)"),
          arg("--expires-in", "--ttl", dest="expires_in", type=_duration_arg, default=None, metavar="DURATION",
              help="the token stops working after this long: 30d, 12h, 90m, 2w, 1d12h (default: never)")],
    configure=_role_flags,
)
def create(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.device is not None:
            token, grant = store.create("device", device=args.device, note=args.note,
                                        expires_in_ms=args.expires_in)
        else:
            token, grant = store.create("admin" if args.admin else "read", note=args.note,
                                        expires_in_ms=args.expires_in)
    print(token)
    expiry = "" if grant.expires_ms is None else f", valid until {iso(grant.expires_ms)}"
    print(f"created {grant.role} token {grant.token_id}{expiry}: it is shown only once, store it now "
          f"(revoke it with `fluvial token revoke {grant.token_id}`)", file=sys.stderr)
    return 0


@subcommand(
    "token list",
    summary="list the bearer tokens (not their secrets)",
    description="List the tokens that are not revoked, oldest first: id, role, device, note, "
                "creation time (UTC) and, when a token has one, its expiry (`expired` once past); "
                "with --all, the revoked ones too. The tokens themselves are not stored, so they "
                "cannot be shown.",
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
    expiring = any(g.expires_ms is not None for g in grants)
    headers = (["ID", "ROLE", "DEVICE", "NOTE", "CREATED"] + (["EXPIRES"] if expiring else [])
               + (["REVOKED"] if args.all else []))
    rows = [[g.token_id, g.role, g.device if g.device is not None else "-", g.note or "-", iso(g.created_ms)]
            + ([_expiry(g)] if expiring else []) + ([iso(g.revoked_ms)] if args.all else []) for g in grants]
    print(table(headers, rows))
    return 0


def _expiry(grant: Grant) -> str:
    if grant.expires_ms is None:
        return "never"
    return f"{iso(grant.expires_ms)}{' (expired)' if grant.expired() else ''}"


@subcommand(
    "token revoke",
    summary="revoke a bearer token by its id",
    description="Revoke the token whose id is ID (the 8 hex characters after 'flv_', as "
                "`fluvial token list` shows them). A running `fluvial serve` refuses it from "
                "its very next request on.",
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
