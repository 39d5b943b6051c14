// A TLS front for atcr in tests, standing in for the appliance's Caddy: terminates HTTPS
// with the test certificate and forwards to atcr's plain-HTTP listener, adding
// X-Forwarded-Proto: https and X-Forwarded-For. Bodies stream both ways.
//   node tls-front.mjs LISTEN_HOST:PORT UPSTREAM_URL CERT.pem KEY.pem
import fs from "node:fs";
import http from "node:http";
import https from "node:https";

const [listen, upstream, cert, key] = process.argv.slice(2);
if (!listen || !upstream || !cert || !key) {
  console.error("usage: node tls-front.mjs HOST:PORT http://127.0.0.1:PORT cert.pem key.pem");
  process.exit(2);
}
const i = listen.lastIndexOf(":");
const [host, port] = [listen.slice(0, i), Number(listen.slice(i + 1))];
const up = new URL(upstream);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

const server = https.createServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key) },
  (req, res) => {
    const headers = { ...req.headers };
    headers["x-forwarded-proto"] = "https";
    const client = (req.socket.remoteAddress || "").replace(/^::ffff:/, "");
    headers["x-forwarded-for"] = headers["x-forwarded-for"]
      ? `${headers["x-forwarded-for"]}, ${client}`
      : client;
    const p = http.request(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers, agent },
      (r) => {
        res.writeHead(r.statusCode, r.statusMessage, r.rawHeaders);
        r.pipe(res);
      },
    );
    p.on("error", (e) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(`tls-front: ${e.message}\n`);
    });
    req.pipe(p);
  },
);
server.listen(port, host, () => console.error(`tls-front: https://${listen} -> ${upstream}`));
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
