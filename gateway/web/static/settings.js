// The Settings tab: a supervisor manages the shop's agents, business hours, routing settings and
// bot in the browser, over the REST API with their own client token (the operations that take a
// supervisor's token, docs/api.md): no API key reaches the browser, and the server decides
// everything, so its refusals are shown as it words them. What people or the server wrote is
// only ever set as text.

import { callApi } from "./api.js";
import { clock, el } from "./bodies.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const ARM_MS = 5000; // a "back to default" click waits this long for the one that confirms it
const ZONES = [...Array.from({ length: 53 }, (_, i) => -720 + 30 * i), 345, 525, 765].sort((a, b) => a - b);

let token = () => "";
const state = { agents: [], editing: null, hours: null };

function api(method, path, body) {
  return callApi(token(), method, path, body);
}

/** A list typed into one field: `a, b` or `a，b` or `a b`. */
function words(value) {
  return value.split(/[,，\s]+/).map((word) => word.trim()).filter(Boolean);
}

function zoneName(minutes) {
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

/** A refusal shown where it belongs: each field error beside its field (`groups.1` beside `groups`),
 * the rest, and the detail when no field took it, in the form's own error line. */
function showProblem(form, line, err) {
  clearProblem(form, line);
  const left = [];
  for (const error of err.errors || []) {
    const slot = form.querySelector(`[data-field="${CSS.escape(String(error.field).split(".")[0])}"]`);
    if (slot) slot.textContent = error.message;
    else left.push(error.message);
  }
  const placed = (err.errors || []).length - left.length;
  const text = left.length ? left.join("; ") : placed ? "" : `${err.code ? `${err.code}: ` : ""}${err.detail || err.message || err}`;
  line.textContent = text;
  line.hidden = !text;
}

function clearProblem(form, line) {
  for (const slot of form.querySelectorAll("[data-field]")) slot.textContent = "";
  line.textContent = "";
  line.hidden = true;
}

/** Field errors as a list under a JSON editor: `field: message`, or the detail alone. */
function showErrors(list, err) {
  const named = (e) => (String(e.message).includes(`\`${e.field}\``) ? e.message : `${e.field}: ${e.message}`);
  const items = err.errors && err.errors.length ? err.errors.map(named) : [`${err.code ? `${err.code}: ` : ""}${err.detail || err.message || err}`];
  list.replaceChildren(...items.map((text) => el("li", { text })));
}

/** The JSON in a textarea, or a problem saying where it is not JSON. */
function parsed(textarea) {
  try {
    return JSON.parse(textarea.value);
  } catch (err) {
    throw { code: "", detail: t("s_not_json", { e: err.message }), errors: [] };
  }
}

// ---- agents ----------------------------------------------------------------------------------

async function loadAgents() {
  try {
    state.agents = (await api("GET", "/v1/agents")).agents;
    renderAgents();
  } catch (err) {
    showProblem($("agent-form"), $("agents-error"), err);
  }
}

function renderAgents() {
  const head = el("tr", {}, ...["s_name", "s_user", "s_groups", "s_languages", "s_max", "s_presence", "s_state", ""].map((key) => el("th", { text: key ? t(key) : "" })));
  const rows = state.agents.map((a) =>
    el("tr", { "data-user": a.user, class: a.disabled ? "disabled" : "" },
      el("td", { text: a.name }),
      el("td", { text: a.user }),
      el("td", { text: a.groups.join(", ") }),
      el("td", { text: a.languages.join(", ") }),
      el("td", { class: "max", text: String(a.max_active) }),
      el("td", { text: `${t(`status_${a.presence.status}`)} · ${t("s_serving", { n: a.presence.active })}` }),
      el("td", { class: "state", text: a.disabled ? t("s_disabled") : t("s_enabled") }),
      el("td", {},
        el("button", { type: "button", class: "link edit", text: t("edit"), onclick: () => editAgent(a) }),
        el("button", { type: "button", class: "link toggle", text: a.disabled ? t("s_enable") : t("s_disable"), onclick: () => toggleAgent(a) }))));
  $("agent-table").replaceChildren(head, ...rows);
  $("agents-empty").hidden = state.agents.length > 0;
}

function editAgent(agent) {
  state.editing = agent.user;
  clearProblem($("agent-form"), $("agents-error"));
  $("agent-user").value = agent.user;
  $("agent-user").readOnly = true;
  $("agent-name").value = agent.name;
  $("agent-groups").value = agent.groups.join(", ");
  $("agent-languages").value = agent.languages.join(", ");
  $("agent-max").value = String(agent.max_active);
  $("agent-form-title").textContent = t("s_edit_agent", { u: agent.user });
  $("agent-save").textContent = t("save");
  $("agent-cancel").hidden = false;
  $("agent-max").focus();
}

function resetAgentForm() {
  state.editing = null;
  $("agent-form").reset();
  $("agent-user").readOnly = false;
  $("agent-form-title").textContent = t("s_add_agent");
  $("agent-save").textContent = t("s_add");
  $("agent-cancel").hidden = true;
}

async function toggleAgent(agent) {
  try {
    await api("PATCH", `/v1/agents/${encodeURIComponent(agent.user)}`, { disabled: !agent.disabled });
    clearProblem($("agent-form"), $("agents-error"));
    await loadAgents();
  } catch (err) {
    showProblem($("agent-form"), $("agents-error"), err);
  }
}

async function saveAgent(event) {
  event.preventDefault();
  const fields = {};
  const name = $("agent-name").value.trim();
  const groups = words($("agent-groups").value);
  const max = $("agent-max").value.trim();
  if (name) fields.name = name;
  if (groups.length) fields.groups = groups;
  if (state.editing || $("agent-languages").value.trim()) fields.languages = words($("agent-languages").value);
  if (max) fields.max_active = Number(max);
  try {
    if (state.editing) await api("PATCH", `/v1/agents/${encodeURIComponent(state.editing)}`, fields);
    else await api("POST", "/v1/agents", { user: $("agent-user").value.trim(), ...fields });
    clearProblem($("agent-form"), $("agents-error"));
    resetAgentForm();
    await loadAgents();
  } catch (err) {
    showProblem($("agent-form"), $("agents-error"), err);
  }
}

// ---- business hours --------------------------------------------------------------------------

async function loadHours() {
  try {
    renderHours(await api("GET", "/v1/business-hours"));
  } catch (err) {
    showProblem($("hours-form"), $("hours-error"), err);
  }
}

function renderHours(answer) {
  state.hours = answer.hours;
  const hours = answer.hours;
  if (!hours) $("hours-now").textContent = t("s_hours_none");
  else if (answer.open_now) $("hours-now").textContent = t("s_hours_open");
  else $("hours-now").textContent = t("s_hours_closed", { t: answer.back_at ? clock(answer.back_at) : "—" });
  $("hours-now").className = !hours || answer.open_now ? "open" : "warning";
  const shown = hours || { utc_offset_min: -new Date().getTimezoneOffset(), days: [0, 1, 2, 3, 4], open: "09:00", close: "18:00" };
  const weekly = shown.windows ? shown.windows[0] : shown;
  for (const box of $("hours-days").querySelectorAll("input")) box.checked = weekly.days.includes(Number(box.value));
  $("hours-open").value = weekly.open;
  $("hours-close").value = weekly.close;
  zoneOptions(shown.utc_offset_min);
  const notes = [];
  if (shown.windows && shown.windows.length > 1) {
    notes.push(t("s_hours_windows", { w: shown.windows.map((w) => `${w.days.map((d) => t(`day_${d}`)).join(", ")} ${w.open}–${w.close}`).join("; ") }));
  }
  if (shown.dates) notes.push(t("s_hours_dates", { n: Object.keys(shown.dates).length }));
  $("hours-extra").textContent = notes.join(" ");
  $("hours-extra").hidden = !notes.length;
  $("hours-remove").disabled = !hours;
}

function zoneOptions(selected) {
  const zones = ZONES.includes(selected) ? ZONES : [...ZONES, selected].sort((a, b) => a - b);
  $("hours-zone").replaceChildren(...zones.map((minutes) => el("option", { value: String(minutes), text: zoneName(minutes), selected: minutes === selected })));
}

async function saveHours(event) {
  event.preventDefault();
  const hours = {
    utc_offset_min: Number($("hours-zone").value),
    days: [...$("hours-days").querySelectorAll("input:checked")].map((box) => Number(box.value)),
    open: $("hours-open").value.trim(),
    close: $("hours-close").value.trim(),
  };
  if (state.hours && state.hours.dates) hours.dates = state.hours.dates; // holidays kept: this form does not edit them
  try {
    renderHours(await api("PUT", "/v1/business-hours", hours));
    clearProblem($("hours-form"), $("hours-error"));
    $("hours-saved").textContent = t("s_saved");
  } catch (err) {
    $("hours-saved").textContent = "";
    showProblem($("hours-form"), $("hours-error"), err);
  }
}

async function removeHours() {
  try {
    renderHours(await api("DELETE", "/v1/business-hours"));
    clearProblem($("hours-form"), $("hours-error"));
    $("hours-saved").textContent = t("s_removed");
  } catch (err) {
    showProblem($("hours-form"), $("hours-error"), err);
  }
}

// ---- routing ---------------------------------------------------------------------------------

async function loadRouting() {
  $("routing-errors").replaceChildren();
  $("routing-saved").textContent = "";
  try {
    renderRouting(await api("GET", "/v1/routing"));
  } catch (err) {
    showErrors($("routing-errors"), err);
  }
}

function renderRouting(answer) {
  $("routing-json").value = JSON.stringify(answer.settings, null, 2);
  $("routing-source").textContent = t(`s_source_${answer.source}`);
  $("routing-updated").textContent = answer.updated_at ? t("s_updated", { t: clock(answer.updated_at) }) : "";
}

async function saveRouting(event) {
  event.preventDefault();
  $("routing-saved").textContent = "";
  try {
    renderRouting(await api("PUT", "/v1/routing", parsed($("routing-json"))));
    $("routing-errors").replaceChildren();
    $("routing-saved").textContent = t("s_saved");
  } catch (err) {
    showErrors($("routing-errors"), err);
  }
}

// ---- the bot ---------------------------------------------------------------------------------

async function loadBot() {
  $("bot-errors").replaceChildren();
  try {
    renderBot(await api("GET", "/v1/bot/knowledge-base"));
  } catch (err) {
    showErrors($("bot-errors"), err);
  }
}

function renderBot(answer) {
  $("bot-json").value = JSON.stringify(answer.knowledge_base, null, 2);
  $("bot-source").textContent = t(`s_source_${answer.source}`);
  $("bot-counts").textContent = t("s_bot_counts", { i: answer.intents, e: answer.examples });
  $("bot-default").disabled = answer.source !== "api";
}

async function saveBot(event) {
  event.preventDefault();
  $("bot-status").textContent = t("s_bot_fitting");
  try {
    renderBot(await api("PUT", "/v1/bot/knowledge-base", parsed($("bot-json"))));
    $("bot-errors").replaceChildren();
    $("bot-status").textContent = t("s_saved");
  } catch (err) {
    $("bot-status").textContent = "";
    showErrors($("bot-errors"), err);
  }
}

/** "Back to default" forgets the stored knowledge base: a second click within a few seconds confirms. */
async function botDefault() {
  const button = $("bot-default");
  if (!button.dataset.armed || Date.now() - Number(button.dataset.armed) > ARM_MS) {
    button.dataset.armed = String(Date.now());
    button.textContent = t("s_bot_default_confirm");
    setTimeout(() => {
      delete button.dataset.armed;
      button.textContent = t("s_bot_default");
    }, ARM_MS);
    return;
  }
  delete button.dataset.armed;
  button.textContent = t("s_bot_default");
  $("bot-status").textContent = t("s_bot_fitting");
  try {
    await api("DELETE", "/v1/bot/knowledge-base");
    await loadBot();
    $("bot-status").textContent = t("s_bot_defaulted");
  } catch (err) {
    $("bot-status").textContent = "";
    showErrors($("bot-errors"), err);
  }
}

async function tryBot(event) {
  event.preventDefault();
  const text = $("bot-question").value.trim();
  if (!text) return;
  const box = $("bot-answer");
  box.replaceChildren(el("p", { class: "muted", text: t("s_bot_asking") }));
  let r;
  try {
    r = await api("POST", "/v1/bot/try", { text });
  } catch (err) {
    box.replaceChildren(el("p", { class: "error", text: `${err.code}: ${err.detail || err.message}` }));
    return;
  }
  const line = (label, value, cls) => el("div", { class: `fact ${cls}` }, el("span", { class: "muted", text: label }), el("span", { class: "value", text: value }));
  const facts = [
    el("blockquote", { class: "bot-answer", text: r.answer ?? t("s_bot_no_answer") }),
    line(t("intent"), r.intent ?? t("s_bot_no_intent"), "intent"),
    line(t("s_confidence"), r.confidence.toFixed(2), "confidence"),
    line(t("s_handoff"), r.handoff ?? t("s_no"), "handoff"),
    r.clarifying ? line(t("s_clarifying"), r.quick_replies.join(", "), "clarifying") : null,
    !r.clarifying && r.quick_replies.length ? line(t("s_quick_replies"), r.quick_replies.join(", "), "quick-replies") : null,
    line(t("s_matches"), r.matches.map((m) => `${m.intent} ${m.score.toFixed(2)}`).join(" · ") || t("none"), "matches"),
    line(t("s_language"), r.language, "language"),
  ];
  box.replaceChildren(...facts.filter(Boolean));
}

// ---- the tab ---------------------------------------------------------------------------------

/** Wire the tab's forms once; `currentToken` gives the signed-in supervisor's token. */
export function wireSettings(currentToken) {
  token = currentToken;
  const days = $("hours-days");
  days.prepend(...[0, 1, 2, 3, 4, 5, 6].map((d) => el("label", { class: "day" }, el("input", { type: "checkbox", value: String(d) }), t(`day_${d}`))));
  resetAgentForm();
  $("agent-form").addEventListener("submit", saveAgent);
  $("agent-cancel").addEventListener("click", () => {
    clearProblem($("agent-form"), $("agents-error"));
    resetAgentForm();
  });
  $("hours-form").addEventListener("submit", saveHours);
  $("hours-remove").addEventListener("click", removeHours);
  $("routing-form").addEventListener("submit", saveRouting);
  $("routing-reset").addEventListener("click", loadRouting);
  $("bot-form").addEventListener("submit", saveBot);
  $("bot-reload").addEventListener("click", () => {
    $("bot-status").textContent = "";
    loadBot();
  });
  $("bot-default").addEventListener("click", botDefault);
  $("bot-try-form").addEventListener("submit", tryBot);
}

/** The tab is shown: read everything again (another supervisor, or the shop's backend, may have changed it). */
export function showSettings() {
  return Promise.all([loadAgents(), loadHours(), loadRouting(), loadBot()]);
}
