// Live traffic at a glance: rate, latency, TTFT, errors, cache, local vs cloud, cost and savings.
import { useMemo, useState } from "preact/hooks";
import type { ChartConfiguration } from "chart.js";
import { get, Stats, Timeline } from "../api";
import { ChartCard, palette } from "../charts";
import { usePoll } from "../hooks";
import { fmtMs, fmtNum, fmtPct, fmtTime, fmtUsd } from "../format";

const REFRESH_MS = 5000;

function Kpi({ id, label, value, sub }: { id: string; label: string; value: string; sub?: string }) {
  return (
    <div class="kpi" id={`kpi-${id}`}>
      <div class="label">{label}</div>
      <div class="value">{value}</div>
      {sub && <div class="sub">{sub}</div>}
    </div>
  );
}

function line(labels: string[], sets: { label: string; data: (number | null)[]; axis?: string }[], yTitle: string, y2Title?: string): ChartConfiguration {
  return {
    type: "line",
    data: {
      labels,
      datasets: sets.map((s, i) => ({
        label: s.label,
        data: s.data,
        borderColor: palette[i % palette.length],
        backgroundColor: palette[i % palette.length] + "33",
        // Dots only where there is something: a lone point still shows, an idle minute doesn't.
        pointRadius: (ctx: { raw: unknown }) => (ctx.raw ? 2 : 0),
        pointHoverRadius: 4,
        borderWidth: 2,
        spanGaps: true,
        tension: 0.25,
        yAxisID: s.axis ?? "y",
      })),
    },
    options: {
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { maxTicksLimit: 8 } },
        y: { beginAtZero: true, title: { display: true, text: yTitle } },
        ...(y2Title
          ? { y2: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: y2Title } } }
          : {}),
      },
    },
  } as ChartConfiguration;
}

export function Overview(_: { arg: string | null }) {
  const [minutes, setMinutes] = useState(15);
  const timeline = usePoll(() => get<Timeline>(`/admin/timeline?minutes=${minutes}`), REFRESH_MS, [minutes]);
  const stats = usePoll(() => get<Stats>("/admin/stats?days=14"), REFRESH_MS);

  const charts = useMemo(() => {
    const pts = timeline.data?.points ?? [];
    const labels = pts.map((p) => fmtTime(p.t));
    const rate = line(
      labels,
      [
        { label: "requests/s", data: pts.map((p) => p.rps) },
        { label: "error rate %", data: pts.map((p) => (p.calls ? (100 * p.errors) / p.calls : null)), axis: "y2" },
      ],
      "req/s",
      "errors %",
    );
    const latency = line(
      labels,
      [
        { label: "p50", data: pts.map((p) => p.latency?.p50_ms ?? null) },
        { label: "p95", data: pts.map((p) => p.latency?.p95_ms ?? null) },
        { label: "p99", data: pts.map((p) => p.latency?.p99_ms ?? null) },
      ],
      "ms",
    );
    const ttft = line(
      labels,
      [
        { label: "TTFT p50", data: pts.map((p) => p.ttft?.p50_ms ?? null) },
        { label: "TTFT p95", data: pts.map((p) => p.ttft?.p95_ms ?? null) },
      ],
      "ms",
    );
    const where: ChartConfiguration = {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "cache", data: pts.map((p) => p.cache_hits), backgroundColor: palette[3] },
          { label: "local", data: pts.map((p) => p.local), backgroundColor: palette[1] },
          { label: "cloud", data: pts.map((p) => p.cloud), backgroundColor: palette[0] },
        ],
      },
      options: { scales: { x: { stacked: true, ticks: { maxTicksLimit: 8 } }, y: { stacked: true, title: { display: true, text: "calls / 10 s" } } } },
    } as ChartConfiguration;
    const days = [...(stats.data?.days ?? [])].reverse();
    const cost: ChartConfiguration = {
      type: "bar",
      data: {
        labels: days.map((d) => d.day.slice(5)),
        datasets: [
          { label: "cost $", data: days.map((d) => d.totals.cost_usd), backgroundColor: palette[2] },
          { label: "saved $", data: days.map((d) => d.totals.savings_usd), backgroundColor: palette[3] },
        ],
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "USD per day" } } } },
    } as ChartConfiguration;
    return { rate, latency, ttft, where, cost };
  }, [timeline.data, stats.data]);

  const pts = timeline.data?.points ?? [];
  const lastMin = pts.slice(-6);
  const calls = lastMin.reduce((n, p) => n + p.calls, 0);
  const errors = lastMin.reduce((n, p) => n + p.errors, 0);
  const today = stats.data?.days[0]?.totals;
  const p95 = stats.data?.latency?.latency?.endpoint;
  const p95chat = p95?.["/v1/chat/completions"]?.["60s"]?.p95_ms;
  const served = today ? today.local + today.cloud + today.cache_hits : 0;

  return (
    <div>
      {(timeline.error || stats.error) && <div class="banner error">{timeline.error ?? stats.error}</div>}
      <div class="row">
        <label for="overview-range" class="muted">Charts over the last</label>
        <select id="overview-range" value={minutes} onChange={(e) => setMinutes(Number(e.currentTarget.value))}>
          <option value={5}>5 minutes</option>
          <option value={15}>15 minutes</option>
          <option value={60}>hour</option>
        </select>
      </div>
      <div class="kpis">
        <Kpi id="rps" label="Requests/s (1 min)" value={fmtNum(calls / 60)} />
        <Kpi id="p95" label="Chat p95 (1 min)" value={fmtMs(p95chat)} />
        <Kpi id="errors" label="Error rate (1 min)" value={fmtPct(calls ? errors / calls : 0)} />
        <Kpi id="cache" label="Cache hit rate (today)" value={fmtPct(today?.cache_hit_rate)} />
        <Kpi id="local" label="Local share (today)" value={fmtPct(served ? (today?.local ?? 0) / served : 0)} sub={`${fmtNum(today?.local)} local · ${fmtNum(today?.cloud)} cloud`} />
        <Kpi id="cost" label="Cost (today)" value={fmtUsd(today?.cost_usd)} sub={`${fmtNum(today?.requests)} calls`} />
        <Kpi id="savings" label="Estimated savings (today)" value={fmtUsd(today?.savings_usd)} sub="vs. the savings baseline model" />
      </div>
      <div class="grid">
        <ChartCard id="rate" title="Request rate and errors" config={charts.rate} />
        <ChartCard id="latency" title="Latency p50 / p95 / p99" config={charts.latency} />
        <ChartCard id="ttft" title="Time to first token (streams)" config={charts.ttft} />
        <ChartCard id="where" title="Where calls were answered" config={charts.where} />
        <ChartCard id="cost" title="Cost and savings per day" config={charts.cost} />
      </div>
      <p class="note">Points are 10-second slots; refreshed every {REFRESH_MS / 1000} s.</p>
    </div>
  );
}
