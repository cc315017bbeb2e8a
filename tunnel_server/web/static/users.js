"use strict";
// The users page: a live table from /api/users, Disable/Enable/Rotate buttons, and a traffic
// chart (inline SVG) from /api/users/NAME/traffic. No external scripts.
(function () {
  const body = document.getElementById("users-body");
  let selected = null;

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) node.append(child);
    return node;
  }

  function formatBytes(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function formatTime(epoch) {
    return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) : "never";
  }

  async function post(url) {
    const response = await fetch(url, { method: "POST", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function button(label, testid, action) {
    const b = el("button", { type: "button", textContent: label, className: "btn" });
    b.dataset.testid = testid;
    b.addEventListener("click", async (event) => {
      event.stopPropagation();
      b.disabled = true;
      try { await action(); } finally { b.disabled = false; await refresh(); }
    });
    return b;
  }

  function render(users) {
    document.getElementById("users-count").textContent = String(users.length);
    body.replaceChildren(...users.map((u) => {
      const enc = encodeURIComponent(u.name);
      const toggle = u.enabled
        ? button("Disable", "disable-" + u.name, () => post("api/users/" + enc + "/disable"))
        : button("Enable", "enable-" + u.name, () => post("api/users/" + enc + "/enable"));
      const rotate = button("Rotate token", "rotate-" + u.name, async () => {
        const answer = await post("api/users/" + enc + "/rotate");
        document.getElementById("token-user").textContent = answer.name;
        document.getElementById("token-value").textContent = answer.token;
        document.getElementById("token-dialog").showModal();
      });
      const row = el("tr", {},
        el("td", { textContent: u.name }),
        el("td", { textContent: u.enabled ? (u.online ? "online" : "enabled") : "disabled" }),
        el("td", { className: "wrap", textContent: u.sessions.map((s) => s.client_id + " (" + s.address + ")").join(", ") || "–" }),
        el("td", { className: "wrap", textContent: u.proxies.join(", ") || "–" }),
        el("td", { textContent: formatBytes(u.bytes_today) }),
        el("td", { textContent: formatBytes(u.bytes_this_month) }),
        el("td", { className: "wrap", textContent: u.quota_text }),
        el("td", { textContent: formatTime(u.last_seen) }),
        el("td", {}, toggle, rotate));
      row.dataset.testid = "user-" + u.name;
      row.dataset.state = u.enabled ? "enabled" : "disabled";
      row.addEventListener("click", () => { selected = u.name; chart(u.name); });
      return row;
    }));
    if (selected === null && users.length) { selected = users[0].name; chart(selected); }
  }

  async function chart(name) {
    document.getElementById("traffic-user").textContent = name;
    const response = await fetch("api/users/" + encodeURIComponent(name) + "/traffic?days=30", { cache: "no-store" });
    if (!response.ok) return;
    const data = await response.json();
    const days = data.days;
    if (!days.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.dataset.testid = "traffic-empty";
      empty.textContent = "No traffic stored yet (usage reaches the store every few seconds).";
      document.getElementById("traffic-chart").replaceChildren(empty);
      return;
    }
    const ns = "http://www.w3.org/2000/svg";
    const width = 720, height = 160, pad = 20;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", "100%");
    const max = Math.max(1, ...days.map((d) => d.bytes_in + d.bytes_out));
    const slot = (width - pad) / Math.max(days.length, 1);
    days.forEach((d, i) => {
      const total = d.bytes_in + d.bytes_out;
      const h = Math.max(1, ((height - pad) * total) / max);
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(pad + i * slot));
      bar.setAttribute("y", String(height - pad - h));
      bar.setAttribute("width", String(Math.max(2, slot - 4)));
      bar.setAttribute("height", String(h));
      bar.setAttribute("class", "bar");
      bar.setAttribute("fill", "#4a7bd0");
      bar.dataset.day = d.day;
      bar.dataset.bytes = String(total);
      const title = document.createElementNS(ns, "title");
      title.textContent = d.day + ": " + formatBytes(d.bytes_in) + " in, " + formatBytes(d.bytes_out) + " out";
      bar.append(title);
      svg.append(bar);
    });
    document.getElementById("traffic-chart").replaceChildren(svg);
  }

  async function refresh() {
    const response = await fetch("api/users", { cache: "no-store", headers: { Accept: "application/json" } });
    if (response.ok) render(await response.json());
  }

  refresh();
  setInterval(refresh, 2000);
})();
