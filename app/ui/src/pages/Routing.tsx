// The routing policy: see it, edit thresholds, tiers and rules, replay recent traffic through
// the draft (what-if) before applying it, and roll back to any earlier version.
import { useEffect, useMemo, useState } from "preact/hooks";
import type { ChartConfiguration } from "chart.js";
import { ApiError, get, PolicyVersion, PolicyView, post, put, RawPolicy, Rule, Simulation } from "../api";
import { ChartCard, palette } from "../charts";
import { usePoll } from "../hooks";
import { fmtNum, fmtPct, fmtUsd } from "../format";

type Errors = Record<string, string>;

function toRaw(p: PolicyView | RawPolicy): RawPolicy {
  return {
    model: p.model,
    tiers: { ...p.tiers },
    weak: p.weak,
    strong: p.strong,
    threshold: p.threshold,
    thresholds: { ...p.thresholds },
    scorer: p.scorer,
    rules: p.rules.map((r) => ({ ...r })),
    strong_share: p.strong_share,
    calibrate_calls: p.calibrate_calls,
    on_max_cost: p.on_max_cost,
    assumed_output_tokens: p.assumed_output_tokens,
  };
}

/** What can be checked here before the daemon sees it; the daemon checks the rest. */
function validate(d: RawPolicy): Errors {
  const e: Errors = {};
  const unit = (v: number) => Number.isFinite(v) && v >= 0 && v <= 1;
  if (!d.model.trim()) e.model = "must not be empty";
  if (!unit(d.threshold)) e.threshold = "must be a number in [0, 1]";
  if (d.strong_share != null && !unit(d.strong_share)) e.strong_share = "must be a number in [0, 1]";
  if (Object.keys(d.tiers).length === 0) e.tiers = "needs at least one tier";
  for (const [name, model] of Object.entries(d.tiers)) {
    if (!name.trim()) e[`tiers.${name}`] = "a tier needs a name";
    else if (!model.trim()) e[`tiers.${name}`] = "names no model";
  }
  if (!(d.weak in d.tiers)) e.weak = `\`${d.weak}\` is not one of the tiers`;
  if (!(d.strong in d.tiers)) e.strong = `\`${d.strong}\` is not one of the tiers`;
  for (const [t, v] of Object.entries(d.thresholds)) if (!unit(v)) e[`thresholds.${t}`] = "must be a number in [0, 1]";
  d.rules.forEach((r, i) => {
    if (!(r.tier in d.tiers)) e[`rules[${i}].tier`] = `\`${r.tier}\` is not one of the tiers`;
    if (r.escalate_to && !(r.escalate_to in d.tiers)) e[`rules[${i}].escalate_to`] = `\`${r.escalate_to}\` is not one of the tiers`;
    if (r.min_confidence != null && !(r.min_confidence >= -100 && r.min_confidence <= 0))
      e[`rules[${i}].min_confidence`] = "between -100 and 0";
  });
  return e;
}

function FieldError({ errors, path }: { errors: Errors; path: string }) {
  const m = errors[path];
  return m ? (
    <div class="field-error" id={`error-${path.replace(/[^\w-]/g, "_")}`} role="alert">
      {m}
    </div>
  ) : null;
}

const num = (s: string): number => (s.trim() === "" ? NaN : Number(s));
const optNum = (s: string): number | null => (s.trim() === "" ? null : Number(s));
const optStr = (s: string): string | null => (s.trim() === "" ? null : s);
const optBool = (s: string): boolean | null => (s === "" ? null : s === "true");

