#!/usr/bin/env node
// Verifies a repo CAR written by the Rust crate with the reference TypeScript
// implementation (@atproto/repo + @atproto/crypto, installed beside this script).
//
//   ATPROTO_REPO_CAR_OUT=/tmp/repo.car cargo test --test repo_car write_car_for_reference_verifier
//   node scripts/verify-with-reference.mjs /tmp/repo.car
//
// The test also writes <car>.json (did, did:key, expected commit/record data) and
// <car>.proof.car (a com.atproto.sync.getRecord proof for one record), <car>.prev.car (the
// repo one commit earlier) and <car>.commit.car (that last commit's firehose blocks).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(path.join(here, 'package.json'))
const repo = require('@atproto/repo')
const crypto = require('@atproto/crypto')
// dependency of @atproto/repo; used only to parse a CID string for a proof claim
const lexData = require('@atproto/lex-data')

const carPath = process.argv[2] ?? process.env.ATPROTO_REPO_CAR_OUT
if (!carPath) {
  console.error('usage: verify-with-reference.mjs <repo.car>')
  process.exit(2)
}
const car = new Uint8Array(readFileSync(carPath))
const meta = JSON.parse(readFileSync(`${carPath}.json`, 'utf8'))
const proofCar = new Uint8Array(readFileSync(`${carPath}.proof.car`))

let passed = 0
let failed = 0
async function check(name, fn) {
  try {
    await fn()
    passed++
    console.log(`ok   ${name}`)
  } catch (err) {
    failed++
    console.log(`FAIL ${name}: ${err?.stack ?? err}`)
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg)
}

await check('readCarWithRoot: root is the commit, every block hash checks', async () => {
  const { root, blocks } = await repo.readCarWithRoot(car)
  assert(root.toString() === meta.commit, `root ${root} != ${meta.commit}`)
  assert(blocks.size > meta.records, `only ${blocks.size} blocks`)
})

await check('verifyCommitSig: commit signature verifies against the did:key', async () => {
  const { root, blocks } = await repo.readCarWithRoot(car)
  const commit = repo.cborToLex(blocks.get(root))
  assert(commit.version === 3, `version ${commit.version}`)
  assert(commit.did === meta.did, `did ${commit.did}`)
  assert(commit.rev === meta.rev, `rev ${commit.rev}`)
  assert(commit.data.toString() === meta.data, `data ${commit.data}`)
  assert(commit.prev === null, 'prev must be null')
  const ok = await repo.verifyCommitSig(commit, meta.didKey)
  assert(ok === true, 'signature rejected')
})

await check('verifyRepoCar: full repo verification (MST, records, signature)', async () => {
  const verified = await repo.verifyRepoCar(car, meta.did, meta.didKey)
  assert(verified.creates.length === meta.records, `${verified.creates.length} records, want ${meta.records}`)
  const sample = verified.creates.find(
    (c) => c.collection === meta.sampleRecord.collection && c.rkey === meta.sampleRecord.rkey,
  )
  assert(sample, 'sample record missing')
  assert(sample.cid.toString() === meta.sampleRecord.cid, `sample cid ${sample.cid}`)
})

await check('verifyRepoCar rejects a different signing key', async () => {
  const other = await crypto.P256Keypair.create()
  let threw = false
  try {
    await repo.verifyRepoCar(car, meta.did, other.did())
  } catch {
    threw = true
  }
  assert(threw, 'accepted a wrong key')
})

await check('verifyProofs: sync.getRecord proof CAR proves the sample record', async () => {
  const claim = {
    collection: meta.sampleRecord.collection,
    rkey: meta.sampleRecord.rkey,
    cid: lexData.parseCid(meta.sampleRecord.cid),
  }
  const res = await repo.verifyProofs(proofCar, [claim], meta.did, meta.didKey)
  assert(res.verified.length === 1, `unverified: ${JSON.stringify(res.unverified)}`)
})

await check('verifyDiffCar: firehose #commit blocks apply on the previous repo state', async () => {
  const prev = await repo.readCarWithRoot(new Uint8Array(readFileSync(`${carPath}.prev.car`)))
  const storage = new repo.MemoryBlockstore(prev.blocks)
  const before = await repo.Repo.load(storage, prev.root)
  const commitCar = new Uint8Array(readFileSync(`${carPath}.commit.car`))
  const diff = await repo.verifyDiffCar(before, commitCar, meta.did, meta.didKey)
  const got = diff.writes.map((w) => `${w.action} ${w.collection}/${w.rkey}`).sort()
  const want = meta.commitOps.map((o) => `${o.action} ${o.path}`).sort()
  assert(JSON.stringify(got) === JSON.stringify(want), `writes ${got} != ${want}`)
  assert(diff.commit.cid.toString() === meta.commit, `commit ${diff.commit.cid}`)
})

console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
