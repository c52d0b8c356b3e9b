"""A bounded closed-loop HTTP load for failure tests: ``connections`` threads POST one body each in a loop
for ``seconds``; prints one JSON document with every request's (start, end, status) on stdout.

    python tests/_http_load.py URL BODY_FILE CONNECTIONS SECONDS

Run as its own process so it can live where the service is reachable (e.g. a node's network namespace).
Status -1 is a connection error or timeout (the exception's type is recorded). Times are
``time.monotonic()`` of this machine (the same clock as the test that reads them).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def run(url: str, body: bytes, connections: int, seconds: float, timeout: float = 10.0) -> list[list]:
    out: list[list] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        mine = []
        with httpx.Client(timeout=timeout) as c:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    r = c.post(url, content=body, headers={"content-type": "application/json"})
                    mine.append([t0, time.monotonic(), r.status_code, ""])
                except httpx.HTTPError as err:
                    mine.append([t0, time.monotonic(), -1, type(err).__name__])
                    time.sleep(0.05)  # a refused connection returns at once: do not spin
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(out)


if __name__ == "__main__":
    target, body_file, conns, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open(body_file, "rb") as f:
        payload = f.read()
    print(json.dumps(run(target, payload, conns, secs)))