function TiersEditor({ draft, set, errors }: { draft: RawPolicy; set: (d: RawPolicy) => void; errors: Errors }) {
  const rows = Object.entries(draft.tiers);
  const rename = (old: string, name: string) => {
    const tiers: Record<string, string> = {};
    for (const [k, v] of rows) tiers[k === old ? name : k] = v;
    set({ ...draft, tiers });
  };
  return (
    <div class="editor" id="tiers-editor">
      <h3>Tiers</h3>
      <FieldError errors={errors} path="tiers" />
      <table>
        <thead>
          <tr><th>Tier</th><th>Model</th><th /></tr>
        </thead>
        <tbody>
          {rows.map(([name, model]) => (
            <tr>
              <td><input value={name} onChange={(e) => rename(name, e.currentTarget.value)} aria-label="tier name" /></td>
              <td>
                <input id={`tier-model-${name}`} value={model} aria-label={`model of tier ${name}`}
                  onInput={(e) => set({ ...draft, tiers: { ...draft.tiers, [name]: e.currentTarget.value } })} />
                <FieldError errors={errors} path={`tiers.${name}`} />
              </td>
              <td>
                <button class="link" onClick={() => { const t = { ...draft.tiers }; delete t[name]; set({ ...draft, tiers: t }); }}>remove</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <button class="secondary" onClick={() => { let n = 1; while (`tier${n}` in draft.tiers) n++; set({ ...draft, tiers: { ...draft.tiers, [`tier${n}`]: "" } }); }}>
        Add tier
      </button>
    </div>
  );
}

function RulesEditor({ draft, set, errors }: { draft: RawPolicy; set: (d: RawPolicy) => void; errors: Errors }) {
  const tiers = Object.keys(draft.tiers);
  const upd = (i: number, r: Partial<Rule>) => set({ ...draft, rules: draft.rules.map((x, j) => (j === i ? { ...x, ...r } : x)) });
  const move = (i: number, by: number) => {
    const rules = [...draft.rules];
    const [r] = rules.splice(i, 1);
    rules.splice(Math.max(0, Math.min(rules.length, i + by)), 0, r);
    set({ ...draft, rules });
  };
  return (
    <div class="editor" id="rules-editor">
      <h3>Rules <span class="muted">(first match wins; the scorer decides the rest)</span></h3>
      <table>
        <thead>
          <tr><th>Task</th><th>Tools</th><th>Min chars</th><th>Tenant</th><th>Tier</th><th>Escalate to</th><th>Min confidence</th><th /></tr>
        </thead>
        <tbody>
          {draft.rules.map((r, i) => (
            <tr>
              <td><input value={r.task ?? ""} placeholder="any" onInput={(e) => upd(i, { task: optStr(e.currentTarget.value) })} /></td>
              <td>
                <select value={r.has_tools == null ? "" : String(r.has_tools)} onChange={(e) => upd(i, { has_tools: optBool(e.currentTarget.value) })}>
                  <option value="">any</option><option value="true">yes</option><option value="false">no</option>
                </select>
              </td>
              <td><input type="number" min="0" value={r.min_prompt_chars ?? ""} onInput={(e) => upd(i, { min_prompt_chars: optNum(e.currentTarget.value) })} /></td>
              <td><input value={r.tenant ?? ""} placeholder="any" onInput={(e) => upd(i, { tenant: optStr(e.currentTarget.value) })} /></td>
              <td>
                <select value={r.tier} onChange={(e) => upd(i, { tier: e.currentTarget.value })}>
                  {!tiers.includes(r.tier) && <option value={r.tier}>{r.tier}</option>}
                  {tiers.map((t) => <option value={t}>{t}</option>)}
                </select>
                <FieldError errors={errors} path={`rules[${i}].tier`} />
              </td>
              <td>
                <select value={r.escalate_to ?? ""} onChange={(e) => upd(i, { escalate_to: optStr(e.currentTarget.value) })}>
                  <option value="">none</option>
                  {tiers.map((t) => <option value={t}>{t}</option>)}
                </select>
                <FieldError errors={errors} path={`rules[${i}].escalate_to`} />
              </td>
              <td>
                <input type="number" step="0.1" max="0" value={r.min_confidence ?? ""} onInput={(e) => upd(i, { min_confidence: optNum(e.currentTarget.value) })} />
                <FieldError errors={errors} path={`rules[${i}].min_confidence`} />
              </td>
              <td class="nowrap">
                <button class="link" title="up" onClick={() => move(i, -1)}>↑</button>
                <button class="link" title="down" onClick={() => move(i, 1)}>↓</button>
                <button class="link" onClick={() => set({ ...draft, rules: draft.rules.filter((_, j) => j !== i) })}>remove</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <button class="secondary" onClick={() => set({ ...draft, rules: [...draft.rules, { tier: draft.weak || tiers[0] || "" }] })}>Add rule</button>
    </div>
  );
}

function TenantThresholds({ draft, set, errors }: { draft: RawPolicy; set: (d: RawPolicy) => void; errors: Errors }) {
  const [tenant, setTenant] = useState("");
  return (
    <div class="editor" id="tenant-thresholds">
      <h3>Per-tenant thresholds</h3>
      {Object.entries(draft.thresholds).map(([t, v]) => (
        <div class="row">
          <span class="tenant">{t}</span>
          <input type="range" min="0" max="1" step="0.01" value={Number.isFinite(v) ? v : 0}
            onInput={(e) => set({ ...draft, thresholds: { ...draft.thresholds, [t]: num(e.currentTarget.value) } })} />
          <input type="number" step="0.01" value={Number.isFinite(v) ? v : ""} class="small"
            onInput={(e) => set({ ...draft, thresholds: { ...draft.thresholds, [t]: num(e.currentTarget.value) } })} />
          <button class="link" onClick={() => { const th = { ...draft.thresholds }; delete th[t]; set({ ...draft, thresholds: th }); }}>remove</button>
          <FieldError errors={errors} path={`thresholds.${t}`} />
        </div>
      ))}
      <div class="row">
        <input placeholder="tenant" value={tenant} onInput={(e) => setTenant(e.currentTarget.value)} />
        <button class="secondary" disabled={!tenant.trim()} onClick={() => { set({ ...draft, thresholds: { ...draft.thresholds, [tenant.trim()]: draft.threshold } }); setTenant(""); }}>
          Add tenant threshold
        </button>
      </div>
    </div>
  );
}

function WhatIf({ sim }: { sim: Simulation }) {
  const tiers = Array.from(new Set([...Object.keys(sim.actual.tiers), ...Object.keys(sim.projected.tiers)])).sort();
  const config: ChartConfiguration = {
    type: "bar",
    data: {
      labels: tiers,
      datasets: [
        { label: "recent traffic (actual)", data: tiers.map((t) => 100 * (sim.actual.tiers[t]?.share ?? 0)), backgroundColor: palette[6] },
        { label: "with this draft", data: tiers.map((t) => 100 * (sim.projected.tiers[t]?.share ?? 0)), backgroundColor: palette[2] },
      ],
    },
    options: { scales: { y: { beginAtZero: true, max: 100, title: { display: true, text: "% of calls" } } } },
  } as ChartConfiguration;
  const dCost = sim.projected.cost_usd - sim.actual.cost_usd;
  return (
    <div class="whatif" id="whatif-result">
      <div class="kpis">
        <div class="kpi"><div class="label">Calls replayed</div><div class="value" id="whatif-replayed">{fmtNum(sim.replayed)}</div></div>
        <div class="kpi"><div class="label">Would route differently</div><div class="value" id="whatif-changed">{fmtNum(sim.changed)}</div></div>
        <div class="kpi"><div class="label">Projected cost</div><div class="value" id="whatif-cost">{fmtUsd(sim.projected.cost_usd)}</div>
          <div class={`sub ${dCost > 0 ? "bad" : "ok"}`}>{dCost >= 0 ? "+" : "−"}{fmtUsd(Math.abs(dCost))} vs actual {fmtUsd(sim.actual.cost_usd)}</div></div>
        <div class="kpi"><div class="label">Projected adequate answers</div><div class="value" id="whatif-quality">{fmtPct(sim.quality.projected_adequate_share)}</div>
          <div class="sub">{sim.quality.labelled ? `on ${fmtNum(sim.quality.labelled)} cascade-labelled calls` : "no cascade outcomes yet"}</div></div>
      </div>
      <ChartCard id="whatif" title="Tier shares: actual vs this draft" config={config} height={200} />
      <table class="compact" id="whatif-tiers">
        <thead><tr><th>Tier</th><th>Actual</th><th>Projected</th></tr></thead>
        <tbody>
          {tiers.map((t) => (
            <tr data-tier={t}>
              <td>{t}</td>
              <td>{fmtPct(sim.actual.tiers[t]?.share ?? 0)}</td>
              <td class="projected" id={`whatif-share-${t}`}>{fmtPct(sim.projected.tiers[t]?.share ?? 0)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {sim.unpriced_models.length > 0 && <p class="note">No price known for {sim.unpriced_models.join(", ")}: their cost counts as zero.</p>}
    </div>
  );
}

export function Routing(_: { arg: string | null }) {
  const current = usePoll(() => get<PolicyView | null>("/admin/routing/policy"), null);
  const history = usePoll(() => get<{ data: PolicyVersion[] }>("/admin/routing/history?limit=50"), null);
  const [draft, setDraft] = useState<RawPolicy | null>(null);
  const [errors, setErrors] = useState<Errors>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [sim, setSim] = useState<Simulation | null>(null);
  const [simOf, setSimOf] = useState<string>("");
  const [busy, setBusy] = useState(false);
  const [applied, setApplied] = useState<string | null>(null);
  const [limit, setLimit] = useState(1000);

  useEffect(() => {
    if (current.data && !draft) setDraft(toRaw(current.data));
  }, [current.data]);

  const dirty = useMemo(
    () => !!draft && !!current.data && JSON.stringify(draft) !== JSON.stringify(toRaw(current.data)),
    [draft, current.data],
  );

  const set = (d: RawPolicy) => {
    setDraft(d);
    setErrors({});
    setGeneral(null);
    setApplied(null);
  };

  // Bring the first field error into view (the form is longer than a window).
  const revealError = () =>
    window.setTimeout(() => document.querySelector(".field-error")?.scrollIntoView({ block: "center" }), 0);

  const showError = (e: unknown) => {
    if (e instanceof ApiError && e.param) {
      const path = e.param.replace(/^routing\./, "");
      setErrors({ [path]: e.message.replace(/^routing\.\S+:?\s*/, "") });
      setGeneral(`${e.param}: ${e.message}`);
      revealError();
    } else setGeneral((e as Error).message);
  };

  const check = (): boolean => {
    if (!draft) return false;
    const e = validate(draft);
    setErrors(e);
    if (Object.keys(e).length) {
      setGeneral("Fix the fields marked in red.");
      revealError();
      return false;
    }
    return true;
  };

  const whatIf = async () => {
    if (!draft || !check()) return;
    setBusy(true);
    try {
      setSim(await post<Simulation>("/admin/routing/simulate", { policy: draft, limit }));
      setSimOf(JSON.stringify(draft));
      setGeneral(null);
    } catch (e) {
      showError(e);
    } finally {
      setBusy(false);
    }
  };

  const apply = async () => {
    if (!draft || !check()) return;
    setBusy(true);
    try {
      const p = await put<PolicyView>("/admin/routing/policy", draft);
      setDraft(toRaw(p));
      current.reload();
      history.reload();
      setApplied(`Applied as version ${p.version}: the next request routes by it.`);
      setGeneral(null);
    } catch (e) {
      showError(e);
    } finally {
      setBusy(false);
    }
  };

  const rollback = async (version: number) => {
    setBusy(true);
    try {
      const p = await post<PolicyView>("/admin/routing/rollback", { version });
      setDraft(toRaw(p));
      current.reload();
      history.reload();
      setApplied(`Rolled back to version ${version} (now version ${p.version}).`);
    } catch (e) {
      showError(e);
    } finally {
      setBusy(false);
    }
  };

  if (current.error) return <div class="banner error">{current.error}</div>;
  if (current.data === null && !current.error && !draft) {
    return <p class="muted">Routing is off: add a <code>[routing]</code> table to the config to route the <code>auto</code> model.</p>;
  }
  if (!draft) return <p class="muted">Loading…</p>;
  const tiers = Object.keys(draft.tiers);
  const cal = current.data?.calibration;

  return (
    <div class="routing">
      <div class="grid two">
        <section class="card">
          <h2>
            Policy for <code>{draft.model}</code>{" "}
            <span class="muted" id="policy-version">version {current.data?.version ?? "–"}</span>
            {dirty && <span class="badge warn">draft</span>}
          </h2>
          <div class="field">
            <label for="threshold">Score threshold for the strong tier</label>
            <div class="row">
              <input type="range" id="threshold-slider" min="0" max="1" step="0.01"
                value={Number.isFinite(draft.threshold) ? draft.threshold : 0}
                onInput={(e) => set({ ...draft, threshold: num(e.currentTarget.value) })} />
              <input type="number" id="threshold" class="small" step="0.01"
                value={Number.isFinite(draft.threshold) ? draft.threshold : ""}
                onInput={(e) => set({ ...draft, threshold: num(e.currentTarget.value) })} />
            </div>
            <FieldError errors={errors} path="threshold" />
            <p class="note">
              Calls the scorer rates at or above it go to <b>{draft.strong || "?"}</b>; below it, to <b>{draft.weak || "?"}</b>.
              {cal && ` Calibrated to ${fmtNum(cal.threshold)} on ${fmtNum(cal.calls)} calls (strong share ${fmtPct(cal.achieved_share)}).`}
            </p>
          </div>
          <div class="field">
            <label>
              <input type="checkbox" id="strong-share-on" checked={draft.strong_share != null}
                onChange={(e) => set({ ...draft, strong_share: e.currentTarget.checked ? 0.3 : null })} />
              {" "}Calibrate the threshold to a strong-tier share
            </label>
            {draft.strong_share != null && (
              <div class="row">
                <input type="range" id="strong-share-slider" min="0" max="1" step="0.01" value={draft.strong_share}
                  onInput={(e) => set({ ...draft, strong_share: num(e.currentTarget.value) })} />
                <input type="number" id="strong_share" class="small" step="0.01" value={draft.strong_share}
                  onInput={(e) => set({ ...draft, strong_share: num(e.currentTarget.value) })} />
              </div>
            )}
            <FieldError errors={errors} path="strong_share" />
          </div>
          <div class="row fields">
            <div class="field">
              <label for="weak">Weak tier</label>
              <select id="weak" value={draft.weak} onChange={(e) => set({ ...draft, weak: e.currentTarget.value })}>
                {!tiers.includes(draft.weak) && <option value={draft.weak}>{draft.weak}</option>}
                {tiers.map((t) => <option value={t}>{t}</option>)}
              </select>
              <FieldError errors={errors} path="weak" />
            </div>
            <div class="field">
              <label for="strong">Strong tier</label>
              <select id="strong" value={draft.strong} onChange={(e) => set({ ...draft, strong: e.currentTarget.value })}>
                {!tiers.includes(draft.strong) && <option value={draft.strong}>{draft.strong}</option>}
                {tiers.map((t) => <option value={t}>{t}</option>)}
              </select>
              <FieldError errors={errors} path="strong" />
            </div>
            <div class="field">
              <label for="on_max_cost">Over a request's max cost</label>
              <select id="on_max_cost" value={draft.on_max_cost} onChange={(e) => set({ ...draft, on_max_cost: e.currentTarget.value as RawPolicy["on_max_cost"] })}>
                <option value="downgrade">downgrade</option>
                <option value="reject">reject</option>
              </select>
            </div>
          </div>
          <p class="note">Scorer: <code>{draft.scorer ?? "none (unmatched requests go to the weak tier)"}</code></p>
          <TenantThresholds draft={draft} set={set} errors={errors} />
        </section>
        <section class="card">
          <h2>What-if on recent traffic</h2>
          <div class="row">
            <label for="whatif-limit">Replay the last</label>
            <input type="number" id="whatif-limit" class="small" min="1" max="100000" value={limit}
              onInput={(e) => setLimit(Math.max(1, Math.min(100000, Number(e.currentTarget.value) || 1000)))} />
            <span>routed calls</span>
            <button id="run-whatif" onClick={whatIf} disabled={busy}>Run what-if</button>
          </div>
          {sim && simOf !== JSON.stringify(draft) && (
            <p class="banner warn" id="whatif-stale">The draft changed since this what-if: run it again.</p>
          )}
          {sim ? <WhatIf sim={sim} /> : <p class="muted">Run the draft over recent routed calls to see tier shares, cost and quality before applying it.</p>}
        </section>
      </div>
      <section class="card">
        <TiersEditor draft={draft} set={set} errors={errors} />
        <RulesEditor draft={draft} set={set} errors={errors} />
        <FieldError errors={errors} path="model" />
        <FieldError errors={errors} path="scorer" />
        <FieldError errors={errors} path="calibrate_calls" />
        <div class="actions">
          <button id="apply-policy" onClick={apply} disabled={busy || !dirty}>Apply</button>
          <button class="secondary" id="reset-policy" disabled={!dirty} onClick={() => current.data && set(toRaw(current.data))}>Discard draft</button>
          {general && <span class="banner error inline" id="policy-error">{general}</span>}
          {applied && <span class="banner ok inline" id="policy-applied">{applied}</span>}
        </div>
      </section>
      <section class="card">
        <h2>History</h2>
        <table id="history">
          <thead><tr><th>Version</th><th>Applied</th><th>From</th><th>Threshold</th><th>Tiers</th><th>Rules</th><th /></tr></thead>
          <tbody>
            {(history.data?.data ?? []).map((v, i) => (
              <tr data-version={v.version}>
                <td>{v.version}{i === 0 && <span class="badge ok">current</span>}</td>
                <td>{new Date(v.applied_at).toLocaleString()}</td>
                <td>{v.source}{v.restored ? ` (of ${v.restored})` : ""}</td>
                <td>{v.policy ? fmtNum(v.policy.threshold) : "routing off"}</td>
                <td>{v.policy ? Object.entries(v.policy.tiers).map(([k, m]) => `${k}=${m}`).join(", ") : ""}</td>
                <td>{v.policy?.rules.length ?? 0}</td>
                <td>
                  {i > 0 && v.policy && (
                    <button class="secondary" id={`rollback-${v.version}`} disabled={busy} onClick={() => rollback(v.version)}>Roll back</button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
