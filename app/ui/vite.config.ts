// The UI is served by the daemon under /ui/ (and loaded from there by the desktop app), so
// every asset URL is relative to that base; `npm run dev` proxies the API to a local daemon.
import { defineConfig } from "vite";

const daemon = process.env.SWITCHYARD_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  server: {
    proxy: {
      "/admin": daemon,
      "/v1": daemon,
      "/readyz": daemon,
    },
  },
});
