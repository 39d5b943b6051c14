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
// The firehose as @atproto/sync reads it: frames split with the lex-cbor that
// @atproto/xrpc-server uses, bodies validated against the com.atproto.sync.subscribeRepos
// message schemas that @atproto/sync ships, commits checked with the @atproto/repo it uses
// (loaded by path: the packages' entry points need Node 22, these parts do not).
const xrpcServerRequire = createRequire(require.resolve('@atproto/xrpc-server'))
const lexCbor = xrpcServerRequire('@atproto/lex-cbor')
const syncRequire = createRequire(require.resolve('@atproto/sync'))
const syncRepo = syncRequire('@atproto/repo')
const syncLexicons = await import(
  path.join(path.dirname(require.resolve('@atproto/sync')), 'lexicons/index.js')
)
const subscribeRepos = syncLexicons.com.atproto.sync.subscribeRepos

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

await check('subscribeRepos: every replayed frame is a valid message; #identity, #account, #commit, #sync as the reference PDS sequences a new account', async () => {
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
  assert(frames.length >= 5, `${frames.length} frames`)
  // As @atproto/xrpc-server's Subscription: two CBOR items, header {op: 1, t}, the body
  // typed by t, validated by the lexicon's message union.
  const events = frames.map((f, i) => {
    const [header, body, ...rest] = lexCbor.decodeAll(f)
    assert(rest.length === 0 && body !== undefined, `frame ${i}: not two CBOR items`)
    assert(header.op === 1 && typeof header.t === 'string', `header ${JSON.stringify(header)}`)
    const msg = { $type: `com.atproto.sync.subscribeRepos${header.t}`, ...body }
    const parsed = subscribeRepos.$message.safeParse(msg)
    assert(parsed.success, `frame ${i} (${header.t}) fails the lexicon: ${parsed.reason?.message}`)
    assert(body.seq === i + 1, `seq ${body.seq} at ${i}`)
    return { t: header.t, body }
  })
  const kinds = events.map((e) => e.t)
  // A new account: #identity, #account (active), the first #commit, a #sync of it.
  assert(
    JSON.stringify(kinds.slice(0, 4)) === JSON.stringify(['#identity', '#account', '#commit', '#sync']),
    `first events ${kinds.slice(0, 4)}`,
  )
  const identity = events[0].body
  assert(identity.did === did, `identity did ${identity.did}`)
  const aka = (didDoc.alsoKnownAs ?? []).map((a) => a.replace('at://', ''))
  assert(identity.handle === undefined || aka.includes(identity.handle), `identity handle ${identity.handle}`)
  const account = events[1].body
  assert(account.did === did && account.active === true && account.status === undefined, JSON.stringify(account))
  // #sync as @atproto/sync parses it, and as a relay checks it: the CAR's root is a commit
  // of this DID at this rev, signed by the DID's key.
  for (const e of events.filter((e) => e.t === '#sync')) {
    const { root, blocks } = await syncRepo.readCarWithRoot(e.body.blocks)
    const commit = syncRepo.cborToLex(blocks.get(root))
    assert(commit.did === e.body.did && e.body.did === did, `sync did ${commit.did}`)
    assert(commit.rev === e.body.rev, `sync rev ${commit.rev} != ${e.body.rev}`)
    assert((await syncRepo.verifyCommitSig(commit, didKey)) === true, 'sync commit signature')
  }
  // #commit as @atproto/sync's parseCommitAuthenticated: every op proven by verifyProofs
  // against the DID's key.
  for (const e of events.filter((e) => e.t === '#commit' && e.body.ops.length > 0)) {
    const claims = e.body.ops.map((op) => {
      const { collection, rkey } = syncRepo.parseDataKey(op.path)
      return { collection, rkey, cid: op.action === 'delete' ? null : op.cid }
    })
    const res = await syncRepo.verifyProofs(e.body.blocks, claims, did, didKey)
    assert(res.unverified.length === 0, `unproven ops at seq ${e.body.seq}: ${JSON.stringify(res.unverified)}`)
  }
  // The commits chain with @atproto/repo's verifyDiffCar from the first (whole-repo) one.
  const commits = events.filter((e) => e.t === '#commit').map((e) => e.body)
  const first = await repo.readCarWithRoot(commits[0].blocks)
  assert(first.root.toString() === commits[0].commit.toString(), 'first root')
  const storage = new repo.MemoryBlockstore(first.blocks)
  let current = await repo.Repo.load(storage, first.root)
  for (const body of commits.slice(1)) {
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
  console.log(`     (${events.length} frames: ${kinds.join(' ')})`)
})

await check('sync.getRecord of a missing record: a proof of absence, as the reference PDS answers', async () => {
  const res = await get(`/xrpc/com.atproto.sync.getRecord?${q({ did, collection: 'io.atcr.hold.captain', rkey: 'nope' })}`)
  assert(res.headers.get('content-type') === 'application/vnd.ipld.car', res.headers.get('content-type'))
  const proof = new Uint8Array(await res.arrayBuffer())
  const out = await repo.verifyProofs(proof, [{ collection: 'io.atcr.hold.captain', rkey: 'nope', cid: null }], did, didKey)
  assert(out.verified.length === 1, `absence unproven: ${JSON.stringify(out.unverified)}`)
})

await check('sync.listBlobs answers the lexicon shape', async () => {
  const res = await (await get(`/xrpc/com.atproto.sync.listBlobs?${q({ did })}`)).json()
  assert(Array.isArray(res.cids), JSON.stringify(res))
  for (const c of res.cids) lexData.parseCid(c)
})

console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
