// Upstreams: health, circuit breaker, rate-limit headroom and latency, refreshed live.
import { useMemo } from "preact/hooks";
import type { ChartConfiguration } from "chart.js";
import { get, Provider } from "../api";
import { ChartCard, palette } from "../charts";
import { usePoll } from "../hooks";
import { fmtAgo, fmtMs, fmtNum, fmtPct } from "../format";

function Meter({ used, limit, label }: { used: number; limit: number | null; label: string }) {
  if (limit == null) return <div class="meter-text">{label}: {fmtNum(used)} / unlimited</div>;
  const share = Math.min(1, used / Math.max(1, limit));
  return (
    <div class="meter-box">
      <div class="meter-text">{label}: {fmtNum(used)} / {fmtNum(limit)} ({fmtPct(1 - share)} headroom)</div>
      <div class="meter"><div class={`fill ${share > 0.9 ? "bad" : share > 0.7 ? "warn" : "ok"}`} style={{ width: `${share * 100}%` }} /></div>
    </div>
  );
}

export function Providers(_: { arg: string | null }) {
  const providers = usePoll(() => get<{ data: Provider[] }>("/admin/providers"), 5000);
  const list = providers.data?.data ?? [];
  const chart = useMemo<ChartConfiguration>(() => ({
    type: "bar",
    data: {
      labels: list.map((p) => p.name),
      datasets: (["p50_ms", "p95_ms", "p99_ms"] as const).map((k, i) => ({
        label: k.replace("_ms", ""),
        data: list.map((p) => p.latency["300s"]?.[k] ?? null),
        backgroundColor: palette[i],
      })),
    },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: "ms (last 5 min)" } } } },
  } as ChartConfiguration), [providers.data]);
  return (
    <div>
      {providers.error && <div class="banner error">{providers.error}</div>}
      {list.length === 0 && <p class="muted">No upstreams are configured: every call is answered locally or from the cache.</p>}
      {list.length > 0 && <ChartCard id="provider-latency" title="Latency per upstream" config={chart} height={200} />}
      <div class="grid">
        {list.map((p) => (
          <section class="card provider" data-provider={p.name}>
            <h2>
              {p.name} <span class="muted">{p.kind}</span>{" "}
              <span class={`badge ${p.healthy ? "ok" : "bad"}`}>{p.healthy ? "healthy" : "unhealthy"}</span>{" "}
              <span class={`badge ${p.breaker === "closed" ? "ok" : p.breaker === "open" ? "bad" : "warn"}`}>breaker {p.breaker.replace("_", "-")}</span>
            </h2>
            <p class="muted">{p.base_url}</p>
            <dl>
              <dt>Calls / failures</dt><dd>{fmtNum(p.requests)} / {fmtNum(p.failures)} ({fmtPct(p.requests ? p.failures / p.requests : 0)})</dd>
              <dt>Failures in a row</dt><dd>{p.consecutive_failures}</dd>
              {p.breaker_open_ms != null && (<><dt>Probe in</dt><dd>{fmtMs(p.breaker_open_ms)}</dd></>)}
              {p.cooling_ms != null && (<><dt>Cooling after 429</dt><dd>{fmtMs(p.cooling_ms)}</dd></>)}
              <dt>Latency (5 min)</dt><dd>p50 {fmtMs(p.latency["300s"]?.p50_ms)} · p95 {fmtMs(p.latency["300s"]?.p95_ms)} · p99 {fmtMs(p.latency["300s"]?.p99_ms)}</dd>
              <dt>Restarts</dt><dd>{p.restarts}</dd>
            </dl>
            <h3>Our limits (last minute)</h3>
            <Meter label="Requests/min" used={p.limits.rpm_used} limit={p.limits.rpm_limit} />
            <Meter label="Tokens/min" used={p.limits.tpm_used} limit={p.limits.tpm_limit} />
            {p.limits.upstream && (
              <>
                <h3>As the provider reports them ({fmtAgo(p.limits.upstream.seen_at)})</h3>
                {p.limits.upstream.requests_remaining != null && (
                  <Meter label="Requests used (provider window)" used={(p.limits.upstream.requests_limit ?? 0) - p.limits.upstream.requests_remaining}
                    limit={p.limits.upstream.requests_limit} />
                )}
                {p.limits.upstream.tokens_remaining != null && (
                  <Meter label="Tokens used (provider window)" used={(p.limits.upstream.tokens_limit ?? 0) - p.limits.upstream.tokens_remaining}
                    limit={p.limits.upstream.tokens_limit} />
                )}
              </>
            )}
            {p.last_error && <p class="note">Last error: {p.last_error}</p>}
          </section>
        ))}
      </div>
    </div>
  );
}
