// Chart.js behind a small component: one chart per canvas, updated in place when its data
// changes (no re-creation, so auto-refresh does not flicker).
import { useEffect, useRef } from "preact/hooks";
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  ChartConfiguration,
  DoughnutController,
  ArcElement,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  DoughnutController,
  ArcElement,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);
Chart.defaults.color = "#94a3b8";
Chart.defaults.borderColor = "rgba(148,163,184,0.15)";
Chart.defaults.font.family = "system-ui, sans-serif";
Chart.defaults.animation = false;

export const palette = ["#38bdf8", "#a78bfa", "#f472b6", "#34d399", "#fbbf24", "#f87171", "#60a5fa", "#c084fc"];

export interface ChartProps {
  id: string;
  title: string;
  config: ChartConfiguration;
  height?: number;
  note?: string;
}

/** A titled chart card. `data-points` on the canvas says how many non-empty points it plots. */
export function ChartCard({ id, title, config, height = 220, note }: ChartProps) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  useEffect(() => {
    if (!canvas.current) return;
    if (!chart.current) {
      chart.current = new Chart(canvas.current, {
        ...config,
        options: { responsive: true, maintainAspectRatio: false, ...(config.options ?? {}) },
      } as ChartConfiguration);
    } else {
      chart.current.data = config.data;
      chart.current.update("none");
    }
  }, [config]);
  useEffect(() => () => chart.current?.destroy(), []);
  const points = config.data.datasets.reduce(
    (n, d) => n + (d.data as unknown[]).filter((v) => v != null && v !== 0).length,
    0,
  );
  return (
    <section class="card chart" data-chart={id}>
      <h3>{title}</h3>
      <div class="canvas-box" style={{ height: `${height}px` }}>
        <canvas ref={canvas} id={`chart-${id}`} data-points={points} aria-label={title} role="img" />
      </div>
      {note && <p class="note">{note}</p>}
    </section>
  );
}
