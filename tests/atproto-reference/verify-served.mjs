#!/usr/bin/env node
// Verifies the hold repo *served over HTTP* by a running `atcr serve` with the reference
// TypeScript implementation (@atproto/repo): the CAR from com.atproto.sync.getRepo, its
// commit signature against the key published in /.well-known/did.json, and a
// com.atproto.sync.getRecord proof.
//
//   node verify-served.mjs http://127.0.0.1:5000 [expected-owner-did]
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(path.join(here, 'package.json'))
const repo = require('@atproto/repo')
const crypto = require('@atproto/crypto')
const lexData = require('@atproto/lex-data')
// dependency of @atproto/repo; splits a firehose frame into its two CBOR items
const common = require('@atproto/common')

const base = process.argv[2]
const owner = process.argv[3]
if (!base) {
  console.error('usage: verify-served.mjs <base-url> [owner-did]')
  process.exit(2)
}

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
async function get(p) {
  const res = await fetch(base + p)
  if (!res.ok) throw new Error(`GET ${p}: ${res.status} ${await res.text()}`)
  return res
}

const didDoc = await (await get('/.well-known/did.json')).json()
const did = didDoc.id
const vm = (didDoc.verificationMethod ?? []).find((m) => m.id === `${did}#atproto`)
const didKey = vm ? `did:key:${vm.publicKeyMultibase}` : undefined
const q = (params) => new URLSearchParams(params).toString()

await check('did.json: did:web with a Multikey #atproto key and both services', async () => {
  assert(did.startsWith('did:web:'), `id ${did}`)
  assert(vm && vm.type === 'Multikey' && vm.controller === did, 'no #atproto Multikey')
  // The key must parse as a P-256 did:key for the reference crypto package.
  const alg = crypto.parseDidKey(didKey).jwtAlg
  assert(alg === 'ES256', `key alg ${alg}`)
  const types = didDoc.service.map((s) => `${s.id}=${s.type}`).sort()
  assert(
    JSON.stringify(types) === JSON.stringify(['#atcr_hold=AtcrHoldService', '#atproto_pds=AtprotoPersonalDataServer']),
    `services ${types}`,
  )
  const text = await (await get('/.well-known/atproto-did')).text()
  assert(text.trim() === did, `atproto-did ${text}`)
})

let car
await check('sync.getRepo: CAR content type, root = latest commit', async () => {
  const res = await get(`/xrpc/com.atproto.sync.getRepo?${q({ did })}`)
  assert(res.headers.get('content-type') === 'application/vnd.ipld.car', res.headers.get('content-type'))
  car = new Uint8Array(await res.arrayBuffer())
  const { root } = await repo.readCarWithRoot(car)
  const latest = await (await get(`/xrpc/com.atproto.sync.getLatestCommit?${q({ did })}`)).json()
  assert(root.toString() === latest.cid, `root ${root} != latest ${latest.cid}`)
})

await check('verifyRepoCar: MST, records and commit signature against the did.json key', async () => {
  const verified = await repo.verifyRepoCar(car, did, didKey)
  const paths = verified.creates.map((c) => `${c.collection}/${c.rkey}`)
  assert(paths.includes('io.atcr.hold.captain/self'), `records ${paths}`)
  assert(paths.includes('app.bsky.actor.profile/self'), `records ${paths}`)
  const captainCid = verified.creates.find((c) => c.collection === 'io.atcr.hold.captain').cid
  const { root, blocks } = await repo.readCarWithRoot(car)
  const captain = repo.cborToLex(blocks.get(captainCid))
  assert(captain.$type === 'io.atcr.hold.captain' && typeof captain.public === 'boolean', JSON.stringify(captain))
  if (owner) {
    assert(captain.owner === owner, `captain owner ${captain.owner}`)
    assert(paths.some((p) => p.startsWith('io.atcr.hold.crew/')), 'no crew record')
  }
  const commit = repo.cborToLex(blocks.get(root))
  assert(commit.version === 3 && commit.did === did, `commit ${commit.did} v${commit.version}`)
  assert((await repo.verifyCommitSig(commit, didKey)) === true, 'signature rejected')
})

