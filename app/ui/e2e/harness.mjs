// The browser tests' world: a real daemon (the debug `switchyard` binary) over the real mock
// upstream process, on loopback ports, with an admin key and a client key, a trained routing
// scorer and generated traffic. Everything is torn down when the tests end.
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createHash, randomBytes } from "node:crypto";

const ROOT = resolve(import.meta.dirname, "../../..");
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
export const BIN = process.env.SWITCHYARD_BIN ?? join(TARGET, "debug/switchyard");
export const MOCK_BIN = process.env.MOCK_UPSTREAM_BIN ?? join(TARGET, "debug/mock-upstream");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = process.env.UI_ARTIFACTS ?? join(ROOT, "app/ui/test-results");

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export async function waitHttp(url, seconds = 120) {
  const until = Date.now() + seconds * 1000;
  let last = "";
  while (Date.now() < until) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
      last = `${r.status}`;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${url} (${last})`);
}

/** Labelled prompts where the topic decides which tier is needed (what the scorer learns). */
export function hardPrompt(i) {
  return `Compute the integral of x^${(i % 7) + 2} times sin(x) from 0 to ${(i % 5) + 1} and simplify.`;
}
export function easyPrompt(i) {
  return `Which city is the capital of country number ${(i % 9) + 1} on the list of European states?`;
}

function writeTraining(path) {
  const lines = [];
  for (let i = 0; i < 160; i++) {
    const hard = i % 2 === 0;
    lines.push(JSON.stringify({ prompt: hard ? hardPrompt(i) : easyPrompt(i), weak_correct: !hard, strong_correct: true }));
  }
  writeFileSync(path, lines.join("\n") + "\n");
}

const hashKey = (k) => createHash("sha256").update(k).digest("hex");

export class World {
  procs = [];
  logs = [];

  async start() {
    this.dir = mkdtempSync(join(tmpdir(), "switchyard-ui-"));
    mkdirSync(ARTIFACTS, { recursive: true });
    this.adminKey = `sy-admin-${randomBytes(12).toString("hex")}`;
    this.clientKey = `sy-client-${randomBytes(12).toString("hex")}`;
    this.upstreamKey = `sk-upstream-${randomBytes(12).toString("hex")}`;
    const data = join(this.dir, "routing.jsonl");
    writeTraining(data);
    this.scorer = join(this.dir, "scorer.json");
    execFileSync(BIN, ["router", "train", "--data", data, "--out", this.scorer], { stdio: ["ignore", "ignore", "inherit"] });

    const mockPort = await freePort();
    this.spawn("mock", MOCK_BIN, ["--listen", `127.0.0.1:${mockPort}`, "--ttft", "20", "--itl", "5", "--latency", "5..30"], {
      MOCK_UPSTREAM_API_KEY: this.upstreamKey,
    });
    const port = await freePort();
    this.base = `http://127.0.0.1:${port}`;
    const config = `
[server]
listen = "127.0.0.1:${port}"
data_dir = "${join(this.dir, "data")}"
workers = 2

[auth]
allow_unauthenticated_loopback = false
[[auth.keys]]
id = "ops"
tenant = "ops"
hash = "sha256:${hashKey(this.adminKey)}"
admin = true
[[auth.keys]]
id = "app"
tenant = "acme"
hash = "sha256:${hashKey(this.clientKey)}"

[local]
enabled = true
hub_download = false

[providers.up]
type = "openai"
base_url = "http://127.0.0.1:${mockPort}/v1"
api_key = "env::UI_TEST_UPSTREAM_KEY"
rpm = 100000
tpm = 50000000

[models."gpt-mock"]
targets = [{ provider = "up", model = "mock-model" }]
[models."small"]
targets = [{ provider = "up", model = "small-upstream" }]
[models."large"]
targets = [{ provider = "up", model = "large-upstream" }]

[routing]
model = "auto"
weak = "small"
strong = "large"
threshold = 0.5
scorer = "${this.scorer}"
[routing.tiers]
small = "small"
large = "large"

[prices.models."small-upstream"]
input = 0.1
output = 0.4
[prices.models."large-upstream"]
input = 10.0
output = 30.0
[prices.models."mock-model"]
input = 1.0
output = 2.0

[budgets.tenants.acme]
soft_usd = 5.0
hard_usd = 10.0
`;
    const cfgPath = join(this.dir, "switchyard.toml");
    writeFileSync(cfgPath, config);
    const env = { ...process.env, UI_TEST_UPSTREAM_KEY: this.upstreamKey, RUST_BACKTRACE: "0" };
    execFileSync(BIN, ["check-config", cfgPath], { stdio: ["ignore", "ignore", "inherit"], env });
    this.spawn("switchyard", BIN, ["serve", "--config", cfgPath], { UI_TEST_UPSTREAM_KEY: this.upstreamKey });
    await waitHttp(`${this.base}/readyz`, 300);
    return this;
  }

  spawn(name, bin, args, env) {
    const log = join(this.dir, `${name}.log`);
    const out = [];
    const p = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    p.stdout.on("data", (d) => out.push(d));
    p.stderr.on("data", (d) => out.push(d));
    p.on("exit", () => writeFileSync(log, Buffer.concat(out)));
    this.procs.push(p);
    this.logs.push({ name, out });
    return p;
  }

  /** Everything the daemon logged so far. */
  daemonLog() {
    return Buffer.concat(this.logs.find((l) => l.name === "switchyard")?.out ?? []).toString();
  }

  async stop() {
    for (const p of this.procs) p.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 500));
    for (const p of this.procs) if (p.exitCode === null) p.kill("SIGKILL");
    if (existsSync(this.dir)) {
      for (const l of this.logs) writeFileSync(join(ARTIFACTS, `${l.name}.log`), Buffer.concat(l.out));
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  async chat(body, key = this.clientKey, extra = {}) {
    return fetch(`${this.base}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...extra },
      body: JSON.stringify(body),
    });
  }

  /** Routed calls (hard and easy prompts), plain calls, streams and errors. */
  async traffic({ routed = 40, plain = 120, streams = 20, errors = 10 } = {}) {
    const jobs = [];
    for (let i = 0; i < routed; i++) {
      const prompt = i % 2 ? easyPrompt(i) : hardPrompt(i);
      jobs.push(() => this.chat({ model: "auto", max_tokens: 8, messages: [{ role: "user", content: prompt }] }));
    }
    for (let i = 0; i < plain; i++) {
      jobs.push(() => this.chat({ model: "gpt-mock", max_tokens: 8, user: `user-${i % 5}`, messages: [{ role: "user", content: `hello ${i}` }] }));
    }
    for (let i = 0; i < streams; i++) {
      jobs.push(async () => {
        const r = await this.chat({ model: "gpt-mock", stream: true, messages: [{ role: "user", content: `stream ${i}` }] });
        await r.text();
        return r;
      });
    }
    for (let i = 0; i < errors; i++) {
      jobs.push(() => this.chat({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }));
    }
    await runPool(jobs, 8);
  }
}

/** Run async jobs with at most `n` in flight; every response body is drained. */
export async function runPool(jobs, n) {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const r = await job();
      if (r && !r.bodyUsed) await r.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: n }, worker));
}
