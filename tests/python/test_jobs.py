"""Jobs and batches from Python: the OpenAI SDK's Batch API workflow unchanged, and a long
summary job whose progress arrives per chunk and whose webhook verifies with the independent
`standardwebhooks` package.

Needs SWITCHYARD_URL, SWITCHYARD_BASE, SWITCHYARD_KEY and SWITCHYARD_MODEL (see
test_openai_sdk.py); the summary test needs the local model (the daemon's default).
"""

import http.server
import json
import os
import queue
import random
import threading
import time
import urllib.request

import openai
import pytest
from standardwebhooks.webhooks import Webhook

URL = os.environ["SWITCHYARD_URL"]
BASE = os.environ["SWITCHYARD_BASE"]
KEY = os.environ["SWITCHYARD_KEY"]
MODEL = os.environ["SWITCHYARD_MODEL"]
SECRET = "whsec_" + "c3dpdGNoeWFyZC10ZXN0LXNlY3JldC1rZXk="


@pytest.fixture()
def client():
    return openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=60)


def test_batch_round_trip(client):
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"question {i}"}]},
        }
        for i in range(5)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    f = client.files.create(file=("batch.jsonl", data), purpose="batch")
    assert f.purpose == "batch" and f.bytes == len(data)
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"suite": "python"},
    )
    assert b.id.startswith("batch_")
    deadline = time.time() + 60
    while b.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.time() < deadline, b
        time.sleep(0.2)
        b = client.batches.retrieve(b.id)
    assert b.status == "completed", b
    assert b.request_counts.total == 5 and b.request_counts.completed == 5
    assert b.metadata == {"suite": "python"}
    out = client.files.content(b.output_file_id).text
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"req-{i}" for i in range(5)]
    assert all(r["response"]["status_code"] == 200 for r in rows)
    assert all(r["response"]["body"]["object"] == "chat.completion" for r in rows)
    assert any(x.id == b.id for x in client.batches.list())


def document(tokens=20_000):
    """A long, varied document of about `tokens` tokens (~4 characters each)."""
    rng = random.Random(7)
    topics = ["river", "harbour", "railway", "market", "library", "orchard", "bridge", "mill"]
    verbs = ["built", "repaired", "expanded", "moved", "closed", "opened", "measured", "sold"]
    out, chars = [], 0
    year = 1820
    while chars < tokens * 4:
        t, v = rng.choice(topics), rng.choice(verbs)
        year += rng.randint(0, 3)
        s = (f"In {year} the town {v} its {t}, which {rng.randint(2, 900)} people used each week; "
             f"the council noted the cost as {rng.randint(10, 5000)} pounds and argued about it "
             f"for {rng.randint(1, 12)} months. ")
        out.append(s)
        chars += len(s)
    return "".join(out)


class Receiver(http.server.BaseHTTPRequestHandler):
    got = queue.Queue()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.got.put((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_long_summary_job_progress_and_verified_webhook():
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_port}/hook"
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    body = json.dumps({
        "operation": "summarize", "input": document(), "max_tokens": 48,
        "webhook": {"url": hook_url, "secret": SECRET},
    }).encode()
    req = urllib.request.Request(f"{BASE}/v1/jobs", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 202
        job = json.loads(r.read())
    progress = []
    req = urllib.request.Request(f"{BASE}/v1/jobs/{job['id']}/events", headers=headers)
    with urllib.request.urlopen(req, timeout=900) as s:
        event = None
        for raw in s:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if event == "progress":
                    progress.append(data["progress"])
                elif event == "done":
                    final = data
                    break
    assert final["state"] == "succeeded", final
    assert final["result"]["summary"].strip(), final
    assert final["result"]["chunks"] >= 10, final["result"]
    # One progress event per chunk (at least one per source chunk), counting up.
    dones = [p["done"] for p in progress]
    assert len(set(dones)) >= final["result"]["chunks"], progress
    assert dones == sorted(dones)
    hdrs, body = Receiver.got.get(timeout=60)
    payload = Webhook(SECRET).verify(body, {k.lower(): v for k, v in hdrs.items()})
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job["id"]
    assert hdrs["webhook-id"] == f"msg_{job['id']}"
    server.shutdown()
