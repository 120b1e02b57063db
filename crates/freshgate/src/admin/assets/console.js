// freshgate console: the few interactive bits (no framework, no build step).
"use strict";

async function api(method, path, body) {
  const init = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(data.error || ("HTTP " + response.status));
  }
  return data;
}

function deadFilter() {
  const form = document.getElementById("dead-filter");
  const filter = {};
  if (form) {
    for (const [k, v] of new FormData(form).entries()) {
      if (typeof v === "string" && v.trim() !== "") filter[k] = v.trim();
    }
  }
  return filter;
}

// Dead letters: replay one, the selection, or everything matching; then follow them out.
function setupDeadLetters() {
  const table = document.getElementById("dead-letters");
  if (!table) return;
  const result = document.getElementById("replay-result");
  const replay = async (request, what) => {
    try {
      const r = await api("POST", "/api/v1/dead-letters/replay", request);
      result.textContent = r.requeued + " " + what + " put back in the queue";
      follow();
    } catch (e) {
      result.textContent = "Replay failed: " + e.message;
    }
  };
  table.addEventListener("click", (event) => {
    const button = event.target.closest("button.replay-one");
    if (button) replay({ delivery_ids: [Number(button.value)] }, "dead letter");
  });
  document.getElementById("replay-selected").addEventListener("click", () => {
    const ids = [...table.querySelectorAll("input.pick:checked")].map((c) => Number(c.value));
    if (ids.length === 0) {
      result.textContent = "Select dead letters first";
      return;
    }
    replay({ delivery_ids: ids }, "dead letters");
  });
  document.getElementById("replay-all").addEventListener("click", async () => {
    const filter = deadFilter();
    const query = new URLSearchParams(filter).toString();
    let count;
    try {
      ({ count } = await api("GET", "/api/v1/dead-letters/count?" + query));
    } catch (e) {
      result.textContent = "Cannot count the dead letters: " + e.message;
      return;
    }
    if (count === 0) {
      result.textContent = "No dead letter matches";
      return;
    }
    if (window.confirm("Replay " + count + " dead letters?")) replay({ filter }, "dead letters");
  });
}

// After a replay, mark the rows that left the dead-letter queue until none is left to follow.
let following = null;
function follow() {
  if (following) return;
  let rounds = 0;
  following = window.setInterval(async () => {
    rounds += 1;
    const query = new URLSearchParams(Object.assign(deadFilter(), { limit: "1000" })).toString();
    let dead;
    try {
      dead = await api("GET", "/api/v1/dead-letters?" + query);
    } catch (e) {
      return;
    }
    const still = new Set(dead.map((d) => String(d.delivery_id)));
    for (const row of document.querySelectorAll("#dead-letters tbody tr")) {
      row.classList.toggle("requeued", !still.has(row.dataset.deliveryId));
    }
    const count = document.getElementById("dead-count");
    count.dataset.count = String(dead.length);
    count.textContent = dead.length + " matching";
    if (rounds > 60) {
      window.clearInterval(following);
      following = null;
    }
  }, 1000);
}

function setupDestinations() {
  for (const button of document.querySelectorAll("button.test-connection")) {
    button.addEventListener("click", async () => {
      const out = button.parentElement.querySelector(".test-result");
      out.textContent = "Testing…";
      try {
        const r = await api("POST", "/api/v1/destinations/" + encodeURIComponent(button.value) + "/test");
        out.textContent = r.message;
        out.className = "test-result " + (r.ok ? "ok" : "error");
      } catch (e) {
        out.textContent = e.message;
        out.className = "test-result error";
      }
    });
  }
  for (const form of document.querySelectorAll("form.preview")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = form.nextElementSibling;
      out.replaceChildren();
      let traits;
      try {
        traits = JSON.parse(form.elements.traits.value);
      } catch (e) {
        out.append(paragraph("The traits are not JSON: " + e.message, "error"));
        return;
      }
      try {
        const r = await api("POST", "/api/v1/destinations/" + encodeURIComponent(form.dataset.destination) + "/preview",
          { user_id: form.elements.user_id.value, traits });
        renderPreview(out, r);
      } catch (e) {
        out.append(paragraph(e.message, "error"));
      }
    });
  }
}

function paragraph(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) p.className = className;
  return p;
}

function describe(t) {
  switch (t.outcome) {
    case "identifier": return "the contact's email (unique identifier)";
    case "field": return "→ " + t.field + " (" + t.label + (t.custom ? ", custom" : "") + "), matched by " + t.matched_by.replace(/_/g, " ");
    case "name_split": return "→ first_name and last_name";
    case "unmapped": return "no field matches" + (t.suggestions.length ? "; closest: " + t.suggestions.join(", ") : "");
    case "ambiguous": return "matches several fields: " + t.fields.join(", ");
    case "coercion_failed": return t.field + ": " + t.reason;
    case "older_than_kept": return t.field + " holds a value from a newer event";
    default: return t.outcome;
  }
}

function renderPreview(out, r) {
  if (r.problem) out.append(paragraph(r.problem, "error"));
  if (r.body) {
    out.append(paragraph("POST /contacts/upsert with:"));
    const pre = document.createElement("pre");
    pre.className = "preview-body";
    pre.textContent = JSON.stringify(r.body, null, 2);
    out.append(pre);
  }
  const table = document.createElement("table");
  table.className = "list mapping";
  const head = table.createTHead().insertRow();
  for (const h of ["Trait", "Value", "Outcome"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const body = table.createTBody();
  for (const t of r.traits) {
    const row = body.insertRow();
    row.className = t.outcome.replace(/_/g, "-");
    row.dataset.trait = t.key;
    row.insertCell().textContent = t.key;
    row.insertCell().textContent = JSON.stringify(t.value);
    row.insertCell().textContent = describe(t);
  }
  out.append(table);
}

document.addEventListener("DOMContentLoaded", () => {
  setupDeadLetters();
  setupDestinations();
});
