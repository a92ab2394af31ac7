// The connect page: the only page with access to the app's commands.
const { invoke } = window.__TAURI__.core;
const status = document.getElementById("status");
const url = document.getElementById("url");
const say = (text, bad) => {
  status.textContent = text;
  status.className = bad ? "bad" : "";
};

invoke("state").then((s) => {
  if (s.saved) url.value = s.saved;
  if (s.sidecar) say("A local daemon is running.");
});

document.getElementById("connect").addEventListener("submit", async (e) => {
  e.preventDefault();
  say("Connecting…");
  try {
    await invoke("connect", { url: url.value });
  } catch (err) {
    say(String(err), true);
  }
});

document.getElementById("local").addEventListener("click", async () => {
  say("Starting the local daemon (loading local models can take a minute)…");
  try {
    await invoke("start_local");
  } catch (err) {
    say(String(err), true);
  }
});
