// busylamp lamp field: a virtualised grid (only the rows in view exist in
// the DOM), fed by the /events stream; every DOM update happens in one
// requestAnimationFrame callback, whatever number of events came before it.
"use strict";
(function () {
  const STATES = ["NOT_INUSE", "INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD", "UNAVAILABLE", "UNKNOWN", "INVALID"];
  const GLYPH = { NOT_INUSE: "○", INUSE: "●", BUSY: "■", RINGING: "♪", RINGINUSE: "♪●", ONHOLD: "‖", UNAVAILABLE: "×", UNKNOWN: "?", INVALID: "!" };
  const LABEL = { NOT_INUSE: "idle", INUSE: "in use", BUSY: "busy", RINGING: "ringing", RINGINUSE: "ringing, in use", ONHOLD: "on hold", UNAVAILABLE: "unavailable", UNKNOWN: "unknown", INVALID: "invalid" };
  const MAX_MAILBOXES_SHOWN = 500;
  const OVERSCAN_ROWS = 3;

  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), spacer = $("spacer"), filterBox = $("filter");
  const css = getComputedStyle(document.documentElement);
  const CELL_W = parseFloat(css.getPropertyValue("--cell-w")) || 168;
  const CELL_H = parseFloat(css.getPropertyValue("--cell-h")) || 46;
  const GAP = parseFloat(css.getPropertyValue("--gap")) || 4;

  // The model.
  const devices = new Map();   // name -> {n, s}
  let list = [];               // every device, sorted by name
  let view = [];               // list filtered
  const mailboxes = new Map(); // name -> [new, old]
  let buddies = [], members = [];
  let filter = "";
  let selected = "";

  // What the next frame must redo.
  let dirty = { sort: false, view: false, cells: false, legend: false, mwi: false, buddies: false, members: false };
  let scheduled = false;
  let snapshotSeen = false;
  function schedule(what) {
    for (const k of what) dirty[k] = true;
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(frame);
    }
  }

  function setDevice(name, state) {
    const d = devices.get(name);
    if (d) {
      if (d.s === state) return;
      d.s = state;
    } else {
      const nd = { n: name, s: state };
      devices.set(name, nd);
      list.push(nd);
      dirty.sort = true;
    }
    dirty.cells = dirty.legend = true;
    if (name === selected) fetchDetail(name);
  }

  function onSnapshot(m) {
    devices.clear();
    list = [];
    for (const [n, s] of m.devices) {
      const d = { n, s };
      devices.set(n, d);
      list.push(d);
    }
    dirty.sort = true;
    mailboxes.clear();
    for (const [n, nw, old] of m.mailboxes) mailboxes.set(n, [nw, old]);
    buddies = m.buddies; members = m.members;
    snapshotSeen = true;
    schedule(["sort", "view", "cells", "legend", "mwi", "buddies", "members"]);
  }

  function onChange(m) {
    if (m.devices) for (const [n, s] of m.devices) setDevice(n, s);
    if (m.mailboxes) {
      for (const [n, nw, old] of m.mailboxes) mailboxes.set(n, [nw, old]);
      dirty.mwi = true;
    }
    if (m.buddies) { buddies = m.buddies; dirty.buddies = true; }
    if (m.members) { members = m.members; dirty.members = true; }
    schedule([]);
  }

  // The frame: everything the events asked for, once.
  function frame() {
    scheduled = false;
    if (dirty.sort) {
      list.sort((a, b) => (a.n < b.n ? -1 : a.n > b.n ? 1 : 0));
      dirty.sort = false;
      dirty.view = true;
    }
    if (dirty.view) {
      const f = filter;
      view = f === "" ? list : list.filter((d) => d.n.toLowerCase().includes(f));
      spacer.style.height = rows() * (CELL_H + GAP) + "px";
      grid.dataset.total = String(list.length);
      grid.dataset.shown = String(view.length);
      $("count").textContent = view.length === list.length ? list.length + " devices" : view.length + " of " + list.length + " devices";
      dirty.view = false;
      dirty.cells = true;
      dirty.mwi = true;
    }
    if (dirty.cells) { renderCells(); dirty.cells = false; }
    if (dirty.legend) { renderLegend(); dirty.legend = false; }
    if (dirty.mwi) { renderMailboxes(); dirty.mwi = false; }
    if (dirty.buddies) { renderBuddies(); dirty.buddies = false; }
    if (dirty.members) { renderMembers(); dirty.members = false; }
    if (snapshotSeen && document.body.dataset.ready !== "1") document.body.dataset.ready = "1";
  }

  function cols() { return Math.max(1, Math.floor((grid.clientWidth - GAP) / (CELL_W + GAP))); }
  function rows() { return Math.ceil(view.length / cols()); }

  // The cells in view, drawn from a pool of elements that is reused.
  const pool = [];
  function cell(i) {
    let el = pool[i];
    if (!el) {
      el = document.createElement("div");
      el.className = "lamp";
      el.tabIndex = 0;
      el.setAttribute("role", "button");
      el.innerHTML = '<span class="glyph" aria-hidden="true"></span><span class="name"></span><span class="state"></span>';
      grid.appendChild(el);
      pool[i] = el;
    }
    return el;
  }
  function renderCells() {
    const c = cols(), rh = CELL_H + GAP;
    const first = Math.max(0, Math.floor(grid.scrollTop / rh) - OVERSCAN_ROWS);
    const last = Math.min(rows(), Math.ceil((grid.scrollTop + grid.clientHeight) / rh) + OVERSCAN_ROWS);
    const from = first * c, to = Math.min(view.length, last * c);
    let k = 0;
    for (let i = from; i < to; i++, k++) {
      const d = view[i], el = cell(k);
      if (el.hidden) el.hidden = false;
      const x = GAP + (i % c) * (CELL_W + GAP), y = GAP + Math.floor(i / c) * rh;
      const tr = "translate(" + x + "px," + y + "px)";
      if (el.style.transform !== tr) el.style.transform = tr;
      if (el.dataset.device !== d.n) {
        el.dataset.device = d.n;
        el.children[1].textContent = d.n;
        el.title = d.n;
      }
      if (el.dataset.state !== d.s) {
        el.dataset.state = d.s;
        el.children[0].textContent = GLYPH[d.s] || "?";
        el.children[2].textContent = d.s;
        el.setAttribute("aria-label", d.n + ": " + (LABEL[d.s] || d.s));
      }
      el.setAttribute("aria-pressed", d.n === selected ? "true" : "false");
    }
    for (; k < pool.length; k++) {
      if (!pool[k].hidden) { pool[k].hidden = true; pool[k].dataset.device = ""; }
    }
  }

  function renderLegend() {
    const n = {};
    for (const s of STATES) n[s] = 0;
    for (const d of list) n[d.s] = (n[d.s] || 0) + 1;
    const ul = $("legend");
    ul.textContent = "";
    for (const s of STATES) {
      const li = document.createElement("li");
      li.dataset.state = s;
      li.textContent = (GLYPH[s] || "") + " " + s + " " + n[s];
      li.title = LABEL[s];
      ul.appendChild(li);
    }
  }

  function renderMailboxes() {
    const ul = $("mailboxes");
    const names = [...mailboxes.keys()].filter((n) => filter === "" || n.toLowerCase().includes(filter)).sort();
    ul.textContent = "";
    $("mwi-count").textContent = "(" + mailboxes.size + ")";
    for (const n of names.slice(0, MAX_MAILBOXES_SHOWN)) {
      const [nw, old] = mailboxes.get(n);
      const li = document.createElement("li");
      li.className = "mwi";
      li.dataset.mailbox = n;
      li.dataset.waiting = nw > 0 ? "1" : "0";
      li.textContent = n + " " + nw + " new / " + old + " old";
      ul.appendChild(li);
    }
    if (names.length > MAX_MAILBOXES_SHOWN) {
      const li = document.createElement("li");
      li.className = "more";
      li.textContent = "… and " + (names.length - MAX_MAILBOXES_SHOWN) + " more (filter to see them)";
      ul.appendChild(li);
    }
  }

  function fillTable(id, rowsOf) {
    const tb = $(id).tBodies[0];
    tb.textContent = "";
    for (const r of rowsOf) {
      const tr = document.createElement("tr");
      for (const v of r.cells) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      if (r.cls) tr.cells[1].className = r.cls;
      if (r.key) tr.dataset.key = r.key;
      tb.appendChild(tr);
    }
  }
  function renderBuddies() {
    fillTable("buddies", buddies.map((b) => ({
      key: b.jid, cls: b.online ? "online" : "offline",
      cells: [b.jid, b.online ? "online" : "offline", b.subscription || "", (b.resources || []).join(", ")],
    })));
  }
  function renderMembers() {
    fillTable("members", members.map((m) => ({
      key: m.name, cls: m.state === "alive" ? "online" : "offline",
      cells: [m.name, m.state, m.addr || "", m.jid || ""],
    })));
  }

  // The per-server detail of one device, asked of /api/device.
  // One request at a time: a device that flaps while shown is asked for
  // again once the answer in flight is in, not once per change.
  let detailSeq = 0, inFlight = false, again = "";
  function fetchDetail(name) {
    if (inFlight) { again = name; return; }
    inFlight = true;
    const seq = ++detailSeq;
    fetch("api/device?name=" + encodeURIComponent(name), { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(r.status + " " + r.statusText))))
      .then((d) => { if (seq === detailSeq && name === selected) showDetail(d); })
      .catch((e) => { if (seq === detailSeq && name === selected) showDetailError(name, e); })
      .finally(() => {
        inFlight = false;
        if (again) { const n = again; again = ""; if (n === selected) fetchDetail(n); }
      });
  }
  function showDetail(d) {
    const sec = $("detail");
    sec.textContent = "";
    const h = document.createElement("h2");
    h.textContent = d.device;
    const p = document.createElement("p");
    p.innerHTML = '<span class="sw lamp-sw"></span>';
    p.firstChild.dataset.state = d.state;
    p.firstChild.textContent = " " + (GLYPH[d.state] || "") + " " + d.state + " ";
    p.append(" cluster-wide (" + (LABEL[d.state] || d.state) + ")");
    const t = document.createElement("table");
    t.id = "servers";
    t.innerHTML = "<thead><tr><th>EID</th><th>JID</th><th>State</th><th>Updated</th></tr></thead><tbody></tbody>";
    for (const s of d.servers) {
      const tr = document.createElement("tr");
      for (const v of [s.eid, s.jid || "", s.state + (s.cachable ? "" : " (not cachable)"), s.updated ? new Date(s.updated).toLocaleString() : ""]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      tr.cells[2].dataset.state = s.state;
      t.tBodies[0].appendChild(tr);
    }
    sec.append(h, p, t);
  }
  function showDetailError(name, e) {
    const sec = $("detail");
    sec.textContent = "";
    const h = document.createElement("h2");
    h.textContent = name;
    const p = document.createElement("p");
    p.textContent = "no detail: " + e.message;
    sec.append(h, p);
  }
  function select(name) {
    if (!name) return;
    selected = name;
    fetchDetail(name);
    schedule(["cells"]);
  }

  let hoverTimer = 0;
  grid.addEventListener("click", (e) => { const el = e.target.closest(".lamp"); if (el) select(el.dataset.device); });
  grid.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const el = e.target.closest(".lamp");
    if (el) { e.preventDefault(); select(el.dataset.device); }
  });
  grid.addEventListener("mouseover", (e) => {
    const el = e.target.closest(".lamp");
    clearTimeout(hoverTimer);
    if (el) hoverTimer = setTimeout(() => select(el.dataset.device), 250);
  });
  grid.addEventListener("scroll", () => schedule(["cells"]), { passive: true });
  window.addEventListener("resize", () => schedule(["view"]));
  filterBox.addEventListener("input", () => {
    filter = filterBox.value.trim().toLowerCase();
    grid.scrollTop = 0;
    schedule(["view"]);
  });

  // The stream. EventSource reconnects by itself; each connection starts
  // with a snapshot, which replaces the model.
  function connect() {
    const conn = $("conn");
    const es = new EventSource("events");
    es.addEventListener("open", () => { conn.dataset.state = "open"; conn.textContent = "live"; });
    es.addEventListener("error", () => {
      conn.dataset.state = es.readyState === EventSource.CLOSED ? "closed" : "connecting";
      conn.textContent = es.readyState === EventSource.CLOSED ? "disconnected (reload)" : "reconnecting…";
    });
    es.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
    es.addEventListener("change", (e) => onChange(JSON.parse(e.data)));
  }
  schedule(["legend"]);
  connect();
})();
