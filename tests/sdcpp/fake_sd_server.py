"""A stand-in for `sd-server` speaking its native job API, for what cannot run here (the Qwen models' weights):
it records its command line and each job's request body as JSON lines in the file named by its first argument,
and answers every job with a grey PNG of the requested size. With FAKE_SD_SERVER_SLOW_S set, its first answer
about a job comes that many seconds late, as a child whose threads hold a busy CPU answers.

    python tests/sdcpp/fake_sd_server.py RECORD [sd-server's switches...] --listen-port PORT
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image


def main() -> None:
    record, arguments = Path(sys.argv[1]), sys.argv[2:]
    port = int(arguments[arguments.index("--listen-port") + 1])
    bodies: list[dict[str, object]] = []
    slow = [float(os.environ.get("FAKE_SD_SERVER_SLOW_S", "0"))]

    def write(entry: dict[str, object]) -> None:
        with record.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    write({"argv": arguments})

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, data: object) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path == "/sdcpp/v1/capabilities":
                self._answer(200, {"current_mode": "img_gen"})
                return
            delay, slow[0] = slow[0], 0.0
            time.sleep(delay)
            index = int(self.path.rsplit("_", 1)[1])
            body = bodies[index]
            buffer = io.BytesIO()
            Image.new("RGB", (int(str(body["width"])), int(str(body["height"]))), (128, 128, 128)).save(buffer, "PNG")
            image = {"index": 0, "b64_json": base64.b64encode(buffer.getvalue()).decode()}
            self._answer(200, {"status": "completed", "result": {"images": [image]}, "error": None})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            write({"body": body})
            self._answer(202, {"id": f"job_{len(bodies) - 1}", "status": "queued"})

        def log_message(self, format: str, *args: object) -> None:
            return None

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
