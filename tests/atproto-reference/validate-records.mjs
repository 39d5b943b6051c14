#!/usr/bin/env node
// Validates every record of the given repositories against the lexicons with the reference
// implementation (@atproto/lexicon assertValidRecord): our io.atcr.* lexicons from
// assets/lexicons/ (written from atcr.io's published ones) and, for other collections
// (app.bsky.*), the schemas shipped with @atproto/api. Every record key is checked against
// its lexicon's key type: `tid`, `literal:self`, `any` (a valid record key), and for
// io.atcr.repo.page the key must equal the record's `repository`.
//
//   node validate-records.mjs <service-url> <did> [<service-url> <did> ...]
//
// Prints one line per repository and a summary; exits 1 when a record is invalid, a key is
// wrong, or a collection has no lexicon at all.
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(path.join(here, 'package.json'))
const { Lexicons, jsonToLex } = require('@atproto/lexicon')
const { schemas } = require('@atproto/api')
const { isValidTid, isValidRecordKey } = require('@atproto/syntax')

const args = process.argv.slice(2)
if (args.length === 0 || args.length % 2 !== 0) {
  console.error('usage: validate-records.mjs <service-url> <did> [<service-url> <did> ...]')
  process.exit(2)
}

const lexDir = process.env.ATCR_LEXICONS ?? path.join(here, '../../assets/lexicons')
const ours = []
;(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) walk(p)
    else if (e.name.endsWith('.json')) ours.push(JSON.parse(fs.readFileSync(p, 'utf8')))
  }
})(lexDir)
const oursIds = new Set(ours.map((d) => d.id))
const lexicons = new Lexicons([...schemas.filter((s) => !oursIds.has(s.id)), ...ours])

async function getJson(url) {
  const res = await fetch(url)
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`)
  return res.json()
}

/** Why `rkey` is wrong for `collection` (null when it is right). */
function keyProblem(collection, rkey, value) {
  const def = lexicons.getDef(collection)
  const key = def?.key ?? 'any'
  if (key === 'tid' && !isValidTid(rkey)) return `key ${rkey} is not a TID`
  if (key.startsWith('literal:') && rkey !== key.slice('literal:'.length))
    return `key ${rkey} is not ${key.slice('literal:'.length)}`
  if (!isValidRecordKey(rkey)) return `key ${rkey} is not a valid record key`
  if (collection === 'io.atcr.repo.page' && rkey !== value.repository)
    return `key ${rkey} is not the repository name ${value.repository}`
  return null
}

let total = 0
let invalid = 0
let wrongKeys = 0
let unknown = 0
const perCollection = new Map()
for (let i = 0; i < args.length; i += 2) {
  const service = args[i].replace(/\/$/, '')
  const did = args[i + 1]
  const q = (p) => new URLSearchParams(p).toString()
  const repo = await getJson(`${service}/xrpc/com.atproto.repo.describeRepo?${q({ repo: did })}`)
  let n = 0
  for (const collection of repo.collections) {
    let cursor
    do {
      const params = { repo: did, collection, limit: '100' }
      if (cursor) params.cursor = cursor
      const page = await getJson(`${service}/xrpc/com.atproto.repo.listRecords?${q(params)}`)
      for (const rec of page.records) {
        n++
        total++
        perCollection.set(collection, (perCollection.get(collection) ?? 0) + 1)
        const rkey = rec.uri.split('/').pop()
        if (!lexicons.getDef(collection)) {
          unknown++
          console.log(`NO LEXICON ${rec.uri}`)
          continue
        }
        try {
          lexicons.assertValidRecord(collection, jsonToLex(rec.value))
        } catch (err) {
          invalid++
          console.log(`INVALID ${rec.uri}: ${err.message}\n        ${JSON.stringify(rec.value).slice(0, 400)}`)
        }
        const problem = keyProblem(collection, rkey, rec.value)
        if (problem) {
          wrongKeys++
          console.log(`WRONG KEY ${rec.uri}: ${problem}`)
        }
      }
      cursor = page.records.length > 0 ? page.cursor : undefined
    } while (cursor)
  }
  console.log(`     ${did} at ${service}: ${n} records in ${repo.collections.length} collections`)
}
const counts = [...perCollection].sort().map(([c, n]) => `${c}=${n}`).join(' ')
console.log(`     per collection: ${counts}`)
console.log(`${total} records checked, ${invalid} invalid, ${wrongKeys} wrong keys, ${unknown} without a lexicon`)
process.exit(invalid === 0 && wrongKeys === 0 && unknown === 0 ? 0 : 1)
