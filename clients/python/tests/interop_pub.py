"""One publisher of the cross-SDK matrix (clients/js/test/interop/matrix.test.mjs runs it with
the Python of the SDK's venv): publishes the plan's payloads for one publisher name, each JSON
text encrypted as it is written (``encrypt_text``) and sent with the SDK's ``publish``
(retries, idempotency key), with publish tokens from ``mint_publish_token``.

    python interop_pub.py <plan.json> <publisher-name>

Prints one JSON line per publication: the relay's ``{"offset", "epoch"}``. Not a test module
(pytest collects ``test_*.py`` only)."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

import sealcast


def main(argv: List[str]) -> int:
    if len(argv) != 3:
        print("usage: interop_pub.py <plan.json> <publisher-name>", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        plan: Dict[str, Any] = json.load(f)
    name = argv[2]
    channel: str = plan["channels"][name]

    def token() -> str:
        return sealcast.mint_publish_token(app=plan["app"], kid=plan["kid"], secret=plan["secret"],
                                           ttl_seconds=60, ns=plan["ns"])

    for i, p in enumerate(plan["payloads"][name]):
        data = sealcast.encrypt_text(channel, p["event"], p["text"], plan["payload_key"])
        at = sealcast.publish(url=plan["http"], token=token, channel=channel, event=p["event"], data=data,
                              idempotency_key=f"matrix-{name}-{i}")
        print(json.dumps(at), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
