// The gateway's page: submit through the /v1 API, and keep the job table fresh.
// No framework and no build: the DOM API, fetch and localStorage.
"use strict";

const TOKEN_KEY = "mrk8s-gateway-token";
const REFRESH_MS = 1000;
const $ = (id) => document.getElementById(id);

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

// fetch() against the API, with the saved token when there is one.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  return fetch(path, { ...options, headers });
}

// What an error answer says: FastAPI's 422 lists one message per field.
async function problem(response) {
  let body;
  try {
    body = await response.json();
  } catch (e) {
    return response.status + " " + response.statusText;
  }
  if (Array.isArray(body.detail)) {
    return body.detail
      .map((d) => (d.loc || []).filter((p) => p !== "body").join(".") + ": " + d.msg)
      .join("\n");
  }
  return body.detail || response.status + " " + response.statusText;
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.classList.toggle("error", Boolean(isError));
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const r = await api("/v1/artifacts", { method: "POST", body: form });
  if (r.status !== 201) throw new Error(file.name + ": " + (await problem(r)));
  return (await r.json()).id;
}

async function submitJob(event) {
  event.preventDefault();
  const button = $("submit-button");
  button.disabled = true;
  say("uploading…");
  try {
    const script = await upload($("script").files[0]);
    const inputs = [];
    for (const file of $("input-files").files) inputs.push(await upload(file));
    for (const line of $("input-urls").value.split("\n")) {
      if (line.trim()) inputs.push(line.trim());
    }
    const body = {
      script,
      inputs,
      reducers: Number($("reducers").value || 2),
      queue: $("queue").value || null,
      backend: $("backend").value,
      args: $("args").value.split(/\s+/).filter(Boolean),
      resources: {},
    };
    if ($("workers").value) body.resources.workers = Number($("workers").value);
    if ($("memory").value.trim()) body.resources.memory_per_worker = $("memory").value.trim();
    if ($("callback").value.trim()) body.callback_url = $("callback").value.trim();
    const r = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (r.status !== 202) throw new Error(await problem(r));
    const job = await r.json();
    say("submitted " + job.id);
    $("message").dataset.jobId = job.id;
    refresh();
  } catch (e) {
    say(e.message, true);
  } finally {
    button.disabled = false;
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  if (text !== undefined) td.textContent = text;
  if (className) td.className = className;
  return td;
}

function link(td, label, href, title) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = label;
  a.className = label;
  a.addEventListener("click", (e) => {
    e.preventDefault();
    view(title, href);
  });
  td.appendChild(a);
}

// Logs and output need the token too, so they are fetched and shown in the page.
async function view(title, href) {
  $("viewer").hidden = false;
  $("viewer-title").textContent = title;
  $("viewer-text").textContent = "loading…";
  const r = await api(href);
  $("viewer-text").textContent = r.ok ? await r.text() : await problem(r);
  $("viewer").dataset.href = href;
  $("viewer").dataset.loaded = "true";
}

function progressText(job) {
  return (job.progress || [])
    .map((p) => `${p.stage} ${p.committed}/${p.tasks}`)
    .join(", ");
}

function render(jobs) {
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const job of jobs) {
    const row = body.insertRow();
    row.dataset.jobId = job.id;
    cell(row, job.id, "id");
    cell(row, job.user);
    cell(row, job.queue);
    cell(row, job.cluster + " (" + job.backend + ")");
    const status = cell(row, job.status, "status status-" + job.status);
    if (job.error) {
      const err = document.createElement("div");
      err.className = "error-text";
      err.textContent = job.error;
      status.appendChild(err);
    }
    cell(row, progressText(job), "progress");
    cell(row, new Date(job.created_at).toLocaleString());
    const links = cell(row, undefined, "links");
    link(links, "logs", job.logs, "logs of " + job.id);
    if (job.output) link(links, "output", job.output, "output of " + job.id);
    if (job.webhook) {
      const hook = document.createElement("div");
      hook.className = "webhook";
      hook.textContent = "webhook " + job.webhook.status + " (" + job.webhook.attempts + ")";
      links.appendChild(hook);
    }
    // Declarative mode: the rendered manifest and the commit it went into.
    if (job.git_commit) {
      const commit = document.createElement("div");
      commit.className = "git-commit";
      commit.textContent = "commit " + String(job.git_commit).slice(0, 12);
      links.appendChild(commit);
    }
    if (job.manifest) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "manifest";
      const pre = document.createElement("pre");
      pre.textContent =
        typeof job.manifest === "string" ? job.manifest : JSON.stringify(job.manifest, null, 2);
      details.open = openManifests.has(job.id);
      details.addEventListener("toggle", () => {
        if (details.open) openManifests.add(job.id);
        else openManifests.delete(job.id);
      });
      details.append(summary, pre);
      links.appendChild(details);
    }
  }
}

let timer = null;
const openManifests = new Set(); // kept open across refreshes

async function refresh() {
  clearTimeout(timer);
  try {
    const r = await api("/v1/jobs?limit=50");
    if (r.status === 401) {
      $("who").textContent = token() ? "wrong token" : "enter a token";
      render([]);
    } else if (r.ok) {
      render((await r.json()).jobs);
      $("who").textContent = token() ? "token saved" : "";
      $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    } else {
      $("refreshed").textContent = await problem(r);
    }
  } catch (e) {
    $("refreshed").textContent = "gateway unreachable: " + e.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.auth === "off") $("token-form").hidden = true;
  $("token").value = token();
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, $("token").value.trim());
    refresh();
  });
  $("forget").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    refresh();
  });
  $("viewer-close").addEventListener("click", () => {
    $("viewer").hidden = true;
  });
  $("submit-form").addEventListener("submit", submitJob);
  refresh();
});
