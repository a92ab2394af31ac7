// Numbers as people read them.

export const fmtUsd = (v: number | null | undefined): string => {
  if (v == null || !isFinite(v)) return "–";
  if (v === 0) return "$0";
  if (Math.abs(v) < 0.01) return `$${v.toPrecision(2)}`;
  return `$${v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
};

export const fmtMs = (v: number | null | undefined): string => {
  if (v == null || !isFinite(v)) return "–";
  if (v >= 10_000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 100) return `${Math.round(v)} ms`;
  return `${v.toFixed(1)} ms`;
};

export const fmtPct = (v: number | null | undefined): string =>
  v == null || !isFinite(v) ? "–" : `${(v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0)}%`;

export const fmtNum = (v: number | null | undefined): string =>
  v == null || !isFinite(v) ? "–" : v.toLocaleString(undefined, { maximumFractionDigits: 2 });

export const fmtTime = (unixS: number): string =>
  new Date(unixS * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export const fmtDateTime = (unixS: number): string => new Date(unixS * 1000).toLocaleString();

export const fmtAgo = (unixS: number | null | undefined): string => {
  if (!unixS) return "–";
  const s = Math.max(0, Date.now() / 1000 - unixS);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
};

export const pusd = (p: number): number => p / 1e12;
