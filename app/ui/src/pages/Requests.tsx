// The ledger: filter, page through it (never all at once), open one call's record and the
// router's explanation of its route.
import { useEffect, useState } from "preact/hooks";
import { CallRecord, get, Page } from "../api";
import { fmtDateTime, fmtMs, fmtUsd, pusd } from "../format";

const PAGE = 100;

interface Filters {
  model: string;
  tenant: string;
  user: string;
  status: string;
}

/** The router's reason (`route:<tier>:<why>[:<score>]`) in words. */
export function explain(r: CallRecord): string {
  const reason = r.route_reason ?? "";
  const cached = r.cache.startsWith("hit") ? " Answered from the cache." : "";
  if (!reason) return `Asked for this model by name: no routing.${cached}`;
  const m = reason.match(/^route:([^:]+):(.*)$/);
  if (!m) return `Rerouted: ${reason.replace(/_/g, " ")}.${cached}`;
  const [, tier, why] = m;
  const rule = why.match(/rule:(\d+)/);
  const conf = why.match(/confidence=(-?[\d.]+)/);
  if (why.startsWith("cascade_kept:"))
    return `Tier “${tier}”: rule #${rule?.[1] ?? "?"} sent it to the local model, whose answer was confident enough (mean log-probability ${conf?.[1] ?? "?"}) and was kept.${cached}`;
  if (why.startsWith("cascade:"))
    return `Escalated to tier “${tier}”: rule #${rule?.[1] ?? "?"} tried the local model first, but its answer was not confident enough (mean log-probability ${conf?.[1] ?? "?"}).${cached}`;
  if (why.startsWith("rule:")) return `Tier “${tier}”: rule #${rule?.[1]} of the policy matched.${cached}`;
  if (why.startsWith("score")) {
    const score = why.split(":")[1];
    return `Tier “${tier}”: the learned scorer rated the prompt ${score ?? "?"} (0: the weak tier will do, 1: it needs the strong one), and the threshold in force then sent it to “${tier}”.${cached}`;
  }
  if (why === "no_scorer") return `Tier “${tier}”: no rule matched and the policy has no scorer, so the weak tier answered.${cached}`;
  return `Tier “${tier}”: ${why.replace(/_/g, " ")}.${cached}`;
}

function Detail({ id }: { id: string }) {
  const [r, setR] = useState<CallRecord | null>(null);
  const [err, setErr] = useState<string | null>(null);
  useEffect(() => {
    setR(null);
    get<CallRecord>(`/admin/requests/${encodeURIComponent(id)}`).then(setR, (e: Error) => setErr(e.message));
  }, [id]);
  if (err) return <div class="banner error">{err}</div>;
  if (!r) return <p class="muted">Loading…</p>;
  return (
    <section class="card" id="request-detail">
      <h2>Call <code>{r.id}</code> <a href="#/requests" class="link">back to the list</a></h2>
      <p class="explain" id="route-explanation">{explain(r)}</p>
      <dl class="wide">
        <dt>When</dt><dd>{fmtDateTime(r.ts_us / 1e6)}</dd>
        <dt>Endpoint</dt><dd>{r.endpoint}</dd>
        <dt>Model</dt><dd>{r.model_requested ?? "–"} → {r.model_resolved ?? "–"} ({r.tier}{r.provider ? ` via ${r.provider}` : ""})</dd>
        <dt>Route reason</dt><dd><code>{r.route_reason ?? "–"}</code></dd>
        <dt>Cache</dt><dd>{r.cache}</dd>
        <dt>Tokens</dt><dd>{r.prompt_tokens} in · {r.completion_tokens} out · {r.cached_tokens} cached</dd>
        <dt>Latency</dt><dd>{fmtMs(r.latency_ms)} total · TTFT {fmtMs(r.ttft_ms)} · upstream {fmtMs(r.upstream_ms)} · own {fmtMs(r.overhead_ms)}</dd>
        <dt>Cost</dt><dd>{fmtUsd(pusd(r.cost_pusd))} (saved {fmtUsd(pusd(r.savings_pusd))})</dd>
        <dt>Status</dt><dd>{r.status} {r.outcome}{r.error ? ` · ${r.error}` : ""}</dd>
        <dt>Who</dt><dd>tenant {r.tenant} · key {r.key_id ?? "–"} · user {r.user ?? "–"} · tag {r.tag ?? "–"}</dd>
        <dt>Trace</dt><dd><code>{r.trace_id}</code></dd>
      </dl>
      <details>
        <summary>Full record</summary>
        <pre>{JSON.stringify(r, null, 2)}</pre>
      </details>
    </section>
  );
}

