// The playground: start a run over the run socket and draw its frames as they arrive.
// Plain JavaScript, no build step. Without it the form still posts and the page shows the
// result; with it, "Stream" on goes over the socket (runs/consumers.py) and "Stream" off is
// an htmx post that swaps in the result card.
(() => {
  "use strict";

  const root = document.getElementById("playground");
  if (!root) return;
  const form = document.getElementById("run-form");
  const runButton = document.getElementById("run-button");
  const stopButton = document.getElementById("stop-button");
  const output = document.getElementById("output");
  const problem = document.getElementById("run-problem");
  const liveNotice = document.getElementById("live-notice");
  const formProblems = document.getElementById("form-problems");
  const raw = document.getElementById("raw-events");
  const result = document.getElementById("result");
  const bar = document.getElementById("statusbar");
  const field = (name) => bar.querySelector(`[data-${name}]`);

  const KNOWN = new Set([
    "run_started", "assistant_message_delta", "assistant_thinking_delta", "tool_call_started",
    "tool_output_delta", "tool_call_completed", "assistant_message", "run_completed", "error",
  ]);
  const CLOSE_REASONS = {
    4401: "Your session has ended: log in again to follow this run.",
    4403: "This run is not one of your team's runs.",
    4413: "A message to the server was too large.",
    4429: "Too many messages to the server; reload the page to go on.",
  };
  const MAX_RECONNECTS = 10;
  // The server closes with this when its channel layer (Redis) is down: the run goes on and is
  // recorded, so the page keeps coming back, slowly, for as long as that takes.
  const CLOSE_UNAVAILABLE = 4503;
  const UNAVAILABLE_RETRY_MS = 1000;
  const UNAVAILABLE_RETRY_MAX_MS = 5000;

  // --- State of the run on screen ------------------------------------------------------------
  let socket = null;
  let runId = null;
  let lastSequence = 0;
  let running = false;
  let finished = false;
  let reconnects = 0;
  let waits = 0; // reconnects while live streaming is unavailable
  let degraded = false; // this socket said live streaming is unavailable
  let startedAt = null; // performance.now() at the run's start, as the server saw it
  let firstTokenMs = null;
  let stoppedHere = false;
  let pending = null; // the form data of the run being started // this tab's Stop ended the run: say so plainly, not as an error
  let timer = null;
  let answer = null; // the answer segment being written
  let streamed = "";
  let turn = null; // the assistant turn this run draws into: { node, body }
  let thinking = null;
  const tools = new Map();

  const fmtMs = (ms) => (ms == null ? "–" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);

  function setStatus(label, status) {
    const badge = field("status");
    badge.textContent = label;
    badge.className = `badge ${status || ""}`;
  }

  function setRunLink(id, url) {
    const link = field("run-link");
    link.hidden = false;
    link.href = url || `/runs/${id}/`;
    link.textContent = `Run #${id}`;
  }

  function tick() {
    if (startedAt != null) field("elapsed").textContent = fmtMs(performance.now() - startedAt);
  }

  function startTimer(elapsedMs) {
    startedAt = performance.now() - (elapsedMs || 0);
    clearInterval(timer);
    timer = setInterval(tick, 100);
    tick();
  }

  function stopTimer(durationMs) {
    clearInterval(timer);
    timer = null;
    if (durationMs != null) field("elapsed").textContent = fmtMs(durationMs);
  }

  function setTokens(usage) {
    if (!usage) return;
    const input = usage.inputTokens ?? usage.input;
    const out = usage.outputTokens ?? usage.output;
    const total = usage.totalTokens ?? usage.total ?? (input != null && out != null ? input + out : null);
    const parts = [];
    if (input != null) parts.push(`${input} in`);
    if (out != null) parts.push(`${out} out`);
    field("tokens").textContent = parts.length ? `${parts.join(" / ")}${total != null ? ` (${total})` : ""}` : "–";
  }

  // One place for a run's problem: inside its turn once it has one, else above the transcript.
  // A Stop the person asked for is a notice, not an error.
  function showProblem(message, kind = "problem") {
    const inTurn = turn?.node.querySelector(".turn-problem");
    if (turn && message) {
      const node = inTurn || el("p");
      node.className = `${kind} turn-problem`;
      node.setAttribute("role", kind === "problem" ? "alert" : "status");
      node.textContent = message;
      if (!inTurn) turn.body.after(node);
      problem.hidden = true;
      return;
    }
    inTurn?.remove();
    problem.textContent = message;
    problem.hidden = !message;
  }

  // The notice stays up from "unavailable" until a socket follows the run live again (a "run"
  // message on a socket that did not say "unavailable" first) or the run's story is complete.
  function showUnavailable(message) {
    const parts = [message.message || "Live streaming is unavailable."];
    if (message.run != null) {
      const link = el("a", null, `Run #${message.run}`);
      link.href = message.runUrl || `/runs/${message.run}/`;
      parts.push(" See ", link, " on its run page.");
    }
    liveNotice.replaceChildren(...parts);
    liveNotice.hidden = false;
  }

  function hideUnavailable() {
    liveNotice.replaceChildren();
    liveNotice.hidden = true;
    waits = 0;
  }

  function setRunning(on) {
    running = on;
    const viewer = runButton.dataset.forbidden === "1"; // may watch, not start or stop
    runButton.disabled = on || viewer;
    stopButton.disabled = !on || viewer;
  }

  // A new run: the transcript stays (it is the conversation), the run's own state starts over.
  function resetOutput() {
    root.classList.remove("streamed");
    output.querySelector(".placeholder")?.remove();
    turn = null;
    raw.querySelector("ol").replaceChildren();
    raw.querySelector("[data-count]").textContent = "0";
    raw.hidden = true;
    result.replaceChildren();
    answer = null;
    streamed = "";
    thinking = null;
    tools.clear();
    firstTokenMs = null;
    lastSequence = 0;
    finished = false;
    runId = null;
    stoppedHere = false;
    showProblem("");
    formProblems.hidden = true;
    form.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
    field("ttft").textContent = "–";
    field("tokens").textContent = "–";
    field("elapsed").textContent = "–";
  }

  // --- Drawing frames ------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function firstToken() {
    if (firstTokenMs == null && startedAt != null) {
      firstTokenMs = performance.now() - startedAt;
      field("ttft").textContent = fmtMs(firstTokenMs);
    }
  }

  // --- The transcript -----------------------------------------------------------------------
  function button(label, data) {
    const node = el("button", "link-button", label);
    node.type = "button";
    node.setAttribute(data, "");
    return node;
  }

  function userTurn(text) {
    const node = el("article", "turn user-turn");
    node.dataset.role = "user";
    node.dataset.source = text;
    const actions = el("div", "turn-actions");
    actions.append(button("Copy", "data-copy-message"), button("Edit and resend", "data-edit"));
    node.append(el("header", "turn-role", "You"), el("div", "turn-text", text), actions);
    output.querySelector(".placeholder")?.remove();
    output.append(node);
    return node;
  }

  function assistantTurn(agent) {
    const node = el("article", "turn assistant-turn");
    node.dataset.role = "assistant";
    node.dataset.source = "";
    const body = el("div", "turn-body");
    node.append(el("header", "turn-role", agent || "Assistant"), body);
    output.querySelector(".placeholder")?.remove();
    output.append(node);
    turn = { node, body };
    return turn;
  }

  function turnBody() {
    return (turn || assistantTurn(form.agent.value.trim())).body;
  }

  function appendAnswer(text) {
    if (!answer) {
      answer = el("div", "answer markdown");
      answer.dataset.source = "";
      turnBody().append(answer);
    }
    answer.dataset.source += text;
    // Drawn again from its source on every delta: a code fence or a list may only close later.
    answer.replaceChildren(window.rtdashMarkdown.render(answer.dataset.source));
    window.rtdashMarkdown.addCodeCopyButtons(answer);
    streamed += text;
    if (turn) turn.node.dataset.source = streamed;
  }

  function appendThinking(text) {
    if (!thinking) {
      const block = el("details", "thinking");
      block.open = true;
      block.append(el("summary", null, "Thinking"));
      thinking = el("div", "thinking-text");
      block.append(thinking);
      turnBody().append(block);
    }
    thinking.append(text);
  }

  function toolCard(id, tool) {
    let card = tools.get(id);
    if (!card) {
      const node = el("article", "tool-card running");
      const head = el("header");
      head.append(el("strong", null, tool || "tool"), " ", el("span", "badge running", "running"));
      node.append(head, el("h4", null, "Input"), el("pre", "tool-input"), el("h4", null, "Output"), el("pre", "tool-output"));
      card = { node, badge: head.querySelector(".badge"), input: node.querySelector(".tool-input"), output: node.querySelector(".tool-output"), streamed: "" };
      tools.set(id, card);
      turnBody().append(node);
      answer = null; // text after a tool call starts a new segment
    }
    return card;
  }

  function rawEvent(event, data) {
    const item = el("li");
    item.append(el("code", null, event || "message"), el("pre", null, data));
    raw.querySelector("ol").append(item);
    const count = raw.querySelector("[data-count]");
    count.textContent = String(Number(count.textContent) + 1);
    raw.hidden = false;
  }

  function parse(data) {
    try {
      const value = JSON.parse(data);
      return value && typeof value === "object" && !Array.isArray(value) ? value : null;
    } catch (error) {
      return null;
    }
  }

  function draw(event, data) {
    // The output now holds what the result card would repeat (see rtdash.css).
    root.classList.add("streamed");
    const payload = parse(data);
    if (!KNOWN.has(event) || !payload) {
      if (data.trim() !== "[DONE]") rawEvent(event, data);
      return;
    }
    switch (event) {
      case "run_started":
        break;
      case "assistant_message_delta":
        if (typeof payload.delta === "string") { firstToken(); appendAnswer(payload.delta); }
        break;
      case "assistant_thinking_delta":
        if (typeof payload.delta === "string") { firstToken(); appendThinking(payload.delta); }
        break;
      case "tool_call_started": {
        const card = toolCard(payload.toolCallId, payload.tool);
        card.input.textContent = JSON.stringify(payload.input ?? {}, null, 2);
        break;
      }
      case "tool_output_delta": {
        const card = toolCard(payload.toolCallId);
        if (typeof payload.delta === "string") { card.output.append(payload.delta); card.streamed += payload.delta; }
        break;
      }
      case "tool_call_completed": {
        const card = toolCard(payload.toolCallId, payload.tool);
        const failed = payload.isError === true;
        if (typeof payload.output === "string" && payload.output !== card.streamed) {
          card.node.append(el("h4", null, failed ? "Error" : "Result"), el("pre", failed ? "tool-error" : "tool-result", payload.output));
        }
        card.badge.textContent = failed ? "error" : "done";
        card.badge.className = `badge ${failed ? "failed" : "completed"}`;
        card.node.classList.remove("running");
        card.node.classList.toggle("failed", failed);
        break;
      }
      case "assistant_message":
        // The whole answer: drawn only when no deltas carried it.
        if (typeof payload.content === "string" && !streamed) appendAnswer(payload.content);
        break;
      case "run_completed":
        setTokens(payload.usage);
        break;
      case "error": {
        const error = payload.error && typeof payload.error === "object" ? payload.error : payload;
        showProblem(`RunTools reported an error${error.code ? ` (${error.code})` : ""}: ${error.message || "no message"}`);
        break;
      }
    }
  }

  // --- The socket ----------------------------------------------------------------------------
  function socketUrl(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}`;
  }

  function runSocketPath(id) {
    return root.dataset.runSocket.replace("RUN_ID", String(id)) + (lastSequence ? `?after=${lastSequence}` : "");
  }

  function open(path, onOpen) {
    if (socket) { socket.onclose = null; socket.close(1000); }
    const ws = new WebSocket(socketUrl(path));
    socket = ws;
    degraded = false;
    ws.onopen = () => { reconnects = 0; if (onOpen) onOpen(ws); };
    ws.onmessage = (message) => receive(JSON.parse(message.data));
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      if (event.code === CLOSE_UNAVAILABLE && runId != null && !finished) {
        // Not counted against MAX_RECONNECTS: each try also brings what has been recorded.
        waits += 1;
        const watching = runId;
        setTimeout(() => {
          if (runId === watching && !finished && socket === null) open(runSocketPath(watching));
        }, Math.min(UNAVAILABLE_RETRY_MS * waits, UNAVAILABLE_RETRY_MAX_MS));
      } else if (CLOSE_REASONS[event.code]) {
        showProblem(CLOSE_REASONS[event.code]);
        setRunning(false);
        stopTimer();
      } else if (runId != null && !finished && reconnects < MAX_RECONNECTS) {
        // The connection dropped (a restart, a network blip): the run went on without us.
        reconnects += 1;
        setStatus("Reconnecting…", "running");
        setTimeout(() => open(runSocketPath(runId)), 500 * reconnects);
      } else if (running) {
        showProblem("Lost the connection to rtdash; reload the page to see how the run ended.");
        setRunning(false);
        stopTimer();
      }
    };
    return ws;
  }

  function receive(message) {
    switch (message.type) {
      case "started":
        runId = message.run;
        history.replaceState(null, "", message.url);
        break;
      case "unavailable":
        degraded = true;
        showUnavailable(message);
        break;
      case "run":
        runId = message.run;
        if (!degraded) hideUnavailable();
        setRunLink(message.run, message.runUrl);
        if (!message.finished) {
          setStatus("Running", "running");
          setRunning(true);
          startTimer(message.elapsedMs);
        }
        if (message.firstTokenMs != null) {
          firstTokenMs = message.firstTokenMs;
          field("ttft").textContent = fmtMs(firstTokenMs);
        }
        break;
      case "frames":
        for (const [sequence, event, data] of message.frames) {
          if (sequence <= lastSequence) continue; // already drawn (a reconnect)
          lastSequence = sequence;
          draw(event, data);
        }
        break;
      case "finished":
        finish(message);
        break;
      case "invalid":
        unstart();
        markInvalid(Object.keys(message.errors));
        showFormProblems(Object.entries(message.errors).flatMap(([name, messages]) => messages.map((text) => `${labelFor(name)}: ${text}`)));
        setRunning(false);
        stopTimer();
        setStatus("Not started", "");
        break;
      case "error":
        if (!runId) unstart();
        showProblem(message.message);
        if (!runId || finished) { setRunning(false); stopTimer(); setStatus("Not started", ""); }
        break;
    }
  }

  function finish(summary) {
    finished = true;
    hideUnavailable(); // the whole run is on the page, whether it came live or not
    setRunning(false);
    stopTimer(summary.durationMs);
    setStatus(summary.statusLabel, summary.status);
    setRunLink(summary.run, summary.runUrl);
    if (summary.firstTokenMs != null) field("ttft").textContent = fmtMs(summary.firstTokenMs);
    if (summary.usage && Object.keys(summary.usage).length) setTokens(summary.usage);
    if (summary.status === "cancelled" && stoppedHere) {
      showProblem("You stopped the run.", "notice");
    } else if (summary.status !== "completed") {
      const head = summary.httpStatus >= 400 ? `RunTools answered ${summary.httpStatus}` : `The run ended ${summary.statusLabel.toLowerCase()}`;
      const detail = summary.errorMessage || summary.errorCode;
      showProblem(detail ? `${head}: ${detail}` : `${head}.`);
    }
    if (socket) { socket.onclose = null; socket.close(1000); socket = null; }
    footer(summary);
    if (summary.threadId) followThread(summary.threadId, summary.agent);
  }

  function footer(summary) {
    const target = turn || assistantTurn(summary.agent);
    target.node.dataset.run = summary.run;
    target.node.dataset.thread = summary.threadId || "";
    target.node.dataset.agent = summary.agent;
    target.node.querySelector(".turn-footer")?.remove();
    const usage = summary.usage || {};
    const link = el("a", null, `Run #${summary.run}`);
    link.href = summary.runUrl;
    const actions = el("span", "turn-actions");
    actions.append(button("Copy", "data-copy-message"), button("Regenerate", "data-regenerate"));
    const node = el("footer", "turn-footer");
    node.append(
      el("span", `badge ${summary.status}`, summary.statusLabel),
      el("span", null, `${usage.input ?? "—"} in / ${usage.output ?? "—"} out`),
      el("span", null, summary.cost || "—"),
      el("span", null, `first token ${fmtMs(summary.firstTokenMs ?? summary.firstByteMs)}`),
      el("span", null, `duration ${fmtMs(summary.durationMs)}`),
      link, actions,
    );
    target.node.append(node);
  }

  // The next prompt goes to the same thread: choose it in the form (adding it if need be).
  function followThread(threadId, agent) {
    const select = form.thread;
    let option = [...select.options].find((item) => item.value === threadId);
    if (!option) {
      option = new Option(`${threadId} · ${agent}`, threadId);
      option.dataset.agent = agent;
      select.add(option, 1);
    }
    select.value = threadId;
  }

  // --- The form ------------------------------------------------------------------------------
  function labelFor(name) {
    const label = form.querySelector(`label[for="id_${name}"]`);
    if (label) return label.textContent.trim();
    return { messages: "Messages", metadata: "Metadata", __all__: "Request" }[name] || name;
  }

  // A field with a problem is marked, so its outline says so (rtdash.css: [aria-invalid]).
  function markInvalid(names) {
    for (const name of names) form.querySelector(`[name="${name}"]`)?.setAttribute("aria-invalid", "true");
  }

  function showFormProblems(lines) {
    formProblems.replaceChildren(...lines.map((line) => el("p", null, line)));
    formProblems.hidden = !lines.length;
  }

  function mode() {
    return form.querySelector("input[name=input_mode]:checked")?.value || "prompt";
  }

  // Checked again on the server (runs.playground, runs.validation); here for a quick answer.
  // With `forFork`, the prompt box may be empty: the text comes from the transcript.
  function check(forFork = false) {
    const lines = [];
    form.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
    if (!form.agent.value.trim()) { lines.push("Agent: choose an agent or type its slug."); markInvalid(["agent"]); }
    if (!forFork && mode() === "prompt" && !form.prompt.value.trim()) { lines.push("Prompt: write a prompt."); markInvalid(["prompt"]); }
    if (!forFork && mode() === "messages" && ![...form.querySelectorAll("[name=message_content]")].some((area) => area.value.trim())) {
      lines.push("Messages: add at least one message with some text.");
    }
    for (const input of form.querySelectorAll("input[type=number]")) {
      if (input.value === "" && !input.validity.badInput) continue;
      const value = Number(input.value);
      const whole = input.step !== "any";
      if (input.validity.badInput || Number.isNaN(value) || (whole && !Number.isInteger(value)) || value < Number(input.min) || value > Number(input.max)) {
        markInvalid([input.name]);
        lines.push(`${labelFor(input.name)}: ${whole ? "a whole number" : "a number"} from ${Number(input.min).toLocaleString()} to ${Number(input.max).toLocaleString()}.`);
      }
    }
    const keys = new Set();
    for (const row of form.querySelectorAll(".meta-row")) {
      const key = row.querySelector("[name=meta_key]").value.trim();
      const value = row.querySelector("[name=meta_value]").value.trim();
      if (!key && value) lines.push("Metadata: every value needs a key.");
      if (key && keys.has(key)) lines.push(`Metadata: the key "${key}" appears twice.`);
      keys.add(key);
    }
    showFormProblems(lines);
    return !lines.length;
  }

  function formData() {
    const data = {};
    for (const [name, value] of new FormData(form)) {
      if (name === "csrfmiddlewaretoken") continue;
      (data[name] ||= []).push(value);
    }
    return data;
  }

  function userText(data) {
    if ((data.input_mode || ["prompt"])[0] !== "messages") return (data.prompt || [""])[0];
    const roles = data.message_role || [];
    const texts = data.message_content || [];
    for (let i = texts.length - 1; i >= 0; i -= 1) if (roles[i] === "user" && texts[i].trim()) return texts[i];
    return texts.filter((text) => text.trim()).pop() || "";
  }

  function startStream(data = formData()) {
    resetOutput();
    // A thread belongs to its agent: another agent starts a new thread.
    const option = form.thread.selectedOptions[0];
    if (data.thread?.[0] && option?.dataset.agent && option.dataset.agent !== (data.agent || [""])[0].trim()) {
      data.thread = [""];
      form.thread.value = "";
    }
    pending = data;
    userTurn(userText(data));
    assistantTurn((data.agent || [""])[0].trim());
    if ((data.input_mode || ["prompt"])[0] !== "messages" && data.prompt) form.prompt.value = "";
    setStatus("Starting…", "running");
    setRunning(true);
    startTimer(0);
    open(root.dataset.startSocket, (ws) => ws.send(JSON.stringify({ action: "start", form: data })));
  }

  // A run that did not start: its turns go, and the prompt comes back to be fixed.
  function unstart() {
    if (turn) {
      turn.node.previousElementSibling?.remove();
      turn.node.remove();
      turn = null;
    }
    if (pending && (pending.input_mode || ["prompt"])[0] !== "messages" && !form.prompt.value) form.prompt.value = (pending.prompt || [""])[0];
  }

  function watch(id) {
    runId = id;
    open(runSocketPath(id));
  }

  // htmx posts the form; with "Stream" on the socket takes over instead.
  form.addEventListener("htmx:confirm", (event) => {
    if (event.detail.elt !== form) return;
    event.preventDefault();
    if (running || !check()) return;
    if (form.stream.checked) {
      startStream();
    } else {
      resetOutput();
      event.detail.issueRequest(true);
    }
  });

  form.addEventListener("htmx:beforeRequest", (event) => {
    if (event.detail.elt !== form) return;
    setStatus("Running (not streamed)…", "running");
    setRunning(true);
    stopButton.disabled = true; // nothing to stop until it answers: the run is one request
    startTimer(0);
  });

  form.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.elt !== form) return;
    setRunning(false);
    const card = document.getElementById("result-card");
    if (!event.detail.successful || !card) {
      stopTimer();
      setStatus("Not started", "");
      if (!event.detail.successful) showProblem("rtdash could not run the request; try again.");
      return;
    }
    finished = true;
    const carry = card.querySelector("[data-continue]");
    if (carry) followThread(carry.dataset.thread, carry.dataset.agent);
    stopTimer(Number(card.dataset.duration) || null);
    setStatus(card.dataset.statusLabel, card.dataset.status);
    setRunLink(card.dataset.run, card.querySelector("header a")?.getAttribute("href"));
    if (card.dataset.firstByte) field("ttft").textContent = fmtMs(Number(card.dataset.firstByte));
    setTokens({ input: card.dataset.inputTokens ? Number(card.dataset.inputTokens) : null, output: card.dataset.outputTokens ? Number(card.dataset.outputTokens) : null });
    showProblem(""); // the card says what went wrong, in place: once is enough
  });

  stopButton.addEventListener("click", () => {
    if (!running || runId == null) return;
    stopButton.disabled = true;
    stoppedHere = true;
    setStatus("Stopping…", "cancelled");
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ action: "stop" }));
    } else {
      htmx.ajax("POST", root.dataset.stopUrl.replace("/0/", `/${runId}/`), { target: "#run-problem", swap: "innerHTML" });
    }
  });

  // Single turn or message history.
  function showMode() {
    for (const part of form.querySelectorAll("[data-mode]")) part.hidden = part.dataset.mode !== mode();
  }
  form.addEventListener("change", (event) => {
    if (event.target.name === "input_mode") showMode();
    if (event.target.id === "id_thread") {
      const agent = event.target.selectedOptions[0]?.dataset.agent;
      if (agent) form.agent.value = agent;
    }
  });

  // Rows of messages and metadata.
  form.addEventListener("click", (event) => {
    const add = event.target.closest("[data-add]");
    if (add) {
      const template = document.getElementById(`${add.dataset.add}-row-template`);
      const rows = form.querySelector(`[data-rows="${add.dataset.add}"]`);
      rows.append(template.content.cloneNode(true));
      rows.lastElementChild.querySelector("textarea, input")?.focus();
      return;
    }
    const remove = event.target.closest("[data-remove]");
    if (remove) {
      const row = remove.closest(".row");
      const rows = row.parentElement;
      if (rows.children.length > 1) row.remove();
      else row.querySelectorAll("input, textarea").forEach((input) => { input.value = ""; });
    }
  });

  // "Continue this thread" fills the form in place (its href works without JavaScript too).
  document.addEventListener("click", (event) => {
    const link = event.target.closest("[data-continue]");
    if (!link) return;
    event.preventDefault();
    const select = form.thread;
    let option = [...select.options].find((item) => item.value === link.dataset.thread);
    if (!option) {
      option = new Option(`${link.dataset.thread} · ${link.dataset.agent}`, link.dataset.thread);
      option.dataset.agent = link.dataset.agent;
      select.add(option, 1);
    }
    select.value = link.dataset.thread;
    form.agent.value = link.dataset.agent;
    form.querySelector("input[name=input_mode][value=prompt]").checked = true;
    showMode();
    form.prompt.value = "";
    form.prompt.focus();
    history.replaceState(null, "", link.href);
    form.scrollIntoView({ behavior: "smooth", block: "start" });
  });

  // "View code" follows the form while it is open.
  const code = document.getElementById("view-code");
  let codeTimer = null;
  const refreshCode = () => { if (code.open) htmx.trigger(code, "refresh-code"); };
  code.addEventListener("toggle", refreshCode);
  form.addEventListener("input", () => { clearTimeout(codeTimer); codeTimer = setTimeout(refreshCode, 400); });
  form.addEventListener("change", () => { clearTimeout(codeTimer); codeTimer = setTimeout(refreshCode, 100); });

  // ISSUE 7: the estimate box, only when the reports feature offers its URL.
  const estimateUrl = root.dataset.estimateUrl;
  let estimateTimer = null;
  function refreshEstimate() {
    const agent = form.agent.value.trim();
    if (!estimateUrl || !agent) return;
    // A value out of range is the form's to report (check()); asked with it, the estimate
    // answers 400, and an htmx error response could land in the page instead of the box.
    for (const name of ["max_turns", "max_tokens"]) {
      const input = form[name];
      const value = Number(input.value);
      if (input.value !== "" && (!Number.isInteger(value) || value < Number(input.min) || value > Number(input.max))) return;
    }
    const query = new URLSearchParams({ agent });
    if (form.max_turns.value) query.set("maxTurns", form.max_turns.value);
    if (form.max_tokens.value) query.set("maxTokens", form.max_tokens.value);
    htmx.ajax("GET", `${estimateUrl}?${query}`, { target: "#run-estimate", swap: "innerHTML" });
  }
  if (estimateUrl) {
    form.addEventListener("change", (event) => {
      if (["agent", "max_turns", "max_tokens"].includes(event.target.name)) {
        clearTimeout(estimateTimer);
        estimateTimer = setTimeout(refreshEstimate, 200);
      }
    });
    refreshEstimate();
  }

  // Ctrl+Enter (Cmd+Enter on a Mac) sends, from any field of the form.
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !runButton.disabled) {
      event.preventDefault();
      form.requestSubmit(runButton);
    }
  });

  // "New conversation": an empty transcript and a new thread (its href works without JS).
  document.getElementById("new-conversation").addEventListener("click", (event) => {
    if (running) return;
    event.preventDefault();
    resetOutput();
    output.replaceChildren(el("p", "muted placeholder", "A new conversation: your next prompt starts a new thread."));
    form.thread.value = "";
    form.prompt.value = "";
    result.replaceChildren();
    history.replaceState(null, "", event.currentTarget.href);
    form.prompt.focus();
  });

  // --- Forking: edit and resend a user turn, regenerate an answer ------------------------------
  // RunTools keeps a thread's turns on its side, so a fork cannot branch a thread there: the
  // turns before the edited one are sent again as a message history, without a thread, and
  // the answer starts a new thread that the conversation follows from then on.
  function forkFrom(userNode, text) {
    const messages = [];
    for (const node of output.querySelectorAll(".turn")) {
      if (node === userNode) break;
      const content = node.dataset.source || "";
      if (content.trim()) messages.push([node.dataset.role === "user" ? "user" : "assistant", content]);
    }
    messages.push(["user", text]);
    let after = userNode;
    while (after) { const next = after.nextElementSibling; after.remove(); after = next; }
    const data = formData();
    data.input_mode = ["messages"];
    data.message_role = messages.map(([role]) => role);
    data.message_content = messages.map(([, content]) => content);
    data.thread = [""];
    delete data.prompt;
    form.thread.value = "";
    startStream(data);
  }

  output.addEventListener("click", (event) => {
    if (running) return;
    const edit = event.target.closest("[data-edit]");
    if (edit) {
      const node = edit.closest(".user-turn");
      if (node.querySelector(".edit-turn")) return;
      const box = el("div", "edit-turn");
      const area = el("textarea");
      area.value = node.dataset.source;
      area.rows = 3;
      area.setAttribute("aria-label", "Edited prompt");
      const send = el("button", "primary", "Send edited prompt");
      send.type = "button";
      const cancel = el("button", null, "Cancel");
      cancel.type = "button";
      send.addEventListener("click", () => { if (area.value.trim() && !running && check(true)) forkFrom(node, area.value); });
      cancel.addEventListener("click", () => box.remove());
      area.addEventListener("keydown", (key) => {
        if (key.key === "Enter" && (key.ctrlKey || key.metaKey)) { key.preventDefault(); send.click(); }
      });
      box.append(area, send, " ", cancel);
      node.append(box);
      area.focus();
      return;
    }
    const again = event.target.closest("[data-regenerate]");
    if (again) {
      const answerNode = again.closest(".assistant-turn");
      const userNode = answerNode.previousElementSibling;
      if (userNode?.classList.contains("user-turn") && check(true)) forkFrom(userNode, userNode.dataset.source);
    }
  });

  // Drawn on the server, the answers get their code blocks' Copy buttons here.
  window.rtdashMarkdown.addCodeCopyButtons(output);

  if (runButton.disabled) runButton.dataset.forbidden = "1";
  showMode();
  if (root.dataset.watch) {
    output.querySelector(".placeholder")?.remove();
    const data = formData();
    userTurn(userText(data));
    assistantTurn((data.agent || [""])[0].trim());
    watch(Number(root.dataset.watch));
  }
})();