await check('verifyRepoCar rejects another key', async () => {
  const other = await crypto.P256Keypair.create()
  let threw = false
  try {
    await repo.verifyRepoCar(car, did, other.did())
  } catch {
    threw = true
  }
  assert(threw, 'accepted a wrong key')
})

await check('sync.getRecord: proof CAR proves the captain record served by repo.getRecord', async () => {
  const rec = await (
    await get(`/xrpc/com.atproto.repo.getRecord?${q({ repo: did, collection: 'io.atcr.hold.captain', rkey: 'self' })}`)
  ).json()
  const res = await get(`/xrpc/com.atproto.sync.getRecord?${q({ did, collection: 'io.atcr.hold.captain', rkey: 'self' })}`)
  const proof = new Uint8Array(await res.arrayBuffer())
  const claim = { collection: 'io.atcr.hold.captain', rkey: 'self', cid: lexData.parseCid(rec.cid) }
  const out = await repo.verifyProofs(proof, [claim], did, didKey)
  assert(out.verified.length === 1, `unverified: ${JSON.stringify(out.unverified)}`)
})

await check('subscribeRepos: replayed #commit frames verify with verifyDiffCar', async () => {
  const url = `${base.replace(/^http/, 'ws')}/xrpc/com.atproto.sync.subscribeRepos?cursor=0`
  const frames = await new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.binaryType = 'arraybuffer'
    const got = []
    // Replay is immediate; after a quiet second every stored event has arrived.
    let timer = setTimeout(() => ws.close(), 1000)
    ws.onmessage = (e) => {
      got.push(new Uint8Array(e.data))
      clearTimeout(timer)
      timer = setTimeout(() => ws.close(), 1000)
    }
    ws.onclose = () => resolve(got)
    ws.onerror = (e) => reject(new Error(`websocket error ${e?.message ?? ''}`))
  })
  assert(frames.length >= 2, `${frames.length} frames`)
  const events = frames.map((f) => common.cborDecodeMulti(f))
  events.forEach(([header, body], i) => {
    assert(header.op === 1 && header.t === '#commit', `header ${JSON.stringify(header)}`)
    assert(body.seq === i + 1, `seq ${body.seq} at ${i}`)
    assert(body.repo === did && body.rebase === false && body.tooBig === false, 'body fields')
    assert(Array.isArray(body.blobs) && typeof body.time === 'string', 'blobs/time')
  })
  // Event 1 is the repo's first (empty) commit: its blocks are the whole repo.
  const first = await repo.readCarWithRoot(events[0][1].blocks)
  assert(first.root.toString() === events[0][1].commit.toString(), 'first root')
  const storage = new repo.MemoryBlockstore(first.blocks)
  let current = await repo.Repo.load(storage, first.root)
  for (const [, body] of events.slice(1)) {
    assert(body.since === current.commit.rev, `since ${body.since} != ${current.commit.rev}`)
    assert(body.prevData.toString() === current.commit.data.toString(), 'prevData')
    const diff = await repo.verifyDiffCar(current, body.blocks, did, didKey)
    assert(diff.commit.cid.toString() === body.commit.toString(), `commit ${diff.commit.cid}`)
    const got = diff.writes.map((w) => `${w.action} ${w.collection}/${w.rkey}`).sort()
    const want = body.ops.map((o) => `${o.action} ${o.path}`).sort()
    assert(JSON.stringify(got) === JSON.stringify(want), `writes ${got} != ops ${want}`)
    const { blocks } = await repo.readCarWithRoot(body.blocks)
    await storage.putMany(blocks)
    current = await repo.Repo.load(storage, body.commit)
  }
  const latest = await (await get(`/xrpc/com.atproto.sync.getLatestCommit?${q({ did })}`)).json()
  assert(current.cid.toString() === latest.cid, `replayed head ${current.cid} != ${latest.cid}`)
  console.log(`     (${events.length} frames, ops: ${events.map(([, b]) => b.ops.length).join(',')})`)
})

console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
