"""`switchyard users create EMAIL [--admin] [--password-stdin]`: a user made from the command line
(the first admin, before anyone can sign in)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from switchyard.errors import SwitchyardError
from switchyard.settings import get_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="manage users who sign in")
    users_sub = users.add_subparsers(dest="action", required=True)
    create = users_sub.add_parser("create", help="make a user (asks for the password)")
    create.add_argument("email")
    create.add_argument("--admin", action="store_true", help="with the admin role")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    users.set_defaults(func=cmd_users)


def cmd_users(args: argparse.Namespace) -> int:
    from storage.db import Database
    from storage.migrate import upgrade
    from storage.users import (
        ADMIN,
        MAX_PASSWORD,
        MIN_PASSWORD,
        USER,
        create_user,
        hash_password,
        normalize_email,
    )

    email = normalize_email(args.email)
    if email is None:
        print(f"switchyard: EMAIL: {args.email!r} is not an email address", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        print(f"switchyard: password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", file=sys.stderr)
        return 2
    settings = get_settings()
    upgrade(settings.database_url_or_default)

    async def run() -> int:
        db = Database(settings.database_url_or_default)
        try:
            user = await create_user(db, email, hash_password(password), role=ADMIN if args.admin else USER)
        except SwitchyardError as exc:
            print(f"switchyard: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        print(f"{user.id}  {user.email}  {user.role}")
        return 0

    return asyncio.run(run())
