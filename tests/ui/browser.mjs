// Drives headless Debian chromium through the atcr web UI (playwright-core, no bundled
// browser). Run by tests/ui/browser.sh, which starts the reference PDS + PLC and atcr,
// pushes the images and passes everything in the environment:
//   BASE, HOST (host:port in pull commands), ALICE, ALICE_PW, BOB, ORPHAN (digest of an
//   unreferenced blob), OUT (screenshot directory), STATE (cookie file between runs),
//   SCAN_V2 (digest of bob.test/scanned:v2, the scanner's Debian-style image).
// `node browser.mjs` runs the flow and the screenshot matrix; `node browser.mjs pds-down`
// checks the pages that must explain a PDS outage (the script stops the PDS first).
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing env ${k}`);
  return v;
};
const BASE = env("BASE");
const OUT = env("OUT");
const STATE = env("STATE");
const mode = process.argv[2] || "flow";

let passed = 0;
let failed = 0;
const problems = [];
function ok(what) {
  passed++;
  console.log(`  ok   ${what}`);
}
function bad(what, e) {
  failed++;
  problems.push(what);
  console.log(`  FAIL ${what}: ${e && e.message ? e.message.split("\n")[0] : e}`);
}
let currentPage = null;
async function check(what, fn) {
  try {
    await fn();
    ok(what);
  } catch (e) {
    bad(what, e);
    if (currentPage) {
      const f = path.join(OUT, `FAILED-${failed}.png`);
      await currentPage.screenshot({ path: f, fullPage: true }).catch(() => {});
      console.log(`       page ${currentPage.url()} -> ${f}`);
    }
  }
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});

const consoleErrors = [];
async function newPage(width, scheme, storage) {
  const ctx = await browser.newContext({
    viewport: { width, height: width < 600 ? 844 : 900 },
    colorScheme: scheme,
    acceptDownloads: true,
    storageState: storage,
  });
  ctx.setDefaultTimeout(10000);
  const page = await ctx.newPage();
  page.on("console", (m) => {
    // Error statuses (404 pages, refused logins) are expected; script and CSP errors are not.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      consoleErrors.push(`${page.url()}: ${m.text()}`);
    }
  });
  currentPage = page;
  page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
  return { ctx, page };
}

async function shot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** No horizontal scrolling of the page itself (tables scroll inside their wrapper). */
async function fitsWidth(page) {
  const [sw, cw] = await page.evaluate(() => [
    document.documentElement.scrollWidth,
    document.documentElement.clientWidth,
  ]);
  expect(sw <= cw + 1, `page is ${sw}px wide in a ${cw}px viewport`);
}

// ---- newcomer (issue 22) helpers ----
/** Every size cell is one line (never broken between number and unit). */
async function sizesOnOneLine(page) {
  const broken = await page.evaluate(() =>
    [...document.querySelectorAll("td.size .nowrap, td.size.nowrap")]
      .filter((e) => e.getClientRects().length !== 1 || e.getBoundingClientRect().height > 2 * parseFloat(getComputedStyle(e).lineHeight || "20"))
      .map((e) => e.textContent),
  );
  expect(broken.length === 0, `sizes broken across lines: ${broken.join(", ")}`);
}

if (mode === "flow") {
  const ALICE = env("ALICE");
  const ALICE_PW = env("ALICE_PW");
  const BOB = env("BOB");
  const HOST = env("HOST");
  const ORPHAN = env("ORPHAN");
  const t0 = Date.now();
  const { ctx, page } = await newPage(1280, "light");

  console.log("== find and inspect an image (anonymous)");
  await check("home lists recent pushes by alice", async () => {
    await page.goto(`${BASE}/`);
    await page.getByRole("heading", { name: "Recent pushes" }).waitFor();
    expect((await page.locator("article.card").count()) > 0, "no cards");
    expect((await page.content()).includes(`${ALICE}/`), "alice's repos missing");
  });
  await check("search from the header, then page with htmx", async () => {
    await page.fill("#top-q", "app");
    await page.press("#top-q", "Enter");
    await page.waitForURL(/\/search\?q=app/);
    const first = await page.locator("#results article.card").count();
    expect(first === 10, `first page has ${first} results, want 10`);
    const url = page.url();
    await page.getByRole("link", { name: "More results" }).click();
    await page.waitForFunction(() => document.querySelectorAll("#results article.card").length > 10);
    const all = await page.locator("#results article.card").count();
    expect(all === 11, `after paging ${all} results, want 11 (app01..app11)`);
    expect(page.url() === url, "paging must not navigate");
    expect((await page.getByRole("link", { name: "More results" }).count()) === 0, "no further page");
  });
  await check("search filter by owner (htmx form) shows the empty state", async () => {
    await page.fill("input[name=owner]", BOB);
    await page.getByRole("button", { name: "Search", exact: true }).click();
    await page.getByText("No images match").waitFor();
    await page.fill("input[name=owner]", ALICE);
    await page.getByRole("button", { name: "Search", exact: true }).click();
    await page.waitForFunction(() => document.querySelectorAll("#results article.card").length === 10);
  });
  await check("repository page: multi-arch badges, pull command, sizes", async () => {
    await page.goto(`${BASE}/search?q=multi`);
    await page.getByRole("link", { name: `${ALICE}/multi` }).click();
    await page.waitForURL(new RegExp(`/r/${ALICE}/multi$`));
    const pull = await page.locator("#pull-cmd").textContent();
    expect(pull === `docker pull ${HOST}/${ALICE}/multi:v1`, `pull command: ${pull}`);
    await page.locator(".badge", { hasText: "linux/amd64" }).first().waitFor();
    await page.locator(".badge", { hasText: "linux/arm64" }).first().waitFor();
    expect(/\d+(\.\d)? (B|KiB|MiB)/.test(await page.locator("tbody").textContent()), "no size");
  });
  await check("manifest detail: platforms, then layers and build history", async () => {
    await page.locator("td.digest a").first().click();
    await page.getByRole("heading", { name: "Platforms" }).waitFor();
    await page.locator("td.digest a").first().click();
    await page.getByRole("heading", { name: "Layers" }).waitFor();
    const hist = await page.locator("pre").first().textContent();
    expect(hist.includes("e2e layer 0"), `history: ${hist}`);
    expect((await page.locator("table").first().locator("tbody tr").count()) >= 2, "layers");
  });

  console.log("== scan results (bob.test/scanned: v1 Alpine-style, v2 Debian-style)");
  const SCAN_V2 = env("SCAN_V2");
  const SCANNED = `${BOB}/scanned`;
  await check("repository page: a severity badge per tag once the hold scanned them", async () => {
    const deadline = Date.now() + 30000;
    for (;;) {
      await page.goto(`${BASE}/r/${SCANNED}`);
      // v1, v2 and the cosign signature's tag (skipped: not a container image).
      if ((await page.locator("tbody tr .sev").count()) === 3 && !(await page.locator(".sev-pending").count())) break;
      if (Date.now() > deadline) throw new Error("the tags never got their badges");
      await page.waitForTimeout(500);
    }
    const v2 = page.locator("tbody tr", { hasText: "v2" }).locator(".sev");
    expect((await v2.textContent()).trim() === "2 critical +3", `v2 badge: ${await v2.textContent()}`);
    expect((await v2.getAttribute("class")).includes("sev-critical"), "v2 badge class");
    expect((await v2.getAttribute("title")) === "2 critical, 0 high, 2 medium, 1 low, 0 unknown", "v2 badge title");
    const v1 = page.locator("tbody tr", { hasText: "v1" }).locator(".sev");
    expect((await v1.textContent()).trim() === "1 medium +2", `v1 badge: ${await v1.textContent()}`);
    const sig = page.locator("tbody tr", { hasText: ".sig" }).locator(".sev");
    expect((await sig.textContent()).trim() === "not scanned", `signature badge: ${await sig.textContent()}`);
  });
  await check("manifest page: vulnerabilities with ids, packages, fixed versions and links", async () => {
    await page.locator("tbody tr", { hasText: "v2" }).locator("td.digest a").click();
    await page.getByRole("heading", { name: "Vulnerabilities" }).waitFor();
    const rows = page.locator("table.vulns tbody tr");
    expect((await rows.count()) === 5, `rows: ${await rows.count()}`);
    const first = await rows.first().textContent();
    for (const want of ["critical", "CVE-2099-1001", "libssl3", "3.0.19-1~deb12u2", "3.0.20-1~deb12u1"]) {
      expect(first.includes(want), `first row lacks ${want}: ${first}`);
    }
    const link = rows.first().getByRole("link", { name: "CVE-2099-1001" });
    expect((await link.getAttribute("href")) === "https://security-tracker.debian.org/tracker/CVE-2099-1001", "advisory link");
    expect((await rows.last().textContent()).includes("no fix yet"), "unfixed vulnerabilities say so");
    expect((await page.locator(".sev-count.sev-critical").textContent()).trim() === "2 critical", "counts");
    expect((await page.getByRole("button", { name: "Rescan" }).count()) === 0, "anonymous visitors cannot rescan");
    await shot(page, "scan-manifest-1280-light");
  });
  await check("referrers recognised: an SPDX SBOM (OCI referrer) and a cosign signature (tag)", async () => {
    await page.locator(".badge.kind-sbom", { hasText: "SBOM (SPDX)" }).waitFor();
    await page.locator(".badge.kind-sig", { hasText: "Signature (cosign)" }).waitFor();
  });
  await check("SBOM: every package with its licence, then filtered", async () => {
    await page.getByRole("link", { name: "Packages (SBOM)" }).click();
    await page.getByRole("heading", { name: "Packages" }).waitFor();
    const rows = page.locator("#packages tbody tr");
    expect((await rows.count()) === 8, `packages: ${await rows.count()}`);
    const zlib = await rows.filter({ hasText: "zlib1g" }).textContent();
    expect(zlib.includes("Zlib") && zlib.includes("1:1.2.13.dfsg-1"), `zlib1g row: ${zlib}`);
    expect((await rows.filter({ hasText: "six" }).last().textContent()).includes("installed by python3-six"), "ownership");
    await page.fill("#pkg-q", "lib");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/\/sbom\?q=lib/);
    const names = await page.locator("#packages tbody tr td:first-child strong").allTextContents();
    expect(JSON.stringify(names) === JSON.stringify(["libc6", "libexpat1", "libssl3", "zlib1g"]), `filtered: ${names}`);
    expect((await page.locator("#pkg-count").textContent()).includes("4 of 8"), "count line");
    await shot(page, "scan-sbom-1280-light");
  });
  await check("compare two tags: packages and vulnerabilities added and removed", async () => {
    await page.goto(`${BASE}/r/${SCANNED}`);
    const form = page.locator("form.compare");
    await form.locator("select[name=a]").selectOption("v1");
    await form.locator("select[name=b]").selectOption("v2");
    await form.getByRole("button", { name: "Compare" }).click();
    await page.waitForURL(/\/compare\/bob\.test\/scanned\?a=v1&b=v2/);
    await page.getByRole("heading", { name: "Vulnerabilities added (5)" }).waitFor();
    await page.getByRole("heading", { name: "Vulnerabilities removed (3)" }).waitFor();
    const pkgs = await page.locator("section", { has: page.getByRole("heading", { name: "Packages" }) }).textContent();
    expect(pkgs.includes("libexpat1") && pkgs.includes("busybox"), "package changes");
    expect((await page.locator("tr.added").count()) === 8 && (await page.locator("tr.removed").count()) === 8, "8 added, 8 removed");
    await shot(page, "scan-compare-1280-light");
  });
  await check("search: only images with critical vulnerabilities", async () => {
    await page.goto(`${BASE}/search`);
    await page.locator("input[name=critical]").check();
    await page.getByRole("button", { name: "Search", exact: true }).click();
    await page.waitForFunction(() => document.querySelectorAll("#results article.card").length === 1);
    await page.getByRole("link", { name: SCANNED }).waitFor();
    expect(page.url().includes("critical=1"), `url: ${page.url()}`);
  });

  // ---- newcomer (issue 22): the UI gaps ------------------------------------------------
  console.log("== newcomer: platforms, sizes, long strings, manifest details, cards, favicon");
  const LONG_TAG = env("LONG_TAG");
  const LONG_VALUE = env("LONG_VALUE");
  await check("single-platform images show their platform from the image config", async () => {
    await page.goto(`${BASE}/r/${ALICE}/app01`);
    await page.locator("tbody .badge", { hasText: "linux/amd64" }).first().waitFor();
    await page.goto(`${BASE}/r/${ALICE}/armonly`);
    await page.locator("tbody .badge", { hasText: "linux/arm64" }).first().waitFor();
    expect((await page.locator("tbody .badge", { hasText: "amd64" }).count()) === 0, "armonly shows amd64");
  });
  await check("the search's architecture filter finds single-platform images", async () => {
    await page.goto(`${BASE}/search`);
    await page.locator("select[name=arch]").selectOption("arm64");
    await page.getByRole("button", { name: "Search", exact: true }).click();
    await page.locator("#results").getByRole("link", { name: `${ALICE}/armonly` }).waitFor();
    const names = await page.locator("#results article.card h3").allTextContents();
    expect(names.some((n) => n.includes("/multi")), `the index is missing: ${names}`);
    expect(!names.some((n) => n.includes("/app01")), `amd64-only app01 listed for arm64: ${names}`);
  });
  await check("tag rows say what their size means; an index's children show image sizes", async () => {
    await page.goto(`${BASE}/r/${ALICE}/app01`);
    const single = await page.locator("tbody td.size").first().textContent();
    expect(/KiB\s*compressed/.test(single), `single image size cell: ${single}`);
    const header = await page.locator("thead th", { hasText: "Size" }).getAttribute("title");
    expect(header && header.includes("config + layers"), `size header title: ${header}`);
    await page.goto(`${BASE}/r/${ALICE}/multi`);
    const multi = await page.locator("tbody td.size").first().textContent();
    expect(/KiB\s*each of 2 platforms, compressed/.test(multi), `index size cell: ${multi}`);
    await page.locator("td.digest a").first().click();
    await page.getByRole("heading", { name: "Platforms" }).waitFor();
    const cells = await page.locator("section:has(#plat-h) tbody td.size").allTextContents();
    expect(cells.length === 2, `children: ${cells.length}`);
    for (const c of cells) {
      // "2.1 KiB  manifest 480 B": the image, not the child manifest's own bytes.
      const m = c.match(/^\s*([\d.]+) (B|KiB|MiB)\s*manifest (\d+) B/);
      expect(m && m[2] !== "B", `child size cell: ${c}`);
    }
  });
  await check("digests are shortened with a copy control that copies the full digest", async () => {
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    await page.goto(`${BASE}/r/${ALICE}/app01`);
    const link = page.locator("td.mono.digest a").first();
    const shown = await link.textContent();
    const full = await link.getAttribute("title");
    expect(/^sha256:[0-9a-f]{12}$/.test(shown) && full.startsWith(shown) && full.length === 71, `${shown} / ${full}`);
    const copy = page.locator("td.mono.digest button.copy").first();
    await copy.click();
    await page.waitForFunction(() => document.querySelector("td.mono.digest button.copy").textContent === "Copied");
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    expect(clip === full, `clipboard holds ${clip}`);
  });
  let configuredManifest = null;
  await check("manifest page: image config, pull by digest, tags, source link", async () => {
    await page.goto(`${BASE}/r/${ALICE}/configured`);
    await page.locator("td.digest a").first().click();
    await page.locator("#image-config").waitFor();
    configuredManifest = new URL(page.url()).pathname;
    const digest = decodeURIComponent(configuredManifest.split("/manifests/")[1]);
    const dl = await page.locator("#image-config").innerText();
    for (const want of ['["/bin/hello"]', '["--port","8080"]', "MODE=demo", "PATH=/usr/bin", "8080/tcp", "app", "/srv", "org.example.team", "tools"]) {
      expect(dl.includes(want), `image config lacks ${want}: ${dl}`);
    }
    for (const term of ["Entrypoint", "Cmd", "Env", "Exposed ports", "User", "Working dir", "Labels"]) {
      expect((await page.locator("#image-config dt", { hasText: term }).count()) === 1, `no ${term}`);
    }
    const byDigest = await page.locator("#pull-digest code").textContent();
    expect(byDigest === `docker pull ${HOST}/${ALICE}/configured@${digest}`, `pull by digest: ${byDigest}`);
    await page.locator("#manifest-tags a.badge", { hasText: "v1" }).waitFor();
    expect((await page.locator("#source-link").getAttribute("href")) === "https://example.com/atcr/configured", "source link");
    const annLink = page.locator("table.annotations a[href='https://example.com/atcr/configured']");
    expect((await annLink.count()) === 1, "the source annotation is a link in the table");
    expect((await page.locator("h1.digest-head .mono").textContent()) === digest.slice(0, 19), "h1 shows the short digest");
  });
  await check("repository cards show the description, not the README's first heading", async () => {
    await page.goto(`${BASE}/search?q=app01`);
    const card = page.locator("#results article.card", { has: page.getByRole("link", { name: `${ALICE}/app01` }) });
    const text = await card.locator("p").first().textContent();
    expect(text === "Run it with docker run app01.", `app01 card: ${text}`);
    await page.goto(`${BASE}/search?q=configured`);
    const c2 = await page.locator("#results article.card p").first().textContent();
    expect(c2 === "A configured test image", `configured card (description annotation): ${c2}`);
  });
  await check("/r/<owner> goes to /u/<owner>", async () => {
    await page.goto(`${BASE}/r/${ALICE}`);
    expect(new URL(page.url()).pathname === `/u/${ALICE}`, page.url());
    await page.getByRole("heading", { name: "Repositories" }).waitFor();
  });
  await check("a favicon: linked from every page and at /favicon.ico", async () => {
    await page.goto(`${BASE}/`);
    const href = await page.locator("link[rel=icon]").getAttribute("href");
    const svg = await page.request.get(`${BASE}${href}`);
    expect(svg.status() === 200 && svg.headers()["content-type"] === "image/svg+xml", `svg ${svg.status()}`);
    const ico = await page.request.get(`${BASE}/favicon.ico`);
    expect(ico.status() === 200 && ico.headers()["content-type"] === "image/vnd.microsoft.icon", `ico ${ico.status()}`);
  });
  await check("no horizontal overflow at 390 px from long tags, annotation values, search strings, digests", async () => {
    const { ctx: c, page: p } = await newPage(390, "light");
    const longQuery = "x".repeat(200);
    for (const url of [
      `/r/${ALICE}/longtag`,
      configuredManifest,
      `/search?q=${longQuery}`,
      `/r/${ALICE}/multi`,
    ]) {
      await p.goto(`${BASE}${url}`);
      await fitsWidth(p);
      await sizesOnOneLine(p);
    }
    await p.goto(`${BASE}/r/${ALICE}/longtag`);
    expect((await p.locator("strong.tag").first().textContent()) === LONG_TAG, "long tag shown whole");
    const tagBox = await p.locator("strong.tag").first().boundingBox();
    expect(tagBox.width <= 390, `tag is ${tagBox.width}px wide`);
    await p.goto(`${BASE}${configuredManifest}`);
    const cell = p.locator("table.annotations td", { hasText: LONG_VALUE.slice(0, 40) });
    const box = await cell.boundingBox();
    expect(box.x + box.width <= 391, `annotation value cell ends at ${box.x + box.width}px`);
    await shot(p, "newcomer-long-strings-390-light");
    await c.close();
  });
  console.log("== log in and star");
  await check("README from an io.atcr.repo.page record written to the PDS: rendered markdown, raw HTML as text", async () => {
    // browser.sh put the record straight into alice's PDS; it reaches the index through the
    // firehose, so give it a few seconds.
    const deadline = Date.now() + 15000;
    for (;;) {
      await page.goto(`${BASE}/r/${ALICE}/app01`);
      if (await page.locator(".readme h1").count()) break;
      if (Date.now() > deadline) throw new Error("the README never showed up");
      await page.waitForTimeout(500);
    }
    expect((await page.locator(".readme h1").textContent()) === "App one", "heading");
    expect((await page.locator(".readme code").first().textContent()) === "docker run app01", "code span");
    expect((await page.locator(".readme li").count()) === 2, "list items");
    expect((await page.locator(".readme script, .readme img").count()) === 0, "raw HTML became elements");
    const text = await page.locator(".readme").textContent();
    expect(text.includes("<script>alert(1)</script>"), `raw HTML not shown as text: ${text}`);
    expect((await page.locator(".readme a[href^=javascript]").count()) === 0, "javascript: link kept");
    await shot(page, "repo-readme-1280-light");
  });
  await check("wrong app password is refused with a message", async () => {
    await page.goto(`${BASE}/r/${ALICE}/app01`);
    await page.getByRole("link", { name: "Log in to star" }).click();
    await page.fill("input[name=identifier]", ALICE);
    await page.fill("input[name=password]", "wrong-password");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("Wrong handle or app password").waitFor();
  });
  await check("login with handle + app password returns to the repository", async () => {
    await page.fill("input[name=password]", ALICE_PW);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(new RegExp(`/r/${ALICE}/app01$`));
    await page.getByRole("button", { name: "Log out" }).waitFor();
  });
  await check("star the repository (record in the PDS, count 1)", async () => {
    await page.getByRole("button", { name: /Star/ }).click();
    await page.getByRole("button", { name: /Unstar/ }).waitFor();
    const n = await page.locator("#star-count").textContent();
    expect(n.includes("1 star"), `count: ${n}`);
  });
  await check("user page lists the star", async () => {
    await page.goto(`${BASE}/u/${ALICE}`);
    await page.getByRole("heading", { name: "Starred" }).waitFor();
    const starred = page.locator("section", { has: page.getByRole("heading", { name: "Starred" }) });
    await starred.getByRole("link", { name: `${ALICE}/app01` }).waitFor();
  });
  await check("user page shows the Bluesky avatar, served from this host", async () => {
    const ALICE_DID = env("ALICE_DID");
    const img = page.locator("h1 img.avatar");
    await img.waitFor();
    expect((await img.getAttribute("src")) === `/avatar/${ALICE_DID}`, "avatar src");
    const size = await img.evaluate((el) => [el.complete, el.naturalWidth, el.naturalHeight]);
    expect(size[0] && size[1] === 64 && size[2] === 64, `avatar decoded as ${size}`);
    const r = await page.request.get(`${BASE}/avatar/${ALICE_DID}`);
    expect(r.status() === 200 && r.headers()["content-type"] === "image/png", `avatar response ${r.status()}`);
    expect(r.headers()["x-content-type-options"] === "nosniff", "nosniff");
    const again = await page.request.get(`${BASE}/avatar/${ALICE_DID}`, { headers: { "if-none-match": r.headers()["etag"] } });
    expect(again.status() === 304, `revalidation gave ${again.status()}`);
    const none = await page.request.get(`${BASE}/avatar/did:plc:nobodynobodynobodynobody`);
    expect(none.status() === 404, `unknown DID gave ${none.status()}`);
  });
  await check("unstar and star again", async () => {
    await page.goto(`${BASE}/r/${ALICE}/app01`);
    await page.getByRole("button", { name: /Unstar/ }).click();
    await page.getByRole("button", { name: /☆ Star/ }).waitFor();
    expect((await page.locator("#star-count").textContent()).includes("0 stars"), "count 0");
    await page.getByRole("button", { name: /☆ Star/ }).click();
    await page.getByRole("button", { name: /Unstar/ }).waitFor();
  });
  await check("settings: default hold and JSON export with the star record", async () => {
    await page.goto(`${BASE}/settings`);
    await page.getByText("did:web:").first().waitFor();
    const [dl] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("button", { name: "Export as JSON" }).click(),
    ]);
    const file = path.join(OUT, "export.json");
    await dl.saveAs(file);
    const doc = JSON.parse(fs.readFileSync(file, "utf8"));
    const stars = doc.collections["io.atcr.sailor.star"];
    expect(stars.length === 1, `stars in export: ${stars.length}`);
    expect(stars[0].value.subject.endsWith("/io.atcr.repo.page/app01"), stars[0].value.subject);
    // app01..app11 share one image, so one manifest record; plus the multi-arch index.
    expect(doc.collections["io.atcr.manifest"].length >= 2, "manifests in export");
    // 12 from the first pushes, 3 more for the newcomer checks (armonly, longtag, configured).
    expect(doc.collections["io.atcr.tag"].length === 15, "tags in export");
  });
  await check("settings lists the signed-in browsers; signing out the other one ends its session", async () => {
    const FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";
    const other = await browser.newContext({ userAgent: FIREFOX });
    other.setDefaultTimeout(10000);
    const op = await other.newPage();
    await op.goto(`${BASE}/login`);
    await op.fill("input[name=identifier]", ALICE);
    await op.fill("input[name=password]", ALICE_PW);
    await op.getByRole("button", { name: "Log in" }).click();
    await op.getByRole("button", { name: "Log out" }).waitFor();
    await page.goto(`${BASE}/settings`);
    const section = page.locator("section", { has: page.getByRole("heading", { name: "Signed-in browsers" }) });
    const rows = section.locator("tbody tr");
    expect((await rows.count()) === 2, `sessions listed: ${await rows.count()}`);
    const mine = await rows.filter({ hasText: "this browser" }).textContent();
    // Human-readable names; the raw User-Agent stays in the title.
    expect(/Chrome \d+ on Linux/.test(mine), `this browser's row: ${mine}`);
    const theirs = rows.filter({ hasText: "Firefox 121 on Windows" });
    expect((await theirs.locator(".browser").getAttribute("title")) === FIREFOX, "raw User-Agent in the title");
    await theirs.getByRole("button", { name: "Sign out" }).click();
    await page.getByText("Signed out 1 session.").waitFor();
    expect((await rows.count()) === 1, "the other session is still listed");
    await shot(page, "settings-sessions-1280-light");
    await op.goto(`${BASE}/settings`);
    await op.waitForURL(/\/login\?next=\/settings/);
    await other.close();
  });
  await check("theme toggle switches to dark and survives a reload", async () => {
    await page.getByRole("button", { name: "Toggle dark mode" }).click();
    expect((await page.locator("html").getAttribute("data-theme")) === "dark", "not dark");
    await page.reload();
    expect((await page.locator("html").getAttribute("data-theme")) === "dark", "not dark after reload");
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bg === "rgb(13, 17, 23)", `background ${bg}`);
    // Flipping back to the system's (light, emulated) scheme drops the override: the page
    // follows the system again, also after a reload.
    await page.getByRole("button", { name: "Toggle dark mode" }).click();
    expect((await page.locator("html").getAttribute("data-theme")) === null, "override kept");
    const bgLight = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bgLight !== "rgb(13, 17, 23)", `still dark: ${bgLight}`);
    expect((await page.evaluate(() => localStorage.getItem("atcr-theme"))) === null, "localStorage kept");
    await page.reload();
    expect((await page.locator("html").getAttribute("data-theme")) === null, "override back after reload");
    await page.emulateMedia({ colorScheme: "dark" });
    const bgSys = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bgSys === "rgb(13, 17, 23)", `does not follow a dark system: ${bgSys}`);
    await page.emulateMedia({ colorScheme: "light" });
  });

  console.log("== hold admin");
  await check("logout; /admin asks for a captain login; bob is refused", async () => {
    await page.goto(`${BASE}/install`);
    if (await page.getByRole("button", { name: "Log out" }).count()) {
      await page.getByRole("button", { name: "Log out" }).click();
      await page.getByRole("link", { name: "Log in" }).waitFor();
    }
    await page.goto(`${BASE}/admin`);
    await page.waitForURL(/\/admin\/login/);
    await page.fill("input[name=identifier]", BOB);
    await page.fill("input[name=password]", "whatever");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("is not this hold's captain").waitFor();
  });
  await check("captain logs in to the admin panel", async () => {
    await page.fill("input[name=identifier]", ALICE);
    await page.fill("input[name=password]", ALICE_PW);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(/\/admin$/);
    // The hold admits all crew: bob's first push (the scanned images) enrolled him.
    await page.getByRole("heading", { name: /Crew \(2\)/ }).waitFor();
  });
  await check("remove bob, enrolled by his first push (allow all crew)", async () => {
    await page.getByRole("link", { name: "Remove…" }).click();
    await page.getByRole("heading", { name: "Remove crew member?" }).waitFor();
    await page.getByRole("button", { name: `Remove ${BOB}` }).click();
    await page.getByText(/^Removed /).waitFor();
    await page.getByRole("heading", { name: /Crew \(1\)/ }).waitFor();
  });
  await check("add bob by handle as write crew with a tier", async () => {
    const add = page.locator("form[action='/admin/crew/add']");
    await add.locator("input[name=member]").fill(BOB);
    await add.locator("select[name=role]").selectOption("write");
    await page.locator("form[action='/admin/crew/add'] input[name=tier]").fill("deckhand");
    await page.getByRole("button", { name: "Add", exact: true }).click();
    await page.getByText(`Added ${BOB} as write.`).waitFor();
    await page.getByRole("heading", { name: /Crew \(2\)/ }).waitFor();
  });
  await check("bob, write crew now, pushes an image (newcomer: data of a later non-member)", async () => {
    const { execFileSync } = await import("node:child_process");
    execFileSync("skopeo", ["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", `${BOB}:${env("BOB_PW")}`,
      `oci:${env("IMG_LAYOUT")}:v1`, `docker://${HOST}/${BOB}/tools:v1`], { stdio: "pipe" });
  });
  await check("edit bob: drop write, set tier bosun", async () => {
    const form = page.getByRole("form", { name: `Permissions of ${BOB}` });
    await form.getByLabel("write").uncheck();
    await form.getByLabel("Tier").fill("bosun");
    await form.getByRole("button", { name: "Save" }).click();
    await page.getByText(/^Saved /).waitFor();
    const again = page.getByRole("form", { name: `Permissions of ${BOB}` });
    expect(!(await again.getByLabel("write").isChecked()), "write still checked");
    expect(await again.getByLabel("read").isChecked(), "read lost");
    expect((await again.getByLabel("Tier").inputValue()) === "bosun", "tier");
  });
  await check("remove bob after the confirmation page", async () => {
    await page.getByRole("link", { name: "Remove…" }).click();
    await page.getByRole("heading", { name: "Remove crew member?" }).waitFor();
    await shot(page, "admin-remove-confirm-1280-light");
    await page.getByRole("button", { name: `Remove ${BOB}` }).click();
    await page.getByText(/^Removed /).waitFor();
    await page.getByRole("heading", { name: /Crew \(1\)/ }).waitFor();
  });
  await check("admin counts are labelled; non-crew users marked; handles next to DIDs; the hold's name", async () => {
    const ALICE_DID = env("ALICE_DID");
    const crewCount = await page.locator(".crew-count").first().textContent();
    expect(/^\d+ (layers|blobs)$/.test(crewCount), `crew count: ${crewCount}`);
    const total = await page.locator("#storage-total").textContent();
    expect(/in \d+ blobs stored/.test(total), `storage: ${total}`);
    await page.locator("th", { hasText: "Blobs in their repositories" }).waitFor();
    const storage = page.locator("section", { has: page.getByRole("heading", { name: "Storage" }) });
    const bobRow = storage.locator("tbody tr", { hasText: BOB });
    await bobRow.locator(".badge", { hasText: "not crew" }).waitFor();
    const aliceRow = storage.locator("tbody tr", { hasText: ALICE });
    expect((await aliceRow.locator(".badge", { hasText: "not crew" }).count()) === 0, "the captain marked as not crew");
    expect((await aliceRow.textContent()).includes(ALICE_DID), "alice's DID next to her handle");
    const holdName = await page.locator(".hold-name").textContent();
    // did:web:localhost%3A<port> reads as the host it names.
    expect(holdName === HOST, `hold name: ${holdName}`);
    await shot(page, "admin-counts-1280-light");
  });
  await check("toggle allowAllCrew in the captain record", async () => {
    const box = page.locator("input[name=allowAllCrew]");
    const before = await box.isChecked();
    await box.setChecked(!before);
    await page.getByRole("button", { name: "Save settings" }).click();
    await page.getByText("Settings saved.").waitFor();
    expect((await page.locator("input[name=allowAllCrew]").isChecked()) === !before, "not toggled");
  });
  await check("GC preview lists the orphan blob, the run deletes it", async () => {
    await page.getByRole("link", { name: "Garbage collection…" }).click();
    await page.getByText(ORPHAN).waitFor();
    await shot(page, "admin-gc-preview-1280-light");
    await page.getByRole("button", { name: "Delete these blobs" }).click();
    await page.getByText(/Deleted 1 blob/).waitFor();
    await page.getByText(ORPHAN).waitFor();
    await page.goto(`${BASE}/admin/gc`);
    await page.getByText("Nothing to delete").waitFor();
  });
  await check("the captain rescans bob's image (after GC: a rescan replaces the old SBOM and report)", async () => {
    await page.goto(`${BASE}/r/${BOB}/scanned/manifests/${env("SCAN_V2")}`);
    const before = await page.locator("#scan-status").textContent();
    await page.getByRole("button", { name: "Rescan" }).click();
    await page.waitForURL(new RegExp(`/manifests/${env("SCAN_V2")}$`));
    const deadline = Date.now() + 30000;
    for (;;) {
      const t = (await page.locator("#scan-status").textContent()).trim();
      if (t === before.trim() && (await page.locator("table.vulns tbody tr").count()) === 5) break;
      if (Date.now() > deadline) throw new Error(`status stuck at ${t}`);
      await page.waitForTimeout(500);
      await page.reload();
    }
  });
  console.log(`   flow took ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // Keep alice logged in (admin) for the screenshot matrix and the PDS-down run.
  await ctx.storageState({ path: STATE });
  await ctx.close();

  console.log("== screenshots: every page at 1280 and 390 px, light and dark");
  const pages = [
    ["home", "/"],
    ["search", "/search?q=app"],
    ["repo", `/r/${ALICE}/app01`],
    ["repo-multi", `/r/${ALICE}/multi`],
    ["manifest-index", null],
    ["manifest", null],
    ["user", `/u/${ALICE}`],
    ["install", "/install"],
    ["settings", "/settings"],
    ["admin", "/admin"],
    ["admin-gc", "/admin/gc"],
    ["not-found", "/r/nobody.test/nothing"],
    ["scan-repo", `/r/${BOB}/scanned`],
    ["scan-manifest", `/r/${BOB}/scanned/manifests/${env("SCAN_V2")}`],
    ["scan-sbom", `/r/${BOB}/scanned/manifests/${env("SCAN_V2")}/sbom`],
    ["scan-compare", `/compare/${BOB}/scanned?a=v1&b=v2`],
  ];
  // newcomer (issue 22): the pages the UI-gap checks are about, in the matrix too.
  pages.push(
    ["repo-single-arm64", `/r/${ALICE}/armonly`],
    ["repo-long-tag", `/r/${ALICE}/longtag`],
    ["manifest-config", configuredManifest],
    ["search-arch", "/search?q=&arch=arm64"],
    ["search-long", `/search?q=${"x".repeat(200)}`],
  );
  // Manifest URLs come from the multi-arch repository page.
  await check("manifest URLs from the multi-arch repository page", async () => {
    const { ctx: c, page: p } = await newPage(1280, "light", STATE);
    await p.goto(`${BASE}/r/${ALICE}/multi`);
    pages[4][1] = new URL(await p.locator("td.digest a").first().getAttribute("href"), BASE).pathname;
    await p.goto(`${BASE}${pages[4][1]}`);
    pages[5][1] = new URL(await p.locator("td.digest a").first().getAttribute("href"), BASE).pathname;
    await c.close();
  });
  for (const width of [1280, 390]) {
    for (const scheme of ["light", "dark"]) {
      const { ctx: c, page: p } = await newPage(width, scheme, STATE);
      for (const [name, url] of pages.filter(([, u]) => u)) {
        await check(`${name} at ${width}px ${scheme}`, async () => {
          const resp = await p.goto(`${BASE}${url}`);
          const want = name === "not-found" ? 404 : 200;
          expect(resp.status() === want, `status ${resp.status()}`);
          await fitsWidth(p);
          await sizesOnOneLine(p);
          await shot(p, `${name}-${width}-${scheme}`);
        });
      }
      // The login form only shows logged out.
      const { ctx: c2, page: p2 } = await newPage(width, scheme);
      await check(`login at ${width}px ${scheme}`, async () => {
        await p2.goto(`${BASE}/login`);
        await fitsWidth(p2);
        await shot(p2, `login-${width}-${scheme}`);
      });
      await c2.close();
      await c.close();
    }
  }
} else if (mode === "local") {
  // newcomer (issue 22): local mode (`atcr serve --local`): pushes show like any other, and
  // every page, errors included, says that authentication is off.
  const LOCAL = env("LOCAL_BASE");
  for (const width of [1280, 390]) {
    for (const scheme of ["light", "dark"]) {
      const { ctx, page } = await newPage(width, scheme);
      await check(`local mode at ${width}px ${scheme}: the banner on every page, the push listed`, async () => {
        for (const [name, url, status] of [
          ["home", "/", 200],
          ["repo", "/r/alice/hello", 200],
          ["install", "/install", 200],
          ["login", "/login", 200],
          ["not-found", "/no/such/page", 404],
        ]) {
          const r = await page.goto(`${LOCAL}${url}`);
          expect(r.status() === status, `${url}: status ${r.status()}`);
          const banner = page.locator("#local-mode-banner");
          expect(await banner.isVisible(), `${url}: no banner`);
          expect((await banner.textContent()).includes("authentication is off"), `${url}: banner text`);
          const bg = await banner.evaluate((e) => getComputedStyle(e).backgroundColor);
          expect(bg !== "rgba(0, 0, 0, 0)", `${url}: the banner is not highlighted`);
          expect((await page.getByRole("link", { name: "Log in" }).count()) === 0, `${url}: a Log in link`);
          await fitsWidth(page);
          if (name === "home") await page.getByRole("link", { name: "alice/hello" }).first().waitFor();
          if (name === "repo") await page.locator("tbody .badge", { hasText: "linux/amd64" }).waitFor();
          if (name === "install") await page.getByText("docker import").first().waitFor();
          if (name === "login") await page.getByText("This registry runs in local mode").waitFor();
          await shot(page, `local-${name}-${width}-${scheme}`);
        }
      });
      await ctx.close();
    }
  }
} else if (mode === "pds-down") {
  const ALICE = env("ALICE");
  const { ctx, page } = await newPage(1280, "light", STATE);
  await check("settings explains that the PDS cannot be read", async () => {
    await page.goto(`${BASE}/settings`);
    await page.getByText("Your PDS could not be read").waitFor();
    await shot(page, "pds-down-settings-1280-light");
  });
  await check("unstar with the PDS down: the PDS error page", async () => {
    await page.goto(`${BASE}/r/${ALICE}/app01`);
    await page.getByRole("button", { name: /Unstar/ }).click();
    await page.getByRole("heading", { name: /A PDS did not answer/ }).waitFor();
    await shot(page, "pds-down-star-1280-light");
  });
  await check("repository pages still render from the index", async () => {
    const r = await page.goto(`${BASE}/r/${ALICE}/app01`);
    expect(r.status() === 200, `status ${r.status()}`);
  });
  await ctx.close();
  const { ctx: c2, page: p2 } = await newPage(390, "dark");
  await check("login with the PDS down says so", async () => {
    await p2.goto(`${BASE}/login`);
    await p2.fill("input[name=identifier]", ALICE);
    await p2.fill("input[name=password]", "x");
    await p2.getByRole("button", { name: "Log in" }).click();
    await p2.locator(".flash.error").waitFor();
    await fitsWidth(p2); // newcomer: the long error (a URL) wraps
    await shot(p2, "pds-down-login-390-dark");
  });
  await c2.close();
}

await browser.close();
if (consoleErrors.length) {
  bad("no console errors (CSP, scripts)", consoleErrors.slice(0, 5).join(" | "));
}
console.log(`${passed} passed, ${failed} failed`);
if (failed) console.log("failed: " + problems.join("; "));
process.exit(failed ? 1 : 0);
