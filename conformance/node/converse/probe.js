// The test's handle on Converse.js (converse/index.html): a Converse plugin
// that keeps `_converse` and exposes small read/act helpers on
// window.imgateConverse, then converse.initialize with the query's login.
// The agent (agent.mjs) calls these through page.evaluate/waitForFunction;
// "wait" helpers return a falsy value until the state is there.
(() => {
  const q = new URLSearchParams(location.search);
  const domain = q.get("domain") || "localhost";
  let conv = null;
  // Body of an own message we retracted -> "pending", then "settled" once
  // Converse saw the room reflect the retraction, or "error: ...".
  const retractions = new Map();

  const msgView = (m) => ({
    body: m.get("body") || null,
    sender: m.get("sender"),
    from: m.get("from") || null,
    type: m.get("type"),
    origin_id: m.get("origin_id") || null,
    retracted: Boolean(m.get("retracted")),
    error_type: m.get("error_type") || null,
    error: m.get("error") || null,
  });

  window.imgateConverse = {
    /** What the page knows, for a failed wait's message. */
    status: () => ({
      plugin: Boolean(conv),
      connected: Boolean(conv && conv.api.connection.connected()),
      roster: Boolean(conv && conv.state && conv.state.roster),
      jid: conv && conv.session ? conv.session.get("jid") || null : null,
      contacts: conv && conv.state && conv.state.roster ? conv.state.roster.map((x) => x.get("jid")) : [],
      chats: conv && conv.state && conv.state.chatboxes
        ? conv.state.chatboxes.filter((b) => b.get("jid")).map((b) => ({
            jid: b.get("jid"),
            messages: b.messages ? b.messages.map(msgView) : [],
          }))
        : [],
    }),
    /** True once the XMPP session is up and the roster exists. */
    connected: () => Boolean(conv && conv.api.connection.connected() && conv.state.roster),
    /** `jid` once it is in the roster, else null. */
    hasContact: (jid) => (conv.state.roster.get(jid) ? jid : null),
    /** Open the chat with `jid` (Converse fetches its history). */
    openChat: async (jid) => {
      const chat = await conv.api.chats.open(jid, {}, true);
      return chat ? chat.get("jid") : null;
    },
    /** Open (join) a room; resolves once entered, with the room's occupants' nicks. */
    joinRoom: async (jid, nick) => {
      const room = await conv.api.rooms.open(jid, { nick }, true);
      return room ? room.get("jid") : null;
    },
    roomEntered: (jid) => {
      const room = conv.state.chatboxes.get(jid);
      return room && room.session.get("connection_status") === window.converse.ROOMSTATUS.ENTERED
        ? room.occupants.map((o) => o.get("nick"))
        : null;
    },
    /** Send a message in an open chat or room; resolves with its origin-id. */
    send: async (jid, text) => {
      const box = conv.state.chatboxes.get(jid);
      const m = await box.sendMessage({ body: text });
      return m ? msgView(m) : null;
    },
    /** Messages of a chat or room (an empty list when it is not open). */
    messages: (jid) => {
      const box = conv.state.chatboxes.get(jid);
      return box ? box.messages.map(msgView) : [];
    },
    /** The first message with `text` in `jid`, once it is there. */
    findMessage: (jid, text) => {
      const box = conv.state.chatboxes.get(jid);
      const m = box && box.messages.find((x) => x.get("body") === text);
      return m ? msgView(m) : null;
    },
    /** Retract (XEP-0424) our own message with body `text`; returns once
     * it is sent (Converse then waits for the room to reflect it). */
    retract: (jid, text) => {
      const box = conv.state.chatboxes.get(jid);
      const m = box.messages.find((x) => x.get("body") === text && x.get("sender") === "me");
      if (!m) throw new Error(`no own message ${text} in ${jid}`);
      if (!m.mayBeRetracted()) throw new Error(`Converse says ${text} may not be retracted`);
      retractions.set(text, "pending");
      Promise.resolve(box.retractOwnMessage(m)).then(
        () => retractions.set(text, m.get("error_type") ? `error: ${m.get("error")}` : "settled"),
        (e) => retractions.set(text, `error: ${e}`),
      );
      return msgView(m);
    },
    /** How our retraction of `text` ended, once it has. */
    retractionSettled: (text) => {
      const r = retractions.get(text);
      return r && r !== "pending" ? r : null;
    },
  };

  window.converse.plugins.add("imgate-probe", {
    initialize() {
      conv = this._converse;
    },
  });
  window.addEventListener("converse-loaded", () => {});
  window.converse.initialize({
    assets_path: "/converse/dist/",
    websocket_url: q.get("ws"),
    discover_connection_methods: false,
    authentication: "login",
    auto_login: true,
    jid: `${q.get("user")}@${domain}/${q.get("device")}`,
    password: q.get("token"),
    auto_reconnect: false,
    view_mode: "overlayed",
    i18n: "en",
    loglevel: "warn",
    whitelisted_plugins: ["imgate-probe"],
    allow_message_retraction: "all",
    // Bounds how long Converse waits for a room to reflect what it sent.
    stanza_timeout: 10000,
    play_sounds: false,
    show_desktop_notifications: false,
    show_client_info: false,
    persistent_store: "IndexedDB",
    clear_cache_on_logout: true,
    omemo_default: false,
  });
})();