export function Requests({ arg }: { arg: string | null }) {
  const [filters, setFilters] = useState<Filters>({ model: "", tenant: "", user: "", status: "" });
  const [applied, setApplied] = useState<Filters>(filters);
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [page, setPage] = useState<Page<CallRecord> | null>(null);
  const [err, setErr] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    if (arg) return;
    const q = new URLSearchParams({ limit: String(PAGE), compact: "true" });
    for (const [k, v] of Object.entries(applied)) if (v.trim()) q.set(k, v.trim());
    if (cursor) q.set("cursor", cursor);
    setLoading(true);
    get<Page<CallRecord>>(`/admin/requests?${q}`)
      .then((p) => { setPage(p); setErr(null); }, (e: Error) => setErr(e.message))
      .finally(() => setLoading(false));
  }, [applied, cursor, arg]);

  if (arg) return <Detail id={arg} />;
  const input = (k: keyof Filters, label: string) => (
    <label>{label}<input id={`filter-${k}`} value={filters[k]} onInput={(e) => setFilters({ ...filters, [k]: e.currentTarget.value })} /></label>
  );
  return (
    <div>
      <form class="filters" onSubmit={(e) => { e.preventDefault(); setApplied(filters); setCursors([null]); }}>
        {input("model", "Model")}
        {input("tenant", "Tenant")}
        {input("user", "User")}
        <label>Status
          <select id="filter-status" value={filters.status} onChange={(e) => setFilters({ ...filters, status: e.currentTarget.value })}>
            <option value="">any</option><option value="ok">ok</option><option value="error">error</option>
            <option value="429">429</option><option value="500">500</option><option value="502">502</option>
          </select>
        </label>
        <button type="submit" id="apply-filters">Filter</button>
      </form>
      {err && <div class="banner error">{err}</div>}
      <table id="requests" class={loading ? "loading" : ""}>
        <thead>
          <tr><th>Time</th><th>Endpoint</th><th>Model</th><th>Route</th><th>Tier</th><th>Cache</th><th>Status</th><th>Latency</th><th>Tokens</th><th>Cost</th><th>Tenant</th></tr>
        </thead>
        <tbody>
          {(page?.data ?? []).map((r) => (
            <tr class={r.status >= 400 ? "err" : ""}>
              <td><a href={`#/requests/${encodeURIComponent(r.id)}`}>{fmtDateTime(r.ts_us / 1e6)}</a></td>
              <td>{r.endpoint.replace("/v1/", "")}</td>
              <td>{r.model_requested ?? "–"}{r.model_resolved && r.model_resolved !== r.model_requested ? ` → ${r.model_resolved}` : ""}</td>
              <td class="route">{r.route_reason ?? ""}</td>
              <td>{r.tier}</td>
              <td>{r.cache}</td>
              <td>{r.status}</td>
              <td>{fmtMs(r.latency_ms)}</td>
              <td>{r.prompt_tokens + r.completion_tokens}</td>
              <td>{fmtUsd(pusd(r.cost_pusd))}</td>
              <td>{r.tenant}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {page && page.data.length === 0 && <p class="muted">No calls match.</p>}
      <div class="pager">
        <button class="secondary" id="prev-page" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>
        <span id="page-number">page {cursors.length}</span>
        <button class="secondary" id="next-page" disabled={!page?.has_more} onClick={() => page?.next_cursor && setCursors([...cursors, page.next_cursor])}>Older</button>
      </div>
    </div>
  );
}
