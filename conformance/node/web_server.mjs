// A tiny static server for the web demo (examples/web): index.html and
// app.js from examples/web, mqtt.min.js from the installed `mqtt` package
// (scripts/node-deps.sh); and the Converse.js page: converse/index.html and
// converse/probe.js under /converse/, the installed `converse.js` package's
// prebuilt dist/ under /converse/dist/. GET/HEAD only, on the loopback
// address. The browser conformance test uses `serveWeb`; by hand:
//   node conformance/node/web_server.mjs [port]   (default 8000)
import http from "node:http";
import { readFile } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.join(here, "..", "..", "examples", "web");
const FILES = {
  "/": [path.join(web, "index.html"), "text/html; charset=utf-8"],
  "/index.html": [path.join(web, "index.html"), "text/html; charset=utf-8"],
  "/app.js": [path.join(web, "app.js"), "text/javascript; charset=utf-8"],
  "/mqtt.min.js": [
    path.join(here, "node_modules", "mqtt", "dist", "mqtt.min.js"),
    "text/javascript; charset=utf-8",
  ],
};
const converseDir = path.join(here, "converse");
const converseDist = path.join(here, "node_modules", "converse.js", "dist");
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
};

/** The file (and its type) a /converse/ path names, or undefined. */
function converseFile(pathname) {
  let base;
  let rel;
  if (pathname === "/converse/" || pathname === "/converse/index.html") {
    [base, rel] = [converseDir, "index.html"];
  } else if (pathname === "/converse/probe.js") {
    [base, rel] = [converseDir, "probe.js"];
  } else if (pathname.startsWith("/converse/dist/")) {
    [base, rel] = [converseDist, decodeURIComponent(pathname.slice("/converse/dist/".length))];
  } else {
    return undefined;
  }
  const file = path.resolve(base, rel);
  if (!file.startsWith(base + path.sep)) return undefined;
  return [file, TYPES[path.extname(file)] || "application/octet-stream"];
}

/** Serve the demo on 127.0.0.1:`port` (0 picks one); resolves with the server. */
export function serveWeb(port = 0) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://localhost");
    let file;
    try {
      file = FILES[url.pathname] || converseFile(url.pathname);
    } catch {
      file = undefined;
    }
    if (!file || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    try {
      const body = await readFile(file[0]);
      res.writeHead(200, { "content-type": file[1], "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" }).end(`${e.code || e.message}\n`);
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = await serveWeb(Number(process.argv[2] || 8000));
  console.log(`web demo on http://127.0.0.1:${server.address().port}/`);
}
