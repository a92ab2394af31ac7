// Async jobs across tenants, with live progress.
import { useState } from "preact/hooks";
import { get, Job } from "../api";
import { usePoll } from "../hooks";
import { fmtAgo, fmtNum } from "../format";

export function Jobs(_: { arg: string | null }) {
  const [state, setState] = useState("");
  const jobs = usePoll(() => get<{ data: Job[] }>(`/admin/jobs?limit=200${state ? `&state=${state}` : ""}`), 2000, [state]);
  const list = jobs.data?.data ?? [];
  return (
    <div>
      {jobs.error && <div class="banner error">{jobs.error}</div>}
      <div class="filters">
        <label>State
          <select id="job-state" value={state} onChange={(e) => setState(e.currentTarget.value)}>
            <option value="">any</option>
            {["queued", "running", "succeeded", "failed", "cancelled", "expired"].map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
      </div>
      {list.length === 0 && <p class="muted">No jobs{state ? ` in state ${state}` : ""}.</p>}
      <table id="jobs">
        <thead><tr><th>Job</th><th>Tenant</th><th>Operation</th><th>State</th><th>Progress</th><th>Created</th><th>Runs</th><th>Webhook</th></tr></thead>
        <tbody>
          {list.map((j) => {
            const share = j.progress.total ? j.progress.done / j.progress.total : j.state === "succeeded" ? 1 : 0;
            return (
              <tr data-job={j.id}>
                <td><code>{j.id}</code>{j.error && <div class="note">{j.error}</div>}</td>
                <td>{j.tenant}</td>
                <td>{j.operation}</td>
                <td><span class={`badge ${j.state === "succeeded" ? "ok" : j.state === "failed" || j.state === "expired" ? "bad" : j.state === "running" ? "info" : ""}`}>{j.state}</span></td>
                <td class="progress-cell">
                  <progress max={1} value={share} aria-label={`progress of ${j.id}`} />
                  <span class="muted"> {fmtNum(j.progress.done)}/{fmtNum(j.progress.total)}
                    {j.progress.failed ? ` · ${j.progress.failed} failed` : ""}
                    {j.progress.eta_s != null && j.state === "running" ? ` · ~${Math.ceil(j.progress.eta_s)} s left` : ""}</span>
                </td>
                <td>{fmtAgo(j.created_at)}</td>
                <td>{j.runs}</td>
                <td>{j.webhook ? `${j.webhook.delivered ? "delivered" : j.webhook.gave_up ? "gave up" : "pending"} (${j.webhook.deliveries})` : "–"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
