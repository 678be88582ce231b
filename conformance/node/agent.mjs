// Conformance agent for the browser and xmpp.js tests (conformance/src/node.rs
// drives it): JSON commands one per line on stdin, JSON events one per line on
// stdout. Exits when stdin closes or after LIFETIME seconds (argv[2], default
// 90), whichever comes first, closing the browser and the XMPP client.
//
// Commands (every failure is {"event":"error","op",...,"message"}):
//   {"op":"browser","ws","user","token","device","chromium"}
//       serve examples/web (web_server.mjs) on 127.0.0.1:0, launch headless
//       Chromium (playwright-core, executablePath = chromium) and open the demo
//       with ?ws=&user=&token=&device=&autoconnect=1; the page's "imgate"
//       window events come out as {"event":"browser_<kind>","value"} (kind:
//       state, received, result, error); page errors as "browser_page_error".
//   {"op":"converse","ws","user","token","device","domain","chromium"}
//       the same server and browser, opening converse/index.html (Converse.js
//       logging in over XMPP-over-WebSocket) -> {"event":"browser_loaded"}
//   {"op":"converse_call"|"converse_wait","fn","args"} -> {"event":"converse",
//       "fn","value"}: window.imgateConverse[fn](...args) (converse/probe.js),
//       for converse_wait polled until truthy
//   {"op":"page_text","text","exact"?} -> {"event":"page_text","text"} once the
//       text is visible on the page
//   {"op":"browser_send","to","text"} -> {"event":"browser_sent","result"}
//       (the im/ack send result the page's imgate.send resolved with)
//   {"op":"screenshot","path"} -> {"event":"screenshot","path"}
//   {"op":"xmpp","service","domain","user","token","resource"}
//       xmpp.js over RFC 7395 WebSocket, SASL PLAIN; -> {"event":"xmpp_online",
//       "jid"}; then every <message/> as {"event":"xmpp_message","from","id",
//       "type","body","receipt"?} (receipt = the id of a XEP-0184 <received/>),
//       and {"event":"xmpp_error"|"xmpp_offline"}. Incoming messages that ask
//       for a receipt get one (the delivery ack).
//   {"op":"xmpp_send","to","body","id"} -> {"event":"xmpp_sent","id"}
//       (a chat message asking for a XEP-0184 receipt)
import { createInterface } from "node:readline";
import { WebSocket } from "ws";
import { serveWeb } from "./web_server.mjs";

// xmpp.js's WebSocket transport uses the WebSocket global, which Node 20 has
// only behind a flag: give it the `ws` package's.
globalThis.WebSocket ??= WebSocket;
const { client: xmppClient, xml } = await import("@xmpp/client");
const { chromium } = await import("playwright-core");

const LIFETIME_S = Number(process.argv[2] || 90);
const PAGE_WAIT_MS = 15000;

let server = null;
let browser = null;
let page = null;
let xmpp = null;

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function launch(c) {
  server = await serveWeb(0);
  browser = await chromium.launch({
    executablePath: c.chromium,
    headless: true,
    // We run as root (CI): Chromium's sandbox needs an unprivileged user.
    args: ["--no-sandbox"],
    timeout: PAGE_WAIT_MS,
  });
  page = await browser.newPage();
  page.setDefaultTimeout(PAGE_WAIT_MS);
  page.on("pageerror", (e) => emit({ event: "browser_page_error", message: String(e) }));
  page.on("console", (m) => {
    if (m.type() === "error") emit({ event: "browser_console_error", message: m.text() });
  });
  // The page must not reach anything but this server and the gateway.
  await page.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === "127.0.0.1" && u.port === String(server.address().port)) {
      return route.continue();
    }
    emit({ event: "browser_blocked", url: u.href });
    return route.abort();
  });
  await page.exposeBinding("__imgateReport", (_src, detail) => {
    emit({ event: `browser_${detail.kind}`, value: detail.value });
  });
  await page.addInitScript(() => {
    window.addEventListener("imgate", (e) => window.__imgateReport(e.detail));
  });
}

async function startBrowser(c) {
  await launch(c);
  const q = new URLSearchParams({
    ws: c.ws,
    user: c.user,
    token: c.token,
    device: c.device,
    autoconnect: "1",
  });
  const url = `http://127.0.0.1:${server.address().port}/index.html?${q}`;
  await page.goto(url, { waitUntil: "load" });
  emit({ event: "browser_loaded", url, version: browser.version() });
}

async function startConverse(c) {
  await launch(c);
  const q = new URLSearchParams({
    ws: c.ws,
    user: c.user,
    token: c.token,
    device: c.device,
    domain: c.domain,
  });
  const url = `http://127.0.0.1:${server.address().port}/converse/index.html?${q}`;
  await page.goto(url, { waitUntil: "load" });
  emit({ event: "browser_loaded", url, version: browser.version() });
}

