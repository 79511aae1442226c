const CSS = `
.cnb-gal{font:13px system-ui,sans-serif;outline:none;position:relative}
.cnb-bar{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:4px 0}
.cnb-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:6px}
.cnb-tile{border:2px solid transparent;border-radius:4px;background:#2222;cursor:pointer;position:relative}
.cnb-tile.cnb-cur{border-color:#2b7de9}
.cnb-tile.cnb-picked{box-shadow:0 0 0 3px #2a2 inset}
.cnb-tile img{width:100%;aspect-ratio:1;object-fit:contain;display:block;background:#111}
.cnb-cap{font-size:11px;line-height:14px;padding:2px 4px;overflow:hidden;display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow-wrap:anywhere;height:28px}
.cnb-badge{position:absolute;top:3px;right:4px;background:#000a;color:#fd0;padding:0 4px;border-radius:3px;font-size:12px}
.cnb-pk{position:absolute;top:3px;left:4px;background:#000a;color:#fff;border:0;border-radius:3px;font-size:11px;cursor:pointer}
.cnb-tile.cnb-picked .cnb-pk{background:#2a2}
.cnb-over{position:absolute;inset:0;min-height:420px;background:#000e;color:#eee;display:flex;gap:12px;padding:10px;z-index:10}
.cnb-over img{max-width:70%;max-height:600px;object-fit:contain}
.cnb-family{display:flex;gap:4px;flex-wrap:wrap}
.cnb-status{color:#fd0;font-size:14px}
.cnb-group{grid-column:1/-1;font-weight:bold;border-bottom:1px solid #8886;padding:6px 2px 2px}
.cnb-tile.cnb-sel{outline:3px dashed #e90;outline-offset:-3px}
.cnb-cmp{position:absolute;inset:0;min-height:420px;background:#fff;color:#111;overflow:auto;padding:10px;z-index:11}
.cnb-cmp td,.cnb-cmp th{border:1px solid #ccc;padding:2px 6px;font-size:12px}
.cnb-over pre{white-space:pre-wrap;font-size:11px;overflow:auto;max-height:520px;flex:1}
`;

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "cnb-gal";
  root.tabIndex = 0;
  root.dataset.lmSuppressShortcuts = "true";  // JupyterLab: our keys, not its shortcuts
  const style = document.createElement("style");
  style.textContent = CSS;
  root.appendChild(style);
  const bar = document.createElement("div");
  bar.className = "cnb-bar";
  const grid = document.createElement("div");
  grid.className = "cnb-grid";
  root.append(bar, grid);
  el.appendChild(root);

  let tileEls = [], sel = new Set(model.get("compare_ids")), cmp = null;
  let overState = null, overlay_draw = null, page = 0, cur = 0, tiles = [], urls = [], overlay = null, overUrl = null, want = 0;
  const pageSize = () => model.get("page_size");
  const pages = () => Math.max(1, Math.ceil(model.get("count") / pageSize()));

  const btn = (label, cls, fn) => { const b = document.createElement("button"); b.textContent = label; b.className = cls; b.onclick = fn; return b; };
  const info = document.createElement("span");
  const sortSel = document.createElement("select");
  sortSel.className = "cnb-sort";
  const starsSel = document.createElement("select");
  starsSel.className = "cnb-minstars";
  for (const s of [0, 1, 2, 3, 4, 5]) { const o = document.createElement("option"); o.value = s; o.textContent = s ? `≥${s}★` : "any ★"; starsSel.appendChild(o); }
  const groupSel = document.createElement("select");
  groupSel.className = "cnb-groupby";
  groupSel.title = "group by";
  const cmpBtn = btn("compare (0)", "cnb-compare", () => compare());
  cmpBtn.title = "shift-click or s selects tiles to compare";
  const pickedBox = document.createElement("label");
  pickedBox.innerHTML = '<input type="checkbox" class="cnb-onlypicked"> picked only';
  bar.append(btn("«", "cnb-first", () => go(0)), btn("◀", "cnb-prev", () => go(page - 1)), info,
    btn("▶", "cnb-next", () => go(page + 1)), btn("»", "cnb-last", () => go(pages() - 1)), sortSel, groupSel, starsSel, pickedBox, cmpBtn);
  const fillSorts = () => {
    sortSel.innerHTML = "";
    for (const s of model.get("sort_options")) { const o = document.createElement("option"); o.value = o.textContent = s; sortSel.appendChild(o); }
    sortSel.value = model.get("sort");
  };
  fillSorts();
  const fillGroups = () => {
    groupSel.innerHTML = "";
    for (const g of model.get("group_options")) { const o = document.createElement("option"); o.value = g; o.textContent = g ? `group: ${g}` : "no groups"; groupSel.appendChild(o); }
    groupSel.value = model.get("group_by");
  };
  fillGroups();
  groupSel.onchange = () => { model.set("group_by", groupSel.value); model.save_changes(); };
  function setSel() {
    model.set("compare_ids", [...sel]); model.save_changes();
    cmpBtn.textContent = `compare (${sel.size})`;
    tiles.forEach((t, i) => tileEls[i].classList.toggle("cnb-sel", sel.has(t.id)));
  }
  function toggleSel(i) {
    const t = tiles[i]; if (!t) return;
    if (sel.has(t.id)) sel.delete(t.id); else sel.add(t.id);
    setSel();
  }
  function compare() {
    if (sel.size < 2) { info.textContent = "select 2 or more tiles to compare (shift-click or s)"; return; }
    model.send({ type: "compare", ids: [...sel] });
  }
  function closeCmp() { if (cmp) cmp.remove(); cmp = null; }
  function showCmp(msg) {
    closeCmp();
    cmp = document.createElement("div");
    cmp.className = "cnb-cmp";
    const body = document.createElement("div");
    body.innerHTML = msg.html;  // built by comfynb from the store, values escaped
    cmp.append(btn("close (Esc)", "cnb-cmp-close", closeCmp), btn("clear selection", "cnb-cmp-clear", () => { sel.clear(); setSel(); closeCmp(); }), body);
    root.appendChild(cmp);
    root.focus();
  }
  sortSel.onchange = () => { model.set("sort", sortSel.value); model.save_changes(); };
  starsSel.value = model.get("min_stars");
  starsSel.onchange = () => { model.set("min_stars", Number(starsSel.value)); model.save_changes(); };
  const cb = pickedBox.querySelector("input");
  cb.checked = model.get("only_picked");
  cb.onchange = () => { model.set("only_picked", cb.checked); model.save_changes(); };

  function go(p) { page = Math.min(Math.max(0, p), pages() - 1); request(); }
  function request() {
    want += 1;
    model.send({ type: "page", start: page * pageSize(), count: pageSize(), req: want, group_by: model.get("group_by") });
  }
  function setInfo() {
    info.textContent = `page ${page + 1}/${pages()} · ${model.get("count")} images`;
  }
  function caption(t) { return `${t.stars ? "★".repeat(t.stars) : ""}`; }
  function drawTile(i) {
    const t = tiles[i], d = tileEls[i];
    d.classList.toggle("cnb-picked", !!t.picked);
    d.classList.toggle("cnb-cur", i === cur);
    d.classList.toggle("cnb-sel", sel.has(t.id));
    d.querySelector(".cnb-badge").textContent = caption(t);
    d.querySelector(".cnb-pk").textContent = t.picked ? "✓ picked" : "pick";
  }
  function showPage(msg, buffers) {
    if (msg.req !== want || msg.group_by !== model.get("group_by")) return;  // an older answer
    for (const u of urls) URL.revokeObjectURL(u);
    urls = [];
    tiles = msg.tiles;
    grid.innerHTML = "";
    tileEls = [];
    let last;
    tiles.forEach((t, i) => {
      if (t.group !== undefined && t.group !== last) {
        last = t.group;
        const h = document.createElement("div");
        h.className = "cnb-group";
        h.textContent = `${t.group} (${msg.groups[t.group]})`;
        grid.appendChild(h);
      }
      const d = document.createElement("div");
      d.className = "cnb-tile";
      d.dataset.id = t.id;
      const img = document.createElement("img");
      const u = URL.createObjectURL(new Blob([buffers[i]], { type: "image/webp" }));
      urls.push(u);
      img.src = u;
      img.alt = t.caption;
      const cap = document.createElement("div");
      cap.className = "cnb-cap";
      cap.textContent = t.caption;
      cap.title = t.caption;
      const badge = document.createElement("span");
      badge.className = "cnb-badge";
      const pk = btn("pick", "cnb-pk", (e) => { e.stopPropagation(); cur = i; pick(); });
      d.append(img, cap, badge, pk);
      d.onclick = (e) => { if (e.shiftKey) { cur = i; toggleSel(i); drawTile(i); } else { cur = i; open(); } };
      grid.appendChild(d);
      tileEls.push(d);
      drawTile(i);
    });
    if (cur >= tiles.length) cur = Math.max(0, tiles.length - 1);
    if (tiles.length) drawTile(cur);
    setInfo();
  }
  function target() { return overState || tiles[cur]; }
  function pick() {
    const t = target(); if (!t) return;
    model.send({ type: "pick", id: t.id, picked: !t.picked });
  }
  function star(n) {
    const t = target(); if (!t) return;
    model.send({ type: "star", id: t.id, stars: t.stars === n ? null : n });
  }
  function open() {
    const t = tiles[cur]; if (!t) return;
    model.send({ type: "full", id: t.id });
    root.focus();
  }
  function close() {
    if (overlay) overlay.remove();
    if (overUrl) URL.revokeObjectURL(overUrl);
    overlay = null; overUrl = null; overState = null;
  }
  function showFull(msg, buffers) {
    close();
    overlay = document.createElement("div");
    overlay.className = "cnb-over";
    const img = document.createElement("img");
    overUrl = URL.createObjectURL(new Blob([buffers[0]], { type: msg.mime }));
    img.src = overUrl;
    const pre = document.createElement("pre");
    pre.textContent = msg.text;
    const side = document.createElement("div");
    side.style.cssText = "display:flex;flex-direction:column;gap:6px;flex:1";
    const status = document.createElement("div");
    status.className = "cnb-status";
    overState = { id: msg.id, picked: msg.picked, stars: msg.stars };
    const t = overState;
    const draw = (t) => { status.textContent = `${t && t.picked ? "✓ picked" : "not picked (p)"} · ${t && t.stars ? "★".repeat(t.stars) : "no stars (1-5)"}`; };
    draw(t);
    overlay_draw = draw;
    const family = document.createElement("div");
    family.className = "cnb-family";
    if (msg.parent !== null) family.append(btn(`↑ parent #${msg.parent}`, "cnb-parent", () => model.send({ type: "full", id: msg.parent })));
    for (const c of msg.children) family.append(btn(`↓ child #${c}`, "cnb-child", () => model.send({ type: "full", id: c })));
    family.append(btn("refine", "cnb-refine", () => model.send({ type: "refine", id: msg.id })));
    side.append(btn("close (Esc)", "cnb-close", close), status, family, pre);
    overlay.append(img, side);
    overlay.dataset.id = msg.id;
    root.appendChild(overlay);
  }
  function move(delta) {
    const n = cur + delta;
    if (n < 0) { if (page > 0) { cur = pageSize() - 1; go(page - 1); } return; }
    if (n >= tiles.length) { if (page < pages() - 1) { cur = 0; go(page + 1); } return; }
    const old = cur; cur = n; drawTile(old); drawTile(cur);
    if (overlay) open();
  }
  function cols() {
    const first = tileEls[0]; if (!first) return 1;
    return Math.max(1, Math.round(grid.clientWidth / first.offsetWidth));
  }
  root.addEventListener("keydown", (e) => {
    const k = e.key;
    if (k === "ArrowRight") move(1);
    else if (k === "ArrowLeft") move(-1);
    else if (k === "ArrowDown") move(cols());
    else if (k === "ArrowUp") move(-cols());
    else if (k === "p" || k === "P") pick();
    else if (k >= "1" && k <= "5") star(Number(k));
    else if (k === "0") star(null);
    else if (k === "s" || k === "S") toggleSel(cur);
    else if (k === "c" || k === "C") compare();
    else if (k === "Escape") { if (cmp) closeCmp(); else close(); }
    else if (k === "Enter") open();
    else return;
    e.preventDefault(); e.stopPropagation();  // keep Lab's own shortcuts out of it
  });

  model.on("msg:custom", (msg, buffers) => {
    if (msg.type === "page") showPage(msg, buffers);
    else if (msg.type === "full") showFull(msg, buffers);
    else if (msg.type === "compare") showCmp(msg);
    else if (msg.type === "update") {
      const i = tiles.findIndex((t) => t.id === msg.id);
      if (i >= 0) { tiles[i].picked = msg.picked; tiles[i].stars = msg.stars; drawTile(i); }
      if (overState && overState.id === msg.id) { overState.picked = msg.picked; overState.stars = msg.stars; overlay_draw(overState); }
    } else if (msg.type === "refined") {
      if (overlay) overlay.querySelector(".cnb-status").textContent = `refine: ${msg.jobs} job(s) queued from #${msg.id}`;
    } else if (msg.type === "error") {
      info.textContent = msg.message;
    } else if (msg.type === "changed") {
      if (msg.reset) { page = 0; cur = 0; }
      page = Math.min(page, pages() - 1);
      request();
    }
  });
  model.on("change:count", setInfo);
  model.on("change:sort_options", fillSorts);
  model.on("change:group_options", fillGroups);
  model.on("change:group_by", () => { groupSel.value = model.get("group_by"); });
  model.send({ type: "hello" });
  request();
  return () => {
    model.send({ type: "bye" });  // the output was cleared: the kernel may stop looking
    for (const u of urls) URL.revokeObjectURL(u); close(); closeCmp();
  };
}

export default { render };
