"""The long-running parts the demo starts (stream materializer, serving API), as the user would run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from featurestream.services.process import wait_until


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where its log is."""


class Background:
    """A `featurestream ...` command in its own process, its output in a log file, stopped with SIGTERM."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([str(Path(sys.executable).with_name("featurestream")), *args],
                                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(f"the {self.name} stopped (exit {self.process.returncode}); see {self.log_path}")

    def wait_http(self, url: str, timeout_s: float) -> None:
        """Until `url` answers 200: the process is up and ready."""
        if not wait_until(lambda: self._answers(url), timeout_s, 0.2):
            raise DemoError(f"the {self.name} did not answer {url} within {timeout_s:.0f} s; see {self.log_path}")

    def _answers(self, url: str) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
