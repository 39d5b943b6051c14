// Headless Debian chromium (playwright-core from tests/ui) through atcr's sign-in:
//   oauth    /login -> "Sign in with your PDS" -> the PDS's own sign-in and consent pages ->
//            back on atcr, signed in (screenshots of each page)
//   approve  DEVICE_URL (from docker-credential-atcr login) -> Approve on /device
//   revoke   /settings -> Revoke the device
//   logout   the header's Log out button
// Run by tests/signin-e2e.sh with BASE, OUT (screenshots), ALICE, ALICE_PW (her main
// password, typed into the PDS's page only), STATE (cookies between runs).
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(new URL("../ui/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing env ${k}`);
  return v;
};
const BASE = env("BASE");
const OUT = env("OUT");
const STATE = env("STATE");
const mode = process.argv[2];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", `--host-resolver-rules=MAP ${new URL(BASE).hostname} 127.0.0.1`],
});
const ctx = await browser.newContext({
  viewport: { width: 1100, height: 900 },
  // The test CA is not in Chromium's store; the PDS (Node) does verify the certificate.
  ignoreHTTPSErrors: true,
  storageState: mode === "oauth" ? undefined : STATE,
});
ctx.setDefaultTimeout(20000);
const page = await ctx.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

async function shot(name) {
  const f = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: f, fullPage: true });
  console.log(`       screenshot ${f}`);
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

let failed = false;
try {
  if (mode === "oauth") {
    const ALICE = env("ALICE");
    await page.goto(`${BASE}/login`);
    await shot("01-atcr-login");
    await page.fill("#oauth-form input[name=identifier]", ALICE);
    await page.click("#oauth-form button[type=submit]");
    // atcr's hop page moves on to the PDS by itself (meta refresh).
    const pdsOrigin = new URL(process.env.PDS_PUBLIC || "http://localhost").origin;
    await page.waitForURL((u) => !u.href.startsWith(BASE), { timeout: 20000 });
    console.log(`       at the PDS: ${page.url().split("?")[0]} (from ${pdsOrigin})`);
    const password = page.locator('input[type="password"]');
    await password.waitFor();
    await shot("02-pds-sign-in");
    // The handle comes from login_hint; fill it if the page asks anyway.
    const user = page.locator('input[type="text"], input[type="email"], input[name="username"]').first();
    if ((await user.count()) && (await user.isEditable()) && !(await user.inputValue())) {
      await user.fill(ALICE);
    }
    await password.fill(env("ALICE_PW"));
    await page.getByRole("button", { name: /^(sign in|next|log in)$/i }).first().click();
    const consent = page.getByRole("button", { name: /^(authorize|accept|allow)$/i }).first();
    await consent.waitFor();
    await shot("03-pds-consent");
    await consent.click();
    await page.waitForURL((u) => u.href.startsWith(BASE) && !u.pathname.startsWith("/auth/"), { timeout: 20000 });
    await page.goto(`${BASE}/settings`);
    const body = await page.content();
    expect(body.includes(ALICE), "settings does not show alice");
    expect(body.includes("ATProto OAuth"), "settings does not say the sign-in was OAuth");
    await shot("04-atcr-signed-in-settings");
    await ctx.storageState({ path: STATE });
  } else if (mode === "approve") {
    const url = env("DEVICE_URL");
    await page.goto(url.replace(/^https:\/\/[^/]+/, BASE));
    await page.getByRole("button", { name: "Approve" }).waitFor();
    const body = await page.content();
    expect(body.includes("e2e box"), "the device's name is not shown");
    await shot("05-device-approve");
    await page.getByRole("button", { name: "Approve" }).click();
    await page.getByText("Approved.").waitFor();
    await shot("06-device-approved");
  } else if (mode === "revoke") {
    await page.goto(`${BASE}/settings`);
    const row = page.locator("#devices tbody tr", { hasText: "e2e box" });
    await row.waitFor();
    await shot("07-settings-devices");
    await row.getByRole("button", { name: "Revoke" }).click();
    await page.waitForURL(/devices_revoked=1/);
    expect((await page.locator("#devices tbody tr", { hasText: "e2e box" }).count()) === 0, "device still listed");
    await shot("08-device-revoked");
  } else if (mode === "logout") {
    await page.goto(`${BASE}/`);
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${BASE}/`);
    expect((await page.getByRole("link", { name: "Log in" }).count()) > 0, "still signed in");
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
} catch (e) {
  failed = true;
  console.log(`       ${mode}: ${e.message.split("\n")[0]} (page ${page.url()})`);
  await page.screenshot({ path: path.join(OUT, `FAILED-${mode}.png`), fullPage: true }).catch(() => {});
}
await browser.close();
process.exit(failed ? 1 : 0);
