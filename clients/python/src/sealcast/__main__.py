"""``python -m sealcast token {verify,connect,publish}``: check or mint a token from a shell.

Secrets come from the environment or a file, never the command line (which other users of
the machine can read); a token to verify may come on standard input (``-``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .tokens import TokenError, mint_connect_token, mint_publish_token, verify_token


def _secret(args: argparse.Namespace) -> bytes:
    if args.secret_env:
        value = os.environ.get(args.secret_env)
        if value is None:
            raise SystemExit(f"sealcast: environment variable {args.secret_env} is not set")
        data = os.fsencode(value)
    else:
        try:
            with open(args.secret_file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SystemExit(f"sealcast: cannot read the secret file: {e.strerror}") from None
    # As the relay reads secrets: a trailing newline (or CRLF) is not part of the secret.
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    return data


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sealcast", description="sealcast tokens for operators and scripts")
    token = p.add_subparsers(dest="group", required=True).add_parser("token", help="verify or mint a token")
    cmds = token.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--app", required=True)
        sp.add_argument("--kid", required=True)
        src = sp.add_mutually_exclusive_group(required=True)
        src.add_argument("--secret-env", help="environment variable holding the app secret")
        src.add_argument("--secret-file", help="file holding the app secret")

    v = cmds.add_parser("verify", help="verify with the relay's rules; print the claims or the reason")
    common(v)
    v.add_argument("--aud", required=True, choices=["connect", "publish"])
    v.add_argument("--now", type=int, help="unix seconds (default: now)")
    v.add_argument("--leeway", type=int, default=30, help="seconds, at most 30 (default 30)")
    v.add_argument("--max-lifetime", type=int, help="seconds (default 86400 connect, 300 publish)")
    v.add_argument("token", help="the token, or - to read it from standard input")
    c = cmds.add_parser("connect", help="mint a connect token")
    common(c)
    c.add_argument("--ns", required=True)
    c.add_argument("--sub", required=True)
    c.add_argument("--ttl", type=int, default=3600, help="seconds, at most 86400 (default 3600)")
    c.add_argument("--jti")
    pb = cmds.add_parser("publish", help="mint a publish token")
    common(pb)
    pb.add_argument("--ns")
    pb.add_argument("--ttl", type=int, default=60, help="seconds, at most 300 (default 60)")
    pb.add_argument("--jti")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    secret = _secret(args)
    try:
        if args.cmd == "verify":
            token = sys.stdin.readline().strip() if args.token == "-" else args.token
            v = verify_token(token, apps={args.app: {args.kid: secret}}, aud=args.aud, now=args.now,
                             leeway=args.leeway, max_lifetime=args.max_lifetime)
            print(json.dumps({"valid": True, "kid": v.kid, "claims": v.claims}, ensure_ascii=False))
        elif args.cmd == "connect":
            print(mint_connect_token(app=args.app, kid=args.kid, secret=secret, ns=args.ns, sub=args.sub,
                                     ttl_seconds=args.ttl, jti=args.jti))
        else:
            print(mint_publish_token(app=args.app, kid=args.kid, secret=secret, ns=args.ns,
                                     ttl_seconds=args.ttl, jti=args.jti))
    except TokenError as e:
        print(f"sealcast: refused ({e.reason}{' ' + e.claim if e.claim else ''}): {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"sealcast: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
