// Compare side by side: "Run all" starts every column at once, each over its own run socket
// (runs/playground/consumers.py: a socket follows one run), streaming into the column's log.
// Without JavaScript the form posts and the server runs the columns (not streamed).
(() => {
  "use strict";

  const form = document.getElementById("compare-form");
  if (!form) return;
  const columnsBox = document.getElementById("columns");
  const runAll = document.getElementById("run-all");
  const stopAll = document.getElementById("stop-all");
  const addColumn = document.getElementById("add-column");
  const share = document.getElementById("share-link");
  const MAX = Number(form.dataset.maxColumns);
  const MIN = 2;
  const viewer = runAll.disabled;
  const live = new Map(); // column node → its socket
  stopAll.hidden = false;

  const fmtMs = (ms) => (ms == null ? "–" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);
  const columns = () => [...columnsBox.querySelectorAll("[data-column]")];
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  };

  // --- The comparison's state, in the address -------------------------------------------------
  function query() {
    const params = new URLSearchParams();
    params.append("prompt", form.prompt.value);
    for (const column of columns()) {
      for (const name of ["agent", "max_tokens", "max_turns", "temperature"]) {
        params.append(name, column.querySelector(`[name=${name}]`).value);
      }
    }
    return params;
  }

  function remember() {
    const url = `${location.pathname}?${query()}`;
    history.replaceState(null, "", url);
    share.href = url;
  }

  function renumber() {
    const all = columns();
    all.forEach((column, index) => {
      const number = index + 1;
      column.querySelector("[data-number]").textContent = String(number);
      const remove = column.querySelector("[data-remove-column]");
      remove.value = `remove-${number}`;
      remove.setAttribute("aria-label", `Remove column ${number}`);
      remove.disabled = all.length <= MIN;
      column.querySelector("[data-output]").setAttribute("aria-label", `Column ${number} output`);
    });
    addColumn.disabled = all.length >= MAX;
    remember();
  }

  function clearColumn(column) {
    const stats = column.querySelector("[data-stats]");
    for (const name of ["tokens", "cost", "ttft", "duration"]) stats.querySelector(`[data-${name}]`).textContent = "–";
    const status = stats.querySelector("[data-status]");
    status.textContent = "Ready";
    status.className = "badge";
    stats.querySelector("[data-run-link]").hidden = true;
    column.querySelector("[data-output]").replaceChildren();
    const problems = column.querySelector(".column-problems");
    problems.replaceChildren();
    problems.hidden = true;
    column.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
  }

  // --- Checking, as the playground's form does (the server checks again) ----------------------
  function check(column) {
    const lines = [];
    const agent = column.querySelector("[name=agent]");
    if (!agent.value.trim()) { lines.push("Agent: choose an agent or type its slug."); agent.setAttribute("aria-invalid", "true"); }
    for (const input of column.querySelectorAll("input[type=number]")) {
      if (input.value === "" && !input.validity.badInput) continue;
      const value = Number(input.value);
      const whole = input.step !== "any";
      if (input.validity.badInput || Number.isNaN(value) || (whole && !Number.isInteger(value)) || value < Number(input.min) || value > Number(input.max)) {
        input.setAttribute("aria-invalid", "true");
        lines.push(`${input.parentElement.firstChild.textContent.trim()}: ${whole ? "a whole number" : "a number"} from ${Number(input.min).toLocaleString()} to ${Number(input.max).toLocaleString()}.`);
      }
    }
    showProblems(column, lines);
    return !lines.length;
  }

  function showProblems(column, lines) {
    const box = column.querySelector(".column-problems");
    box.replaceChildren(...lines.map((line) => el("p", null, line)));
    box.hidden = !lines.length;
  }

  // --- One column's run -----------------------------------------------------------------------
  function start(column) {
    const data = { input_mode: ["prompt"], prompt: [form.prompt.value], stream: ["on"] };
    for (const name of ["agent", "max_tokens", "max_turns", "temperature"]) data[name] = [column.querySelector(`[name=${name}]`).value];
    const output = column.querySelector("[data-output]");
    const stats = column.querySelector("[data-stats]");
    const status = stats.querySelector("[data-status]");
    const setStatus = (label, kind) => { status.textContent = label; status.className = `badge ${kind || ""}`; };
    let answer = null;
    let startedAt = performance.now();
    let firstToken = null;
    let lastSequence = 0;
    const timer = setInterval(() => { stats.querySelector("[data-duration]").textContent = fmtMs(performance.now() - startedAt); }, 100);
    setStatus("Starting…", "running");

    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${form.dataset.startSocket}`);
    live.set(column, ws);
    const done = () => {
      clearInterval(timer);
      live.delete(column);
      ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      if (!live.size) { runAll.disabled = viewer; stopAll.disabled = true; }
    };
    ws.onopen = () => ws.send(JSON.stringify({ action: "start", form: data }));
    ws.onclose = () => { setStatus("Disconnected", "failed"); showProblems(column, ["Lost the connection to rtdash; the run goes on, see its run page."]); done(); };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      switch (message.type) {
        case "run": {
          const link = stats.querySelector("[data-run-link]");
          link.href = message.runUrl;
          link.textContent = `Run #${message.run}`;
          link.hidden = false;
          if (!message.finished) setStatus("Running", "running");
          startedAt = performance.now() - (message.elapsedMs || 0);
          break;
        }
        case "frames":
          for (const [sequence, kind, raw] of message.frames) {
            if (sequence <= lastSequence) continue;
            lastSequence = sequence;
            let payload = null;
            try { payload = JSON.parse(raw); } catch (error) { continue; }
            if (!payload || typeof payload.delta !== "string" || kind !== "assistant_message_delta") continue;
            if (firstToken == null) {
              firstToken = performance.now() - startedAt;
              stats.querySelector("[data-ttft]").textContent = fmtMs(firstToken);
            }
            if (!answer) { answer = el("div", "answer markdown"); answer.dataset.source = ""; output.append(answer); }
            answer.dataset.source += payload.delta;
            answer.replaceChildren(window.rtdashMarkdown.render(answer.dataset.source));
          }
          break;
        case "finished": {
          const usage = message.usage || {};
          setStatus(message.statusLabel, message.status);
          stats.querySelector("[data-tokens]").textContent = `${usage.input ?? "—"} in / ${usage.output ?? "—"} out`;
          stats.querySelector("[data-cost]").textContent = message.cost || "—";
          const ttft = message.firstTokenMs ?? message.firstByteMs;
          if (ttft != null) stats.querySelector("[data-ttft]").textContent = fmtMs(ttft);
          stats.querySelector("[data-duration]").textContent = fmtMs(message.durationMs);
          if (message.status !== "completed") {
            const head = message.httpStatus >= 400 ? `RunTools answered ${message.httpStatus}` : `The run ended ${message.statusLabel.toLowerCase()}`;
            const detail = message.errorMessage || message.errorCode;
            showProblems(column, [detail ? `${head}: ${detail}` : `${head}.`]);
          }
          if (!answer && message.status === "completed") output.append(el("p", "muted", "No answer text."));
          done();
          break;
        }
        case "invalid":
          showProblems(column, Object.values(message.errors).flat());
          for (const name of Object.keys(message.errors)) column.querySelector(`[name=${name}]`)?.setAttribute("aria-invalid", "true");
          setStatus("Not started", "");
          done();
          break;
        case "error":
          showProblems(column, [message.message]);
          setStatus("Not started", "");
          done();
          break;
      }
    };
  }

  // --- The form ----------------------------------------------------------------------------------
  form.addEventListener("submit", (event) => {
    const action = event.submitter?.value || "run";
    event.preventDefault();
    if (action === "add") {
      if (columns().length >= MAX) return;
      const copy = columns().at(-1).cloneNode(true);
      clearColumn(copy);
      copy.querySelectorAll("input").forEach((input) => { input.value = ""; });
      columnsBox.append(copy);
      renumber();
      copy.querySelector("[name=agent]").focus();
      return;
    }
    if (action.startsWith("remove-")) {
      const column = event.submitter.closest("[data-column]");
      if (columns().length <= MIN || live.has(column)) return;
      column.remove();
      renumber();
      return;
    }
    if (live.size || viewer) return;
    const prompt = form.prompt;
    const problems = document.getElementById("prompt-problem") || el("p", "problem");
    problems.id = "prompt-problem";
    if (!prompt.value.trim()) {
      prompt.setAttribute("aria-invalid", "true");
      problems.textContent = "Prompt: write a prompt.";
      problems.setAttribute("role", "alert");
      prompt.after(problems);
      return;
    }
    prompt.removeAttribute("aria-invalid");
    problems.remove();
    const all = columns();
    all.forEach(clearColumn);
    if (!all.map(check).every(Boolean)) return;
    remember();
    runAll.disabled = true;
    stopAll.disabled = false;
    all.forEach(start);
  });

  stopAll.addEventListener("click", () => {
    for (const ws of live.values()) if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ action: "stop" }));
    stopAll.disabled = true;
  });

  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !runAll.disabled) {
      event.preventDefault();
      form.requestSubmit(runAll);
    }
  });
  form.addEventListener("input", remember);
  renumber();
})();
