// API keys (ids and roles only: the daemon keeps hashes and never sends them) with today's
// use, and spend budgets against their limits.
import { get, Budget, TotalsView } from "../api";
import { usePoll } from "../hooks";
import { fmtNum, fmtUsd } from "../format";

interface KeysView {
  day: string;
  allow_unauthenticated_loopback: boolean;
  keys: { id: string; tenant: string; admin: boolean; today: TotalsView }[];
  tenants: Record<string, TotalsView>;
  budgets: Budget[];
}

function BudgetBar({ b }: { b: Budget }) {
  const cap = b.hard_usd ?? b.soft_usd ?? 0;
  const share = cap ? Math.min(1, b.spent_usd / cap) : 0;
  const soft = b.soft_usd && b.hard_usd ? b.soft_usd / b.hard_usd : null;
  return (
    <div class="meter-box" data-budget={`${b.scope}:${b.name}`}>
      <div class="meter-text">
        {b.scope} <b>{b.name}</b>: {fmtUsd(b.spent_usd)} spent today
        {b.soft_usd != null && ` · soft ${fmtUsd(b.soft_usd)}`}
        {b.hard_usd != null && ` · hard ${fmtUsd(b.hard_usd)}`}
        {b.over_hard ? <span class="badge bad">over hard limit</span> : b.over_soft ? <span class="badge warn">over soft limit</span> : null}
      </div>
      <div class="meter">
        <div class={`fill ${b.over_hard ? "bad" : b.over_soft ? "warn" : "ok"}`} style={{ width: `${share * 100}%` }} />
        {soft != null && <div class="tick" style={{ left: `${soft * 100}%` }} title="soft limit" />}
      </div>
    </div>
  );
}

export function Keys(_: { arg: string | null }) {
  const v = usePoll(() => get<KeysView>("/admin/keys"), 10000);
  const d = v.data;
  return (
    <div>
      {v.error && <div class="banner error">{v.error}</div>}
      {d?.allow_unauthenticated_loopback && (
        <div class="banner warn">Calls from this machine need no key (<code>allow_unauthenticated_loopback</code>).</div>
      )}
      <section class="card">
        <h2>Budgets ({d?.day})</h2>
        {(d?.budgets ?? []).length === 0 && <p class="muted">No budgets are configured (<code>[budgets]</code>).</p>}
        {(d?.budgets ?? []).map((b) => <BudgetBar b={b} />)}
      </section>
      <section class="card">
        <h2>Keys</h2>
        <table id="keys">
          <thead><tr><th>Key id</th><th>Tenant</th><th>Role</th><th>Calls today</th><th>Errors</th><th>Tokens</th><th>Cost today</th></tr></thead>
          <tbody>
            {(d?.keys ?? []).map((k) => (
              <tr>
                <td><code>{k.id}</code></td><td>{k.tenant}</td><td>{k.admin ? "admin" : "client"}</td>
                <td>{fmtNum(k.today.requests)}</td><td>{fmtNum(k.today.errors)}</td>
                <td>{fmtNum(Number(k.today.total_tokens ?? 0))}</td><td>{fmtUsd(k.today.cost_usd)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <p class="note">Keys are configured in <code>[[auth.keys]]</code> as SHA-256 hashes (<code>switchyard hash-key</code>); the key itself is never stored or shown.</p>
      </section>
    </div>
  );
}
