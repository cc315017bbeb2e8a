// tunnelkit request inspector: a live list over server-sent events, details, replay.
"use strict";

(() => {
  const byId = (id) => document.getElementById(id);
  const rows = new Map(); // exchange id -> <li>
  let selectedId = null;
  let detailSeq = 0; // ignores detail responses that arrive after a newer selection
  const picked = new Set(); // ticked ids, for Compare and Export HAR
  const FILTER_KEYS = ["q", "path", "method", "status", "proxy"];

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
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined) return "";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function statusBadge(exchange) {
    const status = exchange.status;
    const text = status ? String(status) : (exchange.error ? "error" : "…");
    const cls = status ? `status s${String(status)[0]}` : "status";
    return el("span", { class: cls, "data-testid": "row-status", title: exchange.error || exchange.reason || "", text });
  }

  // ---- the list ------------------------------------------------------------------------

  function buildRow(exchange) {
    const time = new Date(exchange.started_at * 1000).toLocaleTimeString();
    const pick = el("input", {
      type: "checkbox", class: "pick", "data-testid": "row-pick", title: "Tick to compare or export",
      onclick: (event) => event.stopPropagation(),
      onchange: (event) => { if (event.target.checked) picked.add(exchange.id); else picked.delete(exchange.id); updatePicked(); },
    });
    pick.checked = picked.has(exchange.id);
    const meta = el("div", { class: "meta" },
      pick,
      el("span", { text: time }),
      el("span", { text: formatDuration(exchange.duration_ms) }),
      el("span", { text: exchange.proxy }),
      exchange.replay ? el("span", { class: "tag", text: "replay" }) : null,
      exchange.late ? el("span", { class: "tag late", text: "delivered late" }) : null,
      exchange.mocked ? el("span", { class: "tag mock", "data-testid": "row-mocked", text: exchange.mocked }) : null,
      exchange.wechat_retry_of ? el("span", { class: "tag late", "data-testid": "row-retry", text: `WeChat retry of #${exchange.wechat_retry_of}` }) : null,
      exchange.wechat_slow ? el("span", { class: "tag error", "data-testid": "row-slow", text: "slower than 5 s" }) : null,
      exchange.error && exchange.status ? el("span", { class: "tag error", text: "incomplete" }) : null);
    const row = el("li", {
      class: exchange.id === selectedId ? "request-row selected" : "request-row",
      "data-testid": "request-row", "data-id": String(exchange.id), tabindex: "0",
      onclick: () => select(exchange.id),
      onkeydown: (event) => { if (event.key === "Enter") select(exchange.id); },
    },
    el("span", { class: "method", text: exchange.method }),
    el("span", { class: "path", title: exchange.path, text: exchange.path }),
    statusBadge(exchange),
    meta);
    return row;
  }

  function upsert(exchange) {
    const row = buildRow(exchange);
    const old = rows.get(exchange.id);
    const list = byId("request-list");
    if (old) {
      old.replaceWith(row);
    } else {
      // Newest first: insert before the first row with a smaller id.
      let before = null;
      for (const [id, node] of rows) {
        if (id < exchange.id && (before === null || id > Number(before.dataset.id))) before = node;
      }
      list.insertBefore(row, before);
    }
    rows.set(exchange.id, row);
    updateCount();
  }

  function removeRow(id) {
    const row = rows.get(id);
    if (row) row.remove();
    rows.delete(id);
    picked.delete(id);
    updateCount();
    updatePicked();
  }

  function updatePicked() {
    for (const id of [...picked]) if (!rows.has(id)) picked.delete(id);
    byId("compare-button").disabled = picked.size !== 2;
    byId("har-button").disabled = picked.size === 0;
  }

  function clearList() {
    picked.clear();
    updatePicked();
    rows.clear();
    byId("request-list").replaceChildren();
    updateCount();
    showDetail(null);
  }

  function updateCount() {
    byId("request-count").textContent = String(rows.size);
    byId("list-empty").hidden = rows.size > 0;
  }

  function showLimits(data) {
    const parts = [`Keeps the last ${data.max_requests} requests`];
    if (data.max_age) parts.push(`for ${formatAge(data.max_age)}`);
    parts.push(data.history_file ? "on disk" : "in memory only");
    byId("limits").textContent = `${parts.join(" ")} · bodies up to ${formatBytes(data.max_body_bytes)} each`;
    byId("limits").title = data.history_file ? `history file: ${data.history_file}` : "";
  }

  function formatAge(seconds) {
    if (seconds >= 86400 && seconds % 86400 === 0) return `${seconds / 86400} days`;
    if (seconds >= 3600) return `${(seconds / 3600).toFixed(1)} hours`;
    return `${Math.round(seconds)} s`;
  }

  // ---- filters, in the address bar too (so a filtered view is a link) ----------------------

  function filterQuery() {
    const params = new URLSearchParams();
    for (const key of FILTER_KEYS) {
      const value = byId(`filter-${key}`).value.trim();
      if (value) params.set(key, value);
    }
    return params.toString();
  }

  function syncAddress() {
    const query = filterQuery();
    const hash = selectedId !== null ? `#/requests/${selectedId}` : "";
    history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${hash}`);
  }

  async function reloadList() {
    const query = filterQuery();
    const response = await fetch(`api/requests${query ? `?${query}` : ""}`, { cache: "no-store" });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    byId("filter-error").hidden = true;
    rows.clear();
    byId("request-list").replaceChildren();
    for (const exchange of data.requests.slice().reverse()) upsert(exchange);
    updateCount();
    updatePicked();
    showLimits(data);
    if (selectedId !== null && !rows.has(selectedId) && !query) showDetail(null);
  }

  // ---- the detail pane ---------------------------------------------------------------------

  function headersTable(table, headers) {
    table.replaceChildren(...headers.map(([name, value]) => el("tr", {}, el("td", { text: name }), el("td", { text: value }))));
    if (!headers.length) table.replaceChildren(el("tr", {}, el("td", { text: "no headers" }), el("td", {})));
  }

  function bodyView(container, body) {
    container.replaceChildren();
    if (body.kind === "empty") {
      container.append(el("p", { class: "hint", text: "No body." }));
      return;
    }
    const views = [];
    if (body.kind === "form" && body.form) {
      const table = el("table", { class: "headers" });
      headersTable(table, body.form);
      views.push(["Form", table]);
    }
    if (body.pretty) views.push([body.kind.toUpperCase(), el("pre", { class: "code", "data-testid": "pretty-body", text: body.pretty })]);
    if (body.text !== null) views.push(["Raw", el("pre", { class: "code", "data-testid": "raw-body", text: body.text })]);
    else views.push(["Base64", el("pre", { class: "code", text: body.base64 })]);

    const notes = [formatBytes(body.size)];
    if (body.content_type) notes.push(body.content_type);
    if (body.truncated) notes.push(`showing the first ${formatBytes(body.kept)}`);
    if (body.note) notes.push(body.note);

    const tabs = el("div", { class: "tabs" });
    const slot = el("div");
    views.forEach(([label, view], index) => {
      const button = el("button", { type: "button", text: label, onclick: () => {
        for (const other of tabs.querySelectorAll("button")) other.classList.remove("active");
        button.classList.add("active");
        slot.replaceChildren(view);
      } });
      if (index === 0) button.classList.add("active");
      tabs.append(button);
    });
    tabs.append(el("span", { class: "hint", text: notes.join(" · ") }));
    slot.append(views[0][1]);
    container.append(tabs, slot);
  }

  function showDetail(detail) {
    byId("diff-view").hidden = true;
    byId("detail-empty").hidden = detail !== null;
    byId("detail-body").hidden = detail === null;
    if (detail === null) {
      selectedId = null;
      for (const row of rows.values()) row.classList.remove("selected");
      return;
    }
    byId("d-method").textContent = detail.method;
    byId("d-path").textContent = detail.path;
    const meta = [
      `#${detail.id}`,
      detail.proxy,
      new Date(detail.started_at * 1000).toLocaleString(),
      `HTTP/${detail.http_version}`,
    ];
    if (detail.duration_ms !== null) meta.push(formatDuration(detail.duration_ms));
    if (detail.replay) meta.push(`replay of #${detail.replay_of}`);
    byId("d-meta").replaceChildren(...meta.map((text) => el("span", { text })));
    if (detail.error) byId("d-meta").append(el("span", { class: "tag error", text: detail.error }));

    const signature = byId("d-signature");
    signature.hidden = !detail.signature;
    byId("resign-button").hidden = !detail.signature;
    if (detail.signature) {
      const sig = detail.signature;
      const verdict = sig.valid === null ? "not checked" : (sig.valid ? "valid" : "INVALID");
      signature.textContent = `${sig.provider} signature ${verdict}: ${sig.detail}`;
      signature.className = sig.valid === null ? "notice" : (sig.valid ? "notice valid" : "notice invalid");
      signature.dataset.valid = String(sig.valid);
    }

    showWeChat(detail);

    const status = byId("d-status");
    status.textContent = detail.status ? `${detail.status} ${detail.reason}` : (detail.error ? "no response" : "waiting…");
    status.className = detail.status ? `status s${String(detail.status)[0]}` : "status";

    byId("d-query-card").hidden = !detail.query.length;
    headersTable(byId("d-query"), detail.query);
    byId("har-link").href = `api/requests/${detail.id}/har`;
    byId("raw-link").href = `api/requests/${detail.id}/raw`;
    headersTable(byId("d-req-headers"), detail.request_headers);
    bodyView(byId("d-req-body"), detail.request_body);
    headersTable(byId("d-resp-headers"), detail.response_headers);
    bodyView(byId("d-resp-body"), detail.status ? detail.response_body : { kind: "empty" });
    fillEditForm(detail);
  }

  function showWeChat(detail) {
    const info = detail.wechat;
    byId("d-wechat").hidden = !info;
    if (!info) return;
    const notes = [];
    const add = (text, cls, testid) => notes.push(el("p", { class: `notice ${cls || ""}`, "data-testid": testid || "wechat-note", text }));
    if (info.kind === "validation") {
      add("URL validation (echostr) request", "", "wechat-kind");
      if (info.echostr_ok === true) add("Your app answered the echostr: WeChat accepts this URL.", "valid", "wechat-echostr");
      if (info.echostr_ok === false) add("Your app did not answer the echostr verbatim: WeChat will reject this URL.", "invalid", "wechat-echostr");
    } else {
      add(info.kind, "", "wechat-kind");
    }
    if (info.retry_of) add(`WeChat retry of #${info.retry_of}: WeChat resends a message it got no answer to within 5 s (same MsgId, or FromUserName + CreateTime).`, "invalid", "wechat-retry");
    if (info.slow) add(`Answered in ${formatDuration(detail.duration_ms)}: WeChat waits 5 s, then gives up and retries.`, "invalid", "wechat-slow");
    if (info.decrypt_error) add(info.decrypt_error, "invalid", "wechat-decrypt-error");
    byId("d-wechat-notes").replaceChildren(...notes);
    const decrypted = byId("d-wechat-decrypted");
    decrypted.hidden = !info.decrypted;
    decrypted.textContent = info.decrypted ? `decrypted message:\n${info.decrypted}` : "";
    const reply = byId("d-wechat-reply");
    reply.hidden = !info.decrypted_reply;
    reply.textContent = info.decrypted_reply ? `decrypted reply:\n${info.decrypted_reply}` : "";
  }

  async function select(id) {
    selectedId = id;
    syncAddress();
    for (const [rowId, row] of rows) row.classList.toggle("selected", rowId === id);
    byId("replay-result").hidden = true;
    byId("replay-form").hidden = true;
    await refreshDetail();
  }

  async function refreshDetail() {
    if (selectedId === null) return;
    const seq = ++detailSeq;
    const response = await fetch(`api/requests/${selectedId}`, { cache: "no-store" });
    if (seq !== detailSeq) return;
    if (response.status === 404) {
      showDetail(null);
      return;
    }
    showDetail(await response.json());
  }

  // ---- replay ------------------------------------------------------------------------------

  let current = null;

  function fillEditForm(detail) {
    current = detail;
    if (!byId("replay-form").hidden) return; // do not clobber edits in progress
    byId("replay-method").value = detail.method;
    byId("replay-path").value = detail.path;
    byId("replay-headers").value = detail.request_headers
      .filter(([name]) => !["content-length", "transfer-encoding", "connection"].includes(name.toLowerCase()))
      .map(([name, value]) => `${name}: ${value}`).join("\n");
    const body = detail.request_body;
    byId("replay-body").value = body.text !== null ? body.text : "";
  }

  function notice(text, isError) {
    const node = byId("replay-result");
    node.textContent = text;
    node.className = isError ? "notice error" : "notice";
    node.hidden = false;
  }

  async function replay(edits, resign) {
    if (!current) return;
    const repeat = Math.max(1, Math.min(100, Number(byId("repeat-count").value) || 1));
    const request = { ...(edits || {}) };
    if (resign) request.resign = true;
    if (repeat > 1) request.repeat = repeat;
    edits = Object.keys(request).length ? request : null;
    const buttons = [byId("replay-button"), byId("edit-replay-button"), byId("resign-button")];
    for (const button of buttons) button.disabled = true;
    try {
      const response = await fetch(`api/requests/${current.id}/replay`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: edits ? JSON.stringify(edits) : "",
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      byId("replay-form").hidden = true;
      upsert(data);
      await select(data.id);
      const how = resign ? "Replayed re-signed" : "Replayed";
      if (data.repeats && data.repeats.length > 1) {
        const statuses = data.repeats.map((r) => r.status || "error").join(", ");
        notice(`${how} ${data.repeats.length} times: ${statuses}`, false);
      } else {
        notice(`${how}: ${data.status} ${data.reason} in ${formatDuration(data.duration_ms)}`, false);
      }
    } catch (err) {
      notice(`Replay failed: ${err.message}`, true);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  function parseHeaderLines(text) {
    const headers = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      const colon = line.indexOf(":");
      if (colon <= 0) throw new Error(`header line "${line}" has no "Name: value" form`);
      headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
    }
    return headers;
  }

  byId("replay-button").addEventListener("click", () => replay(null, false));
  byId("resign-button").addEventListener("click", () => replay(null, true));
  byId("edit-replay-button").addEventListener("click", () => {
    const form = byId("replay-form");
    if (form.hidden && current) fillEditForm(current); // start from the request as captured
    form.hidden = !form.hidden;
  });
  byId("replay-cancel").addEventListener("click", () => { byId("replay-form").hidden = true; });
  byId("replay-form").addEventListener("submit", (event) => {
    event.preventDefault();
    let headers;
    try {
      headers = parseHeaderLines(byId("replay-headers").value);
    } catch (err) {
      notice(err.message, true);
      return;
    }
    replay({
      method: byId("replay-method").value.trim(),
      path: byId("replay-path").value.trim(),
      headers,
      body: byId("replay-body").value,
    });
  });

  byId("clear-button").addEventListener("click", async () => {
    const response = await fetch("api/requests/clear", { method: "POST" });
    if (response.ok) clearList();
  });

  // ---- live updates ------------------------------------------------------------------------

  function setLive(ok, text) {
    byId("live").className = ok ? "live ok" : "live error";
    byId("live-text").textContent = text;
  }

  // ---- the proxies' public URLs (https:// appears once the server's edge has a certificate) ----
  const TUNNELS_REFRESH_MS = 3000;
  let tunnelsShown = "";

  function renderTunnels(tunnels) {
    const key = JSON.stringify(tunnels);
    if (key === tunnelsShown) return; // unchanged: keep the DOM (and any hover) as it is
    tunnelsShown = key;
    const list = byId("tunnels");
    list.replaceChildren(...tunnels.map((t) => el("li", { "data-testid": "tunnel" },
      el("span", { class: "name", text: t.name }),
      ...t.public.map((url) => el("a", {
        href: `${url}/`, target: "_blank", rel: "noopener", "data-testid": "tunnel-url", text: url,
      })),
      t.public.length ? null : el("span", { class: "note", text: t.state }),
      t.note ? el("span", { class: "note", "data-testid": "tunnel-note", text: t.note }) : null)));
  }

  async function refreshTunnels() {
    try {
      const response = await fetch("api/tunnels", { cache: "no-store" });
      if (response.ok) renderTunnels((await response.json()).tunnels);
    } catch (err) {
      // The inspector is restarting or gone: the live status already says so; try again later.
    }
    setTimeout(refreshTunnels, TUNNELS_REFRESH_MS); // one request at a time, never piling up
  }

  let source = null;

  function connect() {
    if (source) source.close();
    const query = filterQuery();
    source = new EventSource(`api/events${query ? `?${query}` : ""}`);
    source.onmessage = async (message) => {
      const event = JSON.parse(message.data);
      if (event.kind === "hello" || event.kind === "resync" || event.kind === "expired") {
        setLive(true, "live");
        await reloadList().catch((err) => setLive(false, `cannot load requests (${err.message})`));
      } else if (event.kind === "cleared") {
        clearList();
      } else if (event.kind === "hidden") {
        removeRow(event.id);
      } else if (event.kind === "added" || event.kind === "updated") {
        upsert(event.exchange);
        if (event.exchange.id === selectedId && event.kind === "updated") refreshDetail();
      }
    };
    // EventSource reconnects by itself (the server sets retry: 2000).
    source.onerror = () => setLive(false, "disconnected; reconnecting…");
  }

  // ---- compare two requests ----------------------------------------------------------------

  function pairsTable(items, key) {
    const table = el("table", { class: "headers diff-table", "data-testid": `diff-${key}` });
    if (!items.length) table.append(el("tr", {}, el("td", { text: "no differences" })));
    for (const item of items) {
      table.append(el("tr", { "data-change": item.change },
        el("td", { text: item.name || item.path }),
        el("td", { class: item.a === null ? "" : "removed", text: item.a === null ? "—" : JSON.stringify(item.a) }),
        el("td", { class: item.b === null ? "" : "added", text: item.b === null ? "—" : JSON.stringify(item.b) })));
    }
    return table;
  }

  function bodyDiff(diff, key) {
    const box = el("div", { class: "body-view", "data-testid": `diff-${key}` });
    if (diff.kind === "same") box.append(el("p", { class: "hint", text: "identical" }));
    else if (diff.kind === "same-json") box.append(el("p", { class: "hint", text: "the same JSON (only formatting or key order differ)" }));
    else if (diff.kind === "json") box.append(pairsTable(diff.changes, `${key}-json`));
    else if (diff.kind === "text") {
      const pre = el("pre", { class: "code" });
      for (const line of diff.lines) {
        const cls = line.startsWith("+") ? "diff-line added" : (line.startsWith("-") ? "diff-line removed" : "diff-line");
        pre.append(el("span", { class: cls, text: line }));
      }
      box.append(pre);
    } else box.append(el("p", { class: "hint", text: `binary: ${diff.a.size} B (${diff.a.sha256.slice(0, 12)}…) vs ${diff.b.size} B (${diff.b.sha256.slice(0, 12)}…)` }));
    if (diff.cut) box.append(el("p", { class: "hint", text: "(more differences not shown)" }));
    return box;
  }

  async function compare(a, b) {
    const response = await fetch(`api/diff?a=${a}&b=${b}`, { cache: "no-store" });
    const data = await response.json();
    if (!response.ok) { notice(data.error || `HTTP ${response.status}`, true); return; }
    byId("detail-empty").hidden = true;
    byId("detail-body").hidden = true;
    byId("diff-view").hidden = false;
    byId("diff-title").textContent = `#${data.a} → #${data.b}`;
    const line = Object.entries(data.line).map(([key, v]) => ({ name: key, change: "changed", a: v.a, b: v.b }));
    const section = (title, node) => el("div", { class: "card" }, el("h3", { text: title }), node);
    byId("diff-body").replaceChildren(
      section("Request line", pairsTable(line, "line")),
      section("Query parameters", pairsTable(data.query, "query")),
      section("Request headers", pairsTable(data.request_headers, "request-headers")),
      section("Request body", bodyDiff(data.request_body, "request-body")),
      section("Response headers", pairsTable(data.response_headers, "response-headers")),
      section("Response body", bodyDiff(data.response_body, "response-body")));
  }

  byId("har-button").addEventListener("click", () => {
    const ids = [...picked].sort((x, y) => x - y).join(",");
    const link = el("a", { href: `api/har?ids=${ids}`, download: "requests.har" });
    document.body.append(link);
    link.click();
    link.remove();
  });

  byId("curl-button").addEventListener("click", async () => {
    if (!current) return;
    const response = await fetch(`api/requests/${current.id}/curl`, { cache: "no-store" });
    const text = (await response.text()).trim();
    try {
      await navigator.clipboard.writeText(text);
      notice("Copied the curl command to the clipboard.", false);
    } catch (err) {
      notice(`Cannot use the clipboard here (${err.message}); the command is: ${text}`, true);
    }
    byId("curl-button").dataset.command = text;
  });

  byId("compare-button").addEventListener("click", () => {
    const [a, b] = [...picked].sort((x, y) => x - y);
    compare(a, b);
  });
  byId("diff-close").addEventListener("click", () => { byId("diff-view").hidden = true; refreshDetail(); if (selectedId === null) byId("detail-empty").hidden = false; });

  // ---- mock and catch rules ------------------------------------------------------------------

  async function loadRules() {
    const response = await fetch("api/mocks", { cache: "no-store" });
    const data = await response.json();
    const select = byId("rule-proxy");
    const chosen = select.value;
    select.replaceChildren(...data.proxies.map((name) => el("option", { value: name, text: name })));
    if (chosen) select.value = chosen;
    byId("rules-list").replaceChildren(...data.rules.map((rule) => {
      const toggle = el("input", {
        type: "checkbox", "data-testid": "rule-toggle", title: "on/off",
        onchange: async (event) => {
          await fetch(`api/mocks/${rule.id}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ enabled: event.target.checked }) });
          await loadRules();
        },
      });
      toggle.checked = rule.enabled;
      const what = rule.action === "catch" ? "catch → 200" : `mock → ${rule.status}`;
      return el("li", { "data-testid": "rule-row", "data-enabled": String(rule.enabled) }, toggle,
        el("span", { text: `#${rule.id} ${rule.proxy} ${rule.method} ${rule.path} ${what} (${rule.hits} hits)` }),
        el("button", { type: "button", "data-testid": "rule-delete", text: "Delete", onclick: async () => {
          await fetch(`api/mocks/${rule.id}/delete`, { method: "POST" });
          await loadRules();
        } }));
    }));
  }

  byId("rules-button").addEventListener("click", async () => {
    const panel = byId("rules-panel");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) await loadRules();
  });
  byId("rule-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const rule = {
      proxy: byId("rule-proxy").value,
      method: byId("rule-method").value.trim() || "*",
      path: byId("rule-path").value.trim(),
      action: byId("rule-action").value,
      status: Number(byId("rule-status").value),
      body: byId("rule-body").value,
    };
    const response = await fetch("api/mocks", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) });
    const data = await response.json();
    byId("rule-error").hidden = response.ok;
    if (!response.ok) byId("rule-error").textContent = data.error;
    await loadRules();
  });

  // ---- start: filters and the selected request come from the address -----------------------

  const initial = new URLSearchParams(location.search);
  for (const key of FILTER_KEYS) byId(`filter-${key}`).value = initial.get(key) || "";
  let filterTimer = null;
  byId("filters").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(async () => {
      syncAddress();
      try {
        await reloadList();
        connect();
      } catch (err) {
        byId("filter-error").textContent = err.message;
        byId("filter-error").hidden = false;
      }
    }, 250);
  });
  byId("filters").addEventListener("submit", (event) => event.preventDefault());
  const linked = /^#\/requests\/(\d+)$/.exec(location.hash);
  if (linked) select(Number(linked[1]));

  updateCount();
  connect();
  refreshTunnels();
})();
