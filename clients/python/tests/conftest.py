"""Shared test helpers: the interop fixtures' folder and the real relay binary, started on a
free 127.0.0.1 port with a config of the test's own (as clients/js/test/helpers/relay.mjs)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
INTEROP = REPO / "tests" / "fixtures" / "interop"
RELAY_BIN = Path(os.environ.get("SEALCAST_BIN") or REPO / "target" / "debug" / "sealcast")

APP = "acme"
KID = "k1"
SECRET = "python-integration-secret-0123456789abcdef-0123"
NS = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001"


def relay_or_skip() -> None:
    """Skips a test when the binary is missing, unless SEALCAST_REQUIRE_RELAY=1 (CI), where
    a missing binary fails instead."""
    if RELAY_BIN.is_file():
        return
    message = f"relay binary not found at {RELAY_BIN} (run `cargo build --bin sealcast`, or set SEALCAST_BIN)"
    if os.environ.get("SEALCAST_REQUIRE_RELAY") == "1":
        pytest.fail(message)
    pytest.skip(message)


class Relay:
    """A running `sealcast serve --config`; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, extra_config: str = "", timeout: float = 20.0) -> None:
        relay_or_skip()
        self._dir = tempfile.mkdtemp(prefix="sealcast-py-test-")
        config = Path(self._dir) / "sealcast.toml"
        config.write_text(
            'listen = "127.0.0.1:0"\n'
            '[shutdown]\ndrain = "200ms"\ngrace = "5s"\n'
            f"{extra_config}\n"
            "[[apps]]\n"
            f'id = "{APP}"\n'
            "[[apps.keys]]\n"
            f'kid = "{KID}"\n'
            'secret_env = "SEALCAST_PY_TEST_KEY"\n'
        )
        self._stderr = open(Path(self._dir) / "stderr.log", "w+b")
        env = dict(os.environ, SEALCAST_PY_TEST_KEY=SECRET, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        env.pop("SEALCAST_LISTEN", None)
        env.pop("SEALCAST_ADMIN_LISTEN", None)
        self._proc = subprocess.Popen(
            [str(RELAY_BIN), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        assert self._proc.stdout is not None
        # Reads stdout to its end, so the relay never blocks on a full pipe.
        threading.Thread(target=self._pump, args=(self._proc.stdout, lines), daemon=True).start()
        addr = None
        try:
            while addr is None:
                line = lines.get(timeout=timeout)
                if line is None:
                    break
                m = re.search(r"listening on http://([0-9.]+:[0-9]+)", line)
                if m:
                    addr = m.group(1)
        except queue.Empty:
            pass
        if addr is None:
            self.stop()
            raise RuntimeError(f"the relay did not report listening within {timeout} s; stderr:\n{self.stderr()}")
        self.addr = addr
        self.http = f"http://{addr}"
        self.ws = f"ws://{addr}/v1/ws"

    @staticmethod
    def _pump(out: IO[bytes], lines: "queue.Queue[Optional[str]]") -> None:
        for raw in out:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-20000:]

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    """One relay with the default limits, shared by a test module."""
    r = Relay()
    try:
        yield r
    finally:
        r.stop()


def fixture_files() -> List[Path]:
    return sorted(INTEROP.glob("*.json"))
