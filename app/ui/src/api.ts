// The admin API as the UI uses it. The browser carries the session cookie; state-changing
// calls add the header the daemon asks of cookie-authenticated writes. No key ever lives here.

/** An error in the API's own format, with the parameter it names (for field errors). */
export class ApiError extends Error {
  constructor(
    message: string,
    public status: number,
    public param: string | null,
    public code: string | null,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { "x-switchyard-ui": "1" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    if (res.status === 401) {
      // Signed out (or the session ended): back to the sign-in page.
      window.location.href = "/ui/";
    }
    const e = json?.error;
    throw new ApiError(e?.message ?? `${res.status} ${res.statusText}`, res.status, e?.param ?? null, e?.code ?? null);
  }
  return json as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body: unknown) => call<T>("POST", path, body);
export const put = <T>(path: string, body: unknown) => call<T>("PUT", path, body);

export interface Percentiles {
  count: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
}

export interface TimelinePoint {
  t: number;
  calls: number;
  rps: number;
  errors: number;
  cache_hits: number;
  local: number;
  cloud: number;
  cost_usd: number;
  savings_usd: number;
  latency: Percentiles | null;
  ttft: Percentiles | null;
}

export interface Timeline {
  step_s: number;
  points: TimelinePoint[];
}

export interface TotalsView {
  requests: number;
  errors: number;
  cost_usd: number;
  savings_usd: number;
  cache_hits: number;
  cache_hit_rate: number;
  local: number;
  cloud: number;
  error_rate: number;
  [k: string]: unknown;
}

export interface Stats {
  ledger: { enabled: boolean; records: number; queued: number; dropped: number };
  days: { day: string; totals: TotalsView }[];
  budgets: Budget[];
  latency: Record<string, Record<string, Record<string, Record<string, Percentiles>>>>;
}

export interface Budget {
  scope: string;
  name: string;
  spent_usd: number;
  soft_usd: number | null;
  hard_usd: number | null;
  over_soft: boolean;
  over_hard: boolean;
}

export interface Rule {
  task?: string | null;
  has_tools?: boolean | null;
  has_images?: boolean | null;
  min_prompt_chars?: number | null;
  tenant?: string | null;
  tier: string;
  escalate_to?: string | null;
  min_confidence?: number | null;
}

export interface RawPolicy {
  model: string;
  tiers: Record<string, string>;
  weak: string;
  strong: string;
  threshold: number;
  thresholds: Record<string, number>;
  scorer: string | null;
  rules: Rule[];
  strong_share: number | null;
  calibrate_calls: number;
  on_max_cost: "downgrade" | "reject";
  assumed_output_tokens: number;
}

export interface PolicyView extends RawPolicy {
  version: number | null;
  calibration: { threshold: number; calls: number; achieved_share: number } | null;
}

export interface Simulation {
  replayed: number;
  changed: number;
  projected: { tiers: Record<string, { calls: number; share: number }>; cost_usd: number };
  actual: { tiers: Record<string, { calls: number; share: number }>; cost_usd: number };
  unpriced_models: string[];
  quality: { labelled: number; projected_adequate_share: number | null };
}

export interface PolicyVersion {
  version: number;
  applied_at: string;
  source: "config" | "api" | "rollback";
  restored: number | null;
  policy: RawPolicy | null;
}

export interface CallRecord {
  id: string;
  trace_id: string;
  ts_us: number;
  tenant: string;
  key_id: string | null;
  user: string | null;
  tag: string | null;
  endpoint: string;
  model_requested: string | null;
  model_resolved: string | null;
  tier: string;
  provider: string | null;
  route_reason: string | null;
  route_inputs: unknown;
  cache: string;
  streamed: boolean;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  ttft_ms: number | null;
  latency_ms: number;
  upstream_ms: number | null;
  overhead_ms: number | null;
  attempts: number;
  cost_usd?: number;
  cost_pusd: number;
  savings_pusd: number;
  status: number;
  error: string | null;
  outcome: string;
}

export interface Page<T> {
  data: T[];
  has_more?: boolean;
  next_cursor?: string | null;
}

export interface Provider {
  name: string;
  kind: string;
  base_url: string;
  healthy: boolean;
  breaker: "closed" | "open" | "half_open";
  breaker_open_ms: number | null;
  cooling_ms: number | null;
  consecutive_failures: number;
  requests: number;
  failures: number;
  restarts: number;
  last_error: string | null;
  limits: {
    rpm_limit: number | null;
    rpm_used: number;
    tpm_limit: number | null;
    tpm_used: number;
    upstream: {
      requests_limit: number | null;
      requests_remaining: number | null;
      tokens_limit: number | null;
      tokens_remaining: number | null;
      seen_at: number;
    } | null;
  };
  latency: Record<string, Percentiles>;
}

export interface Job {
  id: string;
  tenant: string;
  operation: string;
  state: string;
  priority: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  runs: number;
  progress: { done: number; total: number; failed: number; eta_s: number | null };
  error: string | null;
  webhook?: { url: string; delivered: boolean; gave_up: boolean; deliveries: number };
}
