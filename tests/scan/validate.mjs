// Validates what tests/scan_images.rs wrote to ATCR_TEST_SCAN_OUT with the reference
// implementation: every io.atcr.hold.scan record against the lexicon
// (tests/scan/lexicons/, written from atcr.io's published lexicon) with @atproto/lexicon's
// assertValidRecord, and the blob references' mime types against the lexicon's `accept`.
// Hostile variants of one record must be refused, so the check cannot pass by accident.
//   node tests/scan/validate.mjs <dir>
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const lexPkg = path.join(here, "../support/atnet/node_modules/@atproto/lexicon/dist/index.js");
const { Lexicons, jsonToLex } = await import(lexPkg);

const dir = process.argv[2];
if (!dir) throw new Error("usage: validate.mjs <dir>");
const lexicon = JSON.parse(fs.readFileSync(path.join(here, "lexicons/io.atcr.hold.scan.json"), "utf8"));
const lexicons = new Lexicons([lexicon]);
const NSID = "io.atcr.hold.scan";

let passed = 0;
let failed = 0;
const ok = (what) => {
  passed++;
  console.log(`  ok   ${what}`);
};
const bad = (what, e) => {
  failed++;
  console.log(`  FAIL ${what}: ${e && e.message ? e.message : e}`);
};

const records = fs.readdirSync(dir).filter((f) => f.endsWith(".record.json")).sort();
if (records.length < 8) bad("records written by the Rust test", `only ${records.length}`);
let sample = null;
for (const f of records) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  try {
    if (json.$type !== NSID) throw new Error(`$type is ${json.$type}`);
    lexicons.assertValidRecord(NSID, jsonToLex(json));
    for (const field of ["sbomBlob", "vulnReportBlob"]) {
      const b = json[field];
      if (!b) continue;
      const accept = lexicon.defs.main.record.properties[field].accept;
      if (!accept.includes(b.mimeType)) throw new Error(`${field} mimeType ${b.mimeType}`);
      if (!/^bafkrei[a-z2-7]{52}$/.test(b.ref.$link)) throw new Error(`${field} ref is not a raw sha256 CID: ${b.ref.$link}`);
    }
    if (!["ok", "failed", "skipped"].includes(json.status)) throw new Error(`status ${json.status}`);
    ok(`${f} is a valid ${NSID} (${json.status}${json.reason ? `: ${json.reason}` : ""})`);
    if (json.sbomBlob && !sample) sample = json;
  } catch (e) {
    bad(f, e);
  }
}

// The validator must refuse records that break the lexicon.
const refusals = {
  "a reason over 256 characters": (r) => ({ ...r, reason: "x".repeat(257) }),
  "a negative count": (r) => ({ ...r, critical: -1 }),
  "a userDid that is no DID": (r) => ({ ...r, userDid: "alice" }),
  "no scannedAt": (r) => {
    const c = { ...r };
    delete c.scannedAt;
    return c;
  },
  "a scannerVersion over 64 characters": (r) => ({ ...r, scannerVersion: "v".repeat(65) }),
};
if (sample) {
  for (const [what, mutate] of Object.entries(refusals)) {
    try {
      lexicons.assertValidRecord(NSID, jsonToLex(mutate(sample)));
      bad(`refuses ${what}`, "accepted");
    } catch {
      ok(`refuses ${what}`);
    }
  }
} else {
  bad("a record with an SBOM", "none found");
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