// window.imgateConverse[fn](...args) in the Converse page (converse/probe.js).
async function converseCall(c) {
  const value = await page.evaluate(
    ([fn, args]) => window.imgateConverse[fn](...args),
    [c.fn, c.args || []],
  );
  emit({ event: "converse", fn: c.fn, value: value ?? null });
}

// Poll window.imgateConverse[fn](...args) until it is truthy (bounded by the
// page's default timeout).
async function converseWait(c) {
  let handle;
  try {
    handle = await page.waitForFunction(
      ([fn, args]) => window.imgateConverse && window.imgateConverse[fn](...args),
      [c.fn, c.args || []],
    );
  } catch (e) {
    const status = await page.evaluate(() => window.imgateConverse?.status()).catch(String);
    throw new Error(`${e.message}; page status ${JSON.stringify(status)}`);
  }
  const value = await handle.jsonValue();
  emit({ event: "converse", fn: c.fn, value });
}

// Wait until `text` is visible on the page (Converse's DOM).
async function pageText(c) {
  await page.getByText(c.text, { exact: c.exact ?? false }).first().waitFor({ state: "visible" });
  emit({ event: "page_text", text: c.text });
}

async function browserSend(c) {
  const result = await page.evaluate(([to, text]) => window.imgate.send(to, text), [c.to, c.text]);
  emit({ event: "browser_sent", result });
}

async function startXmpp(c) {
  xmpp = xmppClient({
    service: c.service,
    domain: c.domain,
    resource: c.resource,
    username: c.user,
    password: c.token,
  });
  xmpp.on("error", (e) => emit({ event: "xmpp_error", message: String(e) }));
  xmpp.on("offline", () => emit({ event: "xmpp_offline" }));
  xmpp.on("stanza", (st) => {
    if (!st.is("message")) return;
    const received = st.getChild("received", "urn:xmpp:receipts");
    const rec = {
      event: "xmpp_message",
      from: st.attrs.from,
      id: st.attrs.id,
      type: st.attrs.type,
      body: st.getChildText("body"),
    };
    if (received) rec.receipt = received.attrs.id;
    emit(rec);
    if (st.getChild("request", "urn:xmpp:receipts") && st.attrs.id) {
      xmpp
        .send(
          xml(
            "message",
            { to: st.attrs.from, id: `rcpt-${st.attrs.id}` },
            xml("received", { xmlns: "urn:xmpp:receipts", id: st.attrs.id }),
          ),
        )
        .catch((e) => emit({ event: "xmpp_error", message: String(e) }));
    }
  });
  const online = new Promise((resolve) => xmpp.once("online", resolve));
  await xmpp.start();
  const jid = await online;
  await xmpp.send(xml("presence"));
  emit({ event: "xmpp_online", jid: jid.toString() });
}

async function xmppSend(c) {
  await xmpp.send(
    xml(
      "message",
      { to: c.to, type: "chat", id: c.id },
      xml("body", {}, c.body),
      xml("request", { xmlns: "urn:xmpp:receipts" }),
    ),
  );
  emit({ event: "xmpp_sent", id: c.id });
}

const ops = {
  browser: startBrowser,
  browser_send: browserSend,
  converse: startConverse,
  converse_call: converseCall,
  converse_wait: converseWait,
  page_text: pageText,
  screenshot: async (c) => {
    await page.screenshot({ path: c.path, fullPage: true });
    emit({ event: "screenshot", path: c.path });
  },
  xmpp: startXmpp,
  xmpp_send: xmppSend,
};

let closing = false;
async function shutdown(code) {
  if (closing) return;
  closing = true;
  const steps = [];
  if (xmpp) steps.push(xmpp.stop().catch(() => {}));
  if (browser) steps.push(browser.close().catch(() => {}));
  if (server) steps.push(new Promise((r) => server.close(r)));
  const bound = new Promise((r) => setTimeout(r, 5000).unref());
  await Promise.race([Promise.all(steps), bound]);
  process.exit(code);
}

setTimeout(() => {
  emit({ event: "error", op: "lifetime", message: `agent lifetime of ${LIFETIME_S}s is over` });
  shutdown(2);
}, LIFETIME_S * 1000).unref();

const rl = createInterface({ input: process.stdin });
// Commands run one after another, in the order they came.
let chain = Promise.resolve();
rl.on("line", (line) => {
  chain = chain.then(async () => {
    let c;
    try {
      c = JSON.parse(line);
    } catch {
      emit({ event: "error", op: null, message: `not JSON: ${line}` });
      return;
    }
    const op = ops[c.op];
    if (!op) {
      emit({ event: "error", op: c.op, message: "unknown op" });
      return;
    }
    try {
      await op(c);
    } catch (e) {
      emit({ event: "error", op: c.op, message: String(e && e.stack ? e.stack : e) });
    }
  });
});
rl.on("close", () => chain.then(() => shutdown(0)));
emit({ event: "ready" });
