// imgate web demo: MQTT.js over the gateway's WebSocket listener (/mqtt,
// subprotocol "mqtt"). Login: username = user id, password = token,
// client id = device. Receives on im/inbox/<user> (QoS 1; MQTT.js's PUBACK
// is the delivery ack), sends JSON to im/send and reads each send's result
// on im/ack/<device>.
//
// Query-string parameters fill the form (ws, user, token, device, to) and
// `autoconnect=1` connects at once; state is on `window.imgate` for tests
// and the console: `imgate.state`, `imgate.received` (message JSON),
// `imgate.results` (send results), `imgate.errors`, `imgate.send(to, text)`
// (resolves with the send result). Every change is also dispatched as a
// window event "imgate" with detail {kind: "state"|"received"|"result"|
// "error", value}.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const LIMIT = 1000; // entries kept in each list and in the page log
  const SEND_TIMEOUT_MS = 15000;

  const imgate = {
    state: "idle",
    received: [],
    results: [],
    errors: [],
    client: null,
    send,
    connect,
  };
  window.imgate = imgate;
  const pending = new Map(); // clientMsgId -> {resolve, reject, timer}

  function notify(kind, value) {
    window.dispatchEvent(new CustomEvent("imgate", { detail: { kind, value } }));
  }

  function push(list, item, kind) {
    list.push(item);
    if (list.length > LIMIT) list.shift();
    notify(kind, item);
  }

  function setState(state, text) {
    imgate.state = state;
    notify("state", state);
    $("status").dataset.state = state;
    $("status").textContent = text || state;
  }

  function log(cls, text) {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    $("log").prepend(li);
    while ($("log").children.length > LIMIT) $("log").lastChild.remove();
  }

  function connect() {
    if (imgate.client) imgate.client.end(true);
    const url = $("ws").value.trim();
    const user = $("user").value.trim();
    const device = $("device").value.trim() || "web";
    setState("connecting");
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId: device,
      username: user,
      password: $("token").value.trim(),
      clean: true,
      reconnectPeriod: 0, // a refused login stays refused: show it
      connectTimeout: 10000,
    });
    imgate.client = client;
    client.on("connect", () => {
      const topics = { [`im/inbox/${user}`]: { qos: 1 }, [`im/ack/${device}`]: { qos: 1 } };
      client.subscribe(topics, (err, granted) => {
        const refused = (granted || []).filter((g) => g.qos > 2);
        if (err || refused.length) {
          fail(`subscribe refused: ${err ? err.message : JSON.stringify(refused)}`);
          return;
        }
        setState("connected", `connected as ${user} (${device})`);
      });
    });
    client.on("message", (topic, payload) => onMessage(topic, payload.toString(), user, device));
    client.on("error", (err) => fail(err.message));
    client.on("close", () => {
      if (imgate.state !== "error") setState("closed");
    });
  }

  function fail(text) {
    push(imgate.errors, text, "error");
    setState("error", `error: ${text}`);
    log("err", `error: ${text}`);
  }

  function onMessage(topic, text, user, device) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      push(imgate.errors, `not JSON on ${topic}`, "error");
      return;
    }
    if (topic === `im/inbox/${user}`) {
      push(imgate.received, msg, "received");
      const body = msg.payload ? msg.payload.searchableContent : "";
      log("in", `${msg.sender}: ${body}`);
    } else if (topic === `im/ack/${device}`) {
      push(imgate.results, msg, "result");
      const p = pending.get(msg.clientMsgId);
      if (p) {
        pending.delete(msg.clientMsgId);
        clearTimeout(p.timer);
        p.resolve(msg);
      }
      if (msg.code !== 0) log("err", `send ${msg.clientMsgId} failed: code ${msg.code}`);
    }
  }

  function send(to, text) {
    const client = imgate.client;
    if (!client || imgate.state !== "connected") return Promise.reject(new Error("not connected"));
    const clientMsgId = `web-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const req = {
      conv: { type: 0, target: to, line: 0 },
      payload: { type: 1, searchableContent: text },
      clientMsgId,
    };
    return new Promise((resolve, reject) => {
      if (pending.size >= LIMIT) {
        reject(new Error("too many sends waiting for their result"));
        return;
      }
      const timer = setTimeout(() => {
        pending.delete(clientMsgId);
        reject(new Error(`no send result for ${clientMsgId} within ${SEND_TIMEOUT_MS} ms`));
      }, SEND_TIMEOUT_MS);
      pending.set(clientMsgId, { resolve, reject, timer });
      client.publish("im/send", JSON.stringify(req), { qos: 1 }, (err) => {
        if (err) {
          pending.delete(clientMsgId);
          clearTimeout(timer);
          reject(err);
        }
      });
      log("out", `to ${to}: ${text}`);
    });
  }

  const params = new URLSearchParams(location.search);
  for (const key of ["ws", "user", "token", "device", "to"]) {
    if (params.has(key)) $(key).value = params.get(key);
  }
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    connect();
  });
  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    send($("to").value.trim(), $("text").value).then(
      () => ($("text").value = ""),
      (err) => fail(err.message),
    );
  });
  if (params.get("autoconnect") === "1") connect();
})();
