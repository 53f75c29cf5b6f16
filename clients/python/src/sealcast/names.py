"""Name rules of PROTOCOL.md 1, as the relay checks them (``src/protocol/names.rs``).

Each check returns ``None`` for a valid name, or the rule the name breaks, worded as the
relay words it (e.g. ``"namespace must be 1 to 256 bytes"``). The message never echoes the
name, which may be large or hostile.
"""

from __future__ import annotations

import re
from typing import Optional

_APP = re.compile(rb"[A-Za-z0-9._-]+")
_NAMESPACE = re.compile(rb"[\x21-\x22\x24-\x7e]+")  # printable ASCII without space and '#'
_TOPIC = re.compile(rb"[A-Za-z0-9._:@/-]+")
_EVENT = re.compile(rb"[A-Za-z0-9._:-]+")


def _check(name: str, kind: str, max_bytes: int, alphabet: str, pattern: re.Pattern[bytes]) -> Optional[str]:
    b = name.encode("utf-8", "surrogatepass")
    if not b or len(b) > max_bytes:
        return f"{kind} must be 1 to {max_bytes} bytes"
    if pattern.fullmatch(b) is None:
        return f"{kind} has a character outside {alphabet}"
    return None


def app_id_problem(app: str) -> Optional[str]:
    """An app id: 1 to 64 bytes of ``[A-Za-z0-9._-]``."""
    return _check(app, "app id", 64, "[A-Za-z0-9._-]", _APP)


def namespace_problem(ns: str) -> Optional[str]:
    """A namespace: 1 to 256 bytes of printable ASCII, no space, no ``#``."""
    return _check(ns, "namespace", 256, "printable ASCII without space and '#'", _NAMESPACE)


def event_problem(event: str) -> Optional[str]:
    """An event name: 1 to 64 bytes of ``[A-Za-z0-9._:-]``."""
    return _check(event, "event", 64, "[A-Za-z0-9._:-]", _EVENT)


def channel_problem(channel: str) -> Optional[str]:
    """A channel: ``<namespace>#<topic>``, the topic 1 to 128 bytes of ``[A-Za-z0-9._:@/-]``."""
    ns, sep, topic = channel.partition("#")
    if not sep:
        return "channel must be <namespace>#<topic>"
    return namespace_problem(ns) or _check(topic, "topic", 128, "[A-Za-z0-9._:@/-]", _TOPIC)


def is_valid_namespace(ns: str) -> bool:
    """True if ``ns`` is a namespace the relay accepts."""
    return namespace_problem(ns) is None


def is_valid_channel(channel: str) -> bool:
    """True if ``channel`` is ``<namespace>#<topic>`` with both parts valid."""
    return channel_problem(channel) is None


def is_valid_event(event: str) -> bool:
    """True if ``event`` is a valid event name."""
    return event_problem(event) is None


def channel_of(ns: str, topic: str) -> str:
    """Builds a channel name from a namespace and a topic."""
    return f"{ns}#{topic}"
