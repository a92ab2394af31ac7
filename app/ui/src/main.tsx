// The control UI: a shell with one page per concern, chosen by the URL's hash so every view
// can be linked to and the daemon serves a single page.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { usePoll } from "./hooks";
import { Overview } from "./pages/Overview";
import { Routing } from "./pages/Routing";
import { Providers } from "./pages/Providers";
import { Requests } from "./pages/Requests";
import { CachePage } from "./pages/Cache";
import { Keys } from "./pages/Keys";
import { Jobs } from "./pages/Jobs";

const pages = [
  { id: "overview", title: "Overview", view: Overview },
  { id: "routing", title: "Routing", view: Routing },
  { id: "providers", title: "Providers", view: Providers },
  { id: "requests", title: "Requests", view: Requests },
  { id: "cache", title: "Cache", view: CachePage },
  { id: "keys", title: "Keys & budgets", view: Keys },
  { id: "jobs", title: "Jobs", view: Jobs },
] as const;

function currentRoute(): { page: string; arg: string | null } {
  const [page, arg] = window.location.hash.replace(/^#\/?/, "").split("/", 2);
  return { page: page || "overview", arg: arg ? decodeURIComponent(arg) : null };
}

interface Ready {
  status: string;
  providers: { name: string; healthy: boolean }[];
}

function Health() {
  const ready = usePoll(
    () =>
      fetch("/readyz")
        .then((r) => r.json() as Promise<Ready>)
        .catch(() => ({ status: "unreachable", providers: [] })),
    5000,
  );
  const s = ready.data?.status ?? "…";
  const cls = s === "ready" ? "ok" : s === "degraded" ? "warn" : "bad";
  return (
    <span class={`badge ${cls}`} id="daemon-status" title="GET /readyz">
      daemon: {s}
    </span>
  );
}

function App() {
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const page = pages.find((p) => p.id === route.page) ?? pages[0];
  const View = page.view;
  return (
    <div class="shell">
      <nav>
        <div class="brand">Switchyard</div>
        {pages.map((p) => (
          <a href={`#/${p.id}`} class={p.id === page.id ? "active" : ""} id={`nav-${p.id}`}>
            {p.title}
          </a>
        ))}
        <div class="grow" />
        <Health />
        <form method="post" action="/ui/logout">
          <button class="link" type="submit">
            Sign out
          </button>
        </form>
      </nav>
      <main id={`page-${page.id}`}>
        <h1>{page.title}</h1>
        <View arg={route.arg} />
      </main>
    </div>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
