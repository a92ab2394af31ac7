// The response cache: size against its limit, entries and hits per tenant, and purging.
import { useMemo, useState } from "preact/hooks";
import type { ChartConfiguration } from "chart.js";
import { get, post } from "../api";
import { ChartCard, palette } from "../charts";
import { usePoll } from "../hooks";
import { fmtNum, fmtPct } from "../format";

interface TenantStats {
  entries: number;
  bytes: number;
  semantic_entries: number;
  hits: number;
  semantic_hits: number;
  indexes: Record<string, number>;
}
interface CacheStats {
  entries: number;
  bytes: number;
  max_bytes: number;
  dropped_corrupt: number;
  tenants: Record<string, TenantStats>;
}

const mib = (b: number) => `${(b / 1048576).toFixed(b < 10485760 ? 2 : 0)} MiB`;

export function CachePage(_: { arg: string | null }) {
  const stats = usePoll(() => get<CacheStats>("/admin/cache/stats"), 5000);
  const [tenant, setTenant] = useState("");
  const [model, setModel] = useState("");
  const [older, setOlder] = useState("");
  const [msg, setMsg] = useState<string | null>(null);
  const s = stats.data;
  const tenants = Object.entries(s?.tenants ?? {});
  const chart = useMemo<ChartConfiguration>(() => ({
    type: "bar",
    data: {
      labels: tenants.map(([t]) => t),
      datasets: [
        { label: "exact hits", data: tenants.map(([, v]) => v.hits - v.semantic_hits), backgroundColor: palette[0] },
        { label: "semantic hits", data: tenants.map(([, v]) => v.semantic_hits), backgroundColor: palette[1] },
      ],
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  } as ChartConfiguration), [stats.data]);
  const purge = async () => {
    if (!window.confirm("Remove the matching cache entries?")) return;
    const body: Record<string, unknown> = {};
    if (tenant.trim()) body.tenant = tenant.trim();
    if (model.trim()) body.model = model.trim();
    if (older.trim()) body.older_than_s = Number(older);
    try {
      const r = await post<{ removed: number }>("/admin/cache/purge", body);
      setMsg(`Removed ${r.removed} entries.`);
      stats.reload();
    } catch (e) {
      setMsg((e as Error).message);
    }
  };
  return (
    <div>
      {stats.error && <div class="banner error">{stats.error}</div>}
      {s && (
        <div class="kpis">
          <div class="kpi" id="kpi-cache-entries"><div class="label">Entries</div><div class="value">{fmtNum(s.entries)}</div></div>
          <div class="kpi"><div class="label">Size</div><div class="value">{mib(s.bytes)}</div><div class="sub">of {mib(s.max_bytes)} ({fmtPct(s.max_bytes ? s.bytes / s.max_bytes : 0)})</div></div>
          <div class="kpi"><div class="label">Dropped at start (corrupt)</div><div class="value">{fmtNum(s.dropped_corrupt)}</div></div>
        </div>
      )}
      {tenants.length > 0 && <ChartCard id="cache-hits" title="Hits per tenant since start" config={chart} height={180} />}
      <table id="cache-tenants">
        <thead><tr><th>Tenant</th><th>Entries</th><th>Semantic</th><th>Size</th><th>Hits</th><th>Semantic hits</th><th>Indexes</th></tr></thead>
        <tbody>
          {tenants.map(([t, v]) => (
            <tr>
              <td>{t}</td><td>{fmtNum(v.entries)}</td><td>{fmtNum(v.semantic_entries)}</td><td>{mib(v.bytes)}</td>
              <td>{fmtNum(v.hits)}</td><td>{fmtNum(v.semantic_hits)}</td>
              <td>{Object.entries(v.indexes).map(([k, n]) => `${k}: ${n}`).join(", ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <section class="card">
        <h2>Purge</h2>
        <div class="row">
          <input placeholder="tenant (all)" value={tenant} onInput={(e) => setTenant(e.currentTarget.value)} />
          <input placeholder="model (all)" value={model} onInput={(e) => setModel(e.currentTarget.value)} />
          <input placeholder="older than (s)" type="number" min="0" value={older} onInput={(e) => setOlder(e.currentTarget.value)} />
          <button class="danger" onClick={purge}>Purge</button>
          {msg && <span class="note">{msg}</span>}
        </div>
      </section>
    </div>
  );
}
