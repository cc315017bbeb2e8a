// tunnelkit server dashboard: polls the JSON API and renders the tables. No dependencies.
"use strict";

(() => {
  const POLL_INTERVAL_MS = 2000;
  const TOAST_MS = 3500;
  let toastTimer = null;
  let pollTimer = null;

  const byId = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function formatBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    if (m > 0) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }

  function formatSince(epochSeconds) {
    const ago = Date.now() / 1000 - epochSeconds;
    return formatDuration(ago) + " ago";
  }

  function toast(message, isError) {
    const node = byId("toast");
    node.textContent = message;
    node.className = isError ? "toast error" : "toast";
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, TOAST_MS);
  }

  async function post(url, button, doneMessage) {
    button.disabled = true;
    try {
      const response = await fetch(url, { method: "POST", headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      toast(doneMessage, false);
    } catch (err) {
      toast(`Failed: ${err.message}`, true);
      button.disabled = false;
    }
    refreshSoon(0);
  }

  function renderClients(clients) {
    const body = byId("clients-body");
    body.replaceChildren(...clients.map((client) => el("tr", { "data-testid": "client-row", "data-client-id": client.client_id },
      el("td", { class: "mono", text: client.client_id }),
      el("td", { class: "mono", text: client.address }),
      el("td", { text: client.user || "—" }),
      el("td", { class: "mono", text: client.version }),
      el("td", { title: new Date(client.since * 1000).toLocaleString(), text: formatSince(client.since) }),
      el("td", { class: "sub", text: client.proxies.length ? client.proxies.join(", ") : "—" }),
      el("td", { class: "actions" },
        el("button", {
          class: "danger", type: "button", "data-testid": "kick-button", text: "Kick",
          title: "Close this client's session; it will reconnect on its own",
          onclick: (event) => post(`api/clients/${encodeURIComponent(client.client_id)}/kick`,
            event.currentTarget, `Kicked ${client.client_id}`),
        })),
    )));
    byId("clients-count").textContent = String(clients.length);
    byId("clients-empty").hidden = clients.length > 0;
  }

  function publicCell(addresses) {
    const cell = el("td", { class: "public mono" });
    if (!addresses.length) cell.append("—");
    for (const address of addresses) {
      const isWeb = address.startsWith("http://") || address.startsWith("https://");
      cell.append(el("div", {}, isWeb ? el("a", { href: address, target: "_blank", rel: "noopener noreferrer", text: address }) : address));
    }
    return cell;
  }

  // The name, then what the client said about the proxy: annotations, metadatas and a
  // server-paced bandwidth limit with the current rate.
  function nameCell(proxy) {
    const cell = el("td", { class: "mono" }, el("div", { text: proxy.name }));
    const labels = { ...(proxy.annotations || {}), ...(proxy.metadatas || {}) };
    const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
    if (pairs.length) cell.append(el("div", { class: "sub", "data-testid": "proxy-meta", text: pairs.join(" ") }));
    if (proxy.bandwidth_limit) {
      cell.append(el("div", { class: "sub", "data-testid": "proxy-limit",
        text: `limit ${formatBytes(proxy.bandwidth_limit)}/s, now ${formatBytes(proxy.bandwidth_rate)}/s` }));
    }
    if (proxy.path) {
      const who = (proxy.visitors || []).join(", ");
      cell.append(el("div", { class: "sub", "data-testid": "proxy-visitors",
        text: `${(proxy.visitors || []).length} visitors (${proxy.path})${who ? ": " + who : ""}` }));
    }
    const p2p = Object.entries(proxy.p2p || {}).filter(([, count]) => count > 0);
    if (p2p.length) {
      cell.append(el("div", { class: "sub", "data-testid": "proxy-p2p",
        text: "P2P " + p2p.map(([what, count]) => `${what} ${count}`).join(", ") }));
    }
    return cell;
  }

  function renderProxies(proxies) {
    const body = byId("proxies-body");
    body.replaceChildren(...proxies.map((proxy) => el("tr", { "data-testid": "proxy-row", "data-proxy-name": proxy.name },
      nameCell(proxy),
      el("td", { class: "type", text: proxy.type }),
      publicCell(proxy.public),
      el("td", { class: "mono sub", text: proxy.client_id }),
      el("td", {}, el("span", { class: `pill ${proxy.status}`, text: proxy.status, title: proxy.reason || "" }),
        proxy.reason ? el("div", { class: "sub", "data-testid": "proxy-reason", text: proxy.reason }) : ""),
      el("td", { class: "num", text: formatBytes(proxy.bytes_in) }),
      el("td", { class: "num", text: formatBytes(proxy.bytes_out) }),
      el("td", { class: "num", title: "open / total", text: `${proxy.connections_active} / ${proxy.connections_total}` }),
      el("td", { class: "actions" },
        el("button", {
          class: "danger", type: "button", "data-testid": "close-button", text: "Close",
          title: "Close this proxy on the server",
          ...(proxy.status === "online" ? {} : { disabled: "" }),
          onclick: (event) => post(
            `api/proxies/${encodeURIComponent(proxy.client_id)}/${encodeURIComponent(proxy.name)}/close`,
            event.currentTarget, `Closed ${proxy.name}`),
        })),
    )));
    byId("proxies-count").textContent = String(proxies.length);
    byId("proxies-empty").hidden = proxies.length > 0;
  }

  function renderCertificates(certificates) {
    byId("certificates-panel").hidden = certificates.length === 0;
    byId("certificates-body").replaceChildren(...certificates.map((cert) => el("tr", { "data-testid": "certificate-row", "data-name": cert.name },
      el("td", { class: "mono", text: cert.name }),
      el("td", { class: "type", text: cert.source }),
      el("td", {}, el("span", { class: `pill ${cert.state === "ready" ? "online" : "offline"}`, text: cert.state })),
      el("td", { class: "sub", text: cert.not_after ? new Date(cert.not_after * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—" }),
      el("td", { class: "num", text: String(cert.failures) }),
      el("td", { class: "sub", text: cert.detail || "—" }),
    )));
    byId("certificates-count").textContent = String(certificates.length);
  }

  // One row per group: its members (the client each runs on), whether each is in the
  // rotation, and why a member left (a failed health check, or its client went away).
  function renderGroups(groups) {
    byId("groups-panel").hidden = groups.length === 0;
    byId("groups-body").replaceChildren(...groups.map((group) => el("tr", { "data-testid": "group-row", "data-group": group.name },
      el("td", { class: "mono", text: group.name }),
      el("td", { class: "type", text: group.type }),
      el("td", { class: "mono sub", text: group.user || "—" }),
      publicCell(group.public),
      el("td", {}, ...group.members.map((member) => el("div", { "data-testid": "group-member", "data-member": member.name },
        el("span", { class: `pill ${member.state === "online" && member.healthy ? "online" : "offline"}`,
          text: member.state === "online" ? (member.healthy ? "online" : "unhealthy") : "left" }),
        " ", el("span", { class: "mono", text: member.name }),
        el("span", { class: "sub", text: ` ${member.client_id}${member.reason ? " · " + member.reason : ""}` })))),
    )));
    byId("groups-count").textContent = String(groups.length);
  }

  // One row per live node: its load as it published it, and the clients (with their
  // proxies) that the cluster registry places on it.
  function renderCluster(cluster) {
    const panel = byId("cluster-panel");
    if (cluster === null) { panel.hidden = true; return; }
    panel.hidden = false;
    if (cluster.error) {
      byId("cluster-note").textContent = cluster.error;
      return;
    }
    const byNode = {};
    for (const client of cluster.clients) (byNode[client.node] = byNode[client.node] || []).push(client);
    const count = (load, key) => String((load || {})[key] ?? "—");
    byId("cluster-body").replaceChildren(...cluster.nodes.map((node) => el("tr", { "data-testid": "cluster-row", "data-node": node.name },
      el("td", { class: "mono" }, el("div", { text: node.name }), node.name === cluster.node ? el("div", { class: "sub", text: "this node" }) : null),
      el("td", { class: "mono sub", text: node.address }),
      el("td", { title: new Date(node.started * 1000).toLocaleString(), text: formatSince(node.started) }),
      el("td", { class: "num", "data-testid": "cluster-clients", text: count(node.load, "clients") }),
      el("td", { class: "num", "data-testid": "cluster-proxies", text: count(node.load, "proxies") }),
      el("td", { class: "num", text: count(node.load, "vhost_connections") }),
      el("td", { class: "num", text: `${count(node.load, "relayed_in")} / ${count(node.load, "relayed_out")}` }),
      el("td", { class: "num", text: String(node.claims) }),
      el("td", { class: "sub", "data-testid": "cluster-node-clients" }, ...(byNode[node.name] || []).map((client) =>
        el("div", { class: "mono", text: `${client.client_id} (${client.user || "—"}): ${client.proxies.join(", ")}` }))),
    )));
    byId("cluster-count").textContent = String(cluster.nodes.length);
    const notes = [];
    if (!cluster.registry_available) notes.push("registry unreachable: figures from the cache");
    if (cluster.proxies_truncated || cluster.nodes_truncated) notes.push("lists truncated");
    byId("cluster-note").textContent = notes.join(" · ");
  }

  // null when this tunneld is not a cluster node (no /api/cluster).
  async function fetchCluster() {
    const response = await fetch("api/cluster", { cache: "no-store", headers: { Accept: "application/json" } });
    if (response.status === 404) return null;
    const body = await response.json().catch(() => ({}));
    if (!response.ok) return { error: body.error || `HTTP ${response.status}` };
    return body;
  }

  function renderInfo(info) {
    byId("stat-clients").textContent = String(info.clients);
    byId("stat-proxies").textContent = `${info.proxies_online} / ${info.proxies}`;
    byId("stat-in").textContent = formatBytes(info.bytes_in);
    byId("stat-out").textContent = formatBytes(info.bytes_out);
    byId("stat-active").textContent = String(info.connections_active);
    byId("stat-uptime").textContent = formatDuration(info.uptime_seconds);
    byId("footer").textContent = `tunnelkit ${info.version} · protocol ${info.protocol_version}`;
  }

  function setLive(ok, text) {
    byId("live").className = ok ? "live ok" : "live error";
    byId("live-text").textContent = text;
  }

  async function refresh() {
    try {
      const response = await fetch("api", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      renderInfo(data.serverinfo);
      renderClients(data.clients);
      renderProxies(data.proxies);
      renderCertificates(data.certificates || []);
      renderGroups(data.groups || []);
      renderCluster(await fetchCluster());
      setLive(true, `live · updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      setLive(false, `cannot reach the server (${err.message}); retrying`);
    }
  }

  function refreshSoon(delayMs) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(async () => {
      await refresh();
      refreshSoon(POLL_INTERVAL_MS);
    }, delayMs);
  }

  refreshSoon(0);
})();
