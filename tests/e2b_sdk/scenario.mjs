// Conformance scenario for godel's E2B-compatible API through the official,
// unpatched `e2b` npm package (installed by scripts/setup.d/40-e2b.sh under
// ${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/node; run with
// NODE_PATH=<that>/node_modules or from that directory).
//
// Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY. Prints one line per
// check and `N passed, M failed`; exits non-zero when anything failed.

import { createRequire } from 'node:module'
import path from 'node:path'
import os from 'node:os'

const cache = process.env.GODEL_CACHE || path.join(os.homedir(), '.cache', 'godel')
// E2B_JS_DIR: one version's directory of the matrix (run.sh sets it).
const sdkDir = process.env.E2B_JS_DIR || path.join(cache, 'e2b-sdk', 'node')
const require = createRequire(path.join(sdkDir, 'package.json'))
const { Sandbox, CommandExitError } = require('e2b')

const HOME = '/home/user'
const results = []
const assert = (cond, msg) => {
  if (!cond) throw new Error(msg || 'assertion failed')
}

async function check(name, fn) {
  const t0 = performance.now()
  try {
    await fn()
    results.push([name, true])
    console.log(`ok   ${name} (${Math.round(performance.now() - t0)} ms)`)
  } catch (e) {
    results.push([name, false])
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`)
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function main() {
  for (const k of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
    if (!process.env[k]) {
      console.error(`${k} must be set`)
      process.exit(2)
    }
  }
  const tag = Math.random().toString(16).slice(2, 10)
  let sbx

  await check('create sandbox', async () => {
    sbx = await Sandbox.create('base', { timeoutMs: 120_000, metadata: { run: tag }, envs: { FROM_JS: 'js' } })
    assert(sbx.sandboxId)
  })
  if (!sbx) return finish()

  await check('commands.run with onStdout', async () => {
    const chunks = []
    const r = await sbx.commands.run('echo hi; echo $FROM_JS', { onStdout: (d) => chunks.push(d) })
    assert(r.exitCode === 0, `exit ${r.exitCode}`)
    assert(r.stdout === 'hi\njs\n', JSON.stringify(r.stdout))
    assert(chunks.join('') === r.stdout, JSON.stringify(chunks))
  })

  await check('non-zero exit throws CommandExitError', async () => {
    try {
      await sbx.commands.run('exit 5')
      throw new Error('no error')
    } catch (e) {
      assert(e instanceof CommandExitError, String(e))
      assert(e.exitCode === 5, `exit ${e.exitCode}`)
    }
  })

  await check('background command and kill', async () => {
    const h = await sbx.commands.run('sleep 600', { background: true })
    const listed = (await sbx.commands.list()).map((p) => p.pid)
    assert(listed.includes(h.pid), JSON.stringify(listed))
    assert((await sbx.commands.kill(h.pid)) === true)
    try {
      await h.wait()
    } catch (e) {
      // killed: non-zero exit
    }
    assert((await sbx.commands.kill(h.pid)) === false)
  })

  await check('files CRUD and binary data', async () => {
    await sbx.files.write(`${HOME}/js/a.txt`, 'alpha')
    assert((await sbx.files.read(`${HOME}/js/a.txt`)) === 'alpha')
    const bin = new Uint8Array(70000).map((_, i) => i % 256)
    await sbx.files.write(`${HOME}/js/b.bin`, bin.buffer)
    const back = await sbx.files.read(`${HOME}/js/b.bin`, { format: 'bytes' })
    assert(back.length === bin.length && back.every((v, i) => v === bin[i]), 'binary mismatch')
    assert(await sbx.files.exists(`${HOME}/js/a.txt`))
    assert((await sbx.files.makeDir(`${HOME}/js/sub`)) === true)
    assert((await sbx.files.makeDir(`${HOME}/js/sub`)) === false)
    const names = (await sbx.files.list(`${HOME}/js`)).map((e) => e.name).sort()
    assert(JSON.stringify(names) === '["a.txt","b.bin","sub"]', JSON.stringify(names))
    await sbx.files.rename(`${HOME}/js/a.txt`, `${HOME}/js/c.txt`)
    await sbx.files.remove(`${HOME}/js/c.txt`)
    assert(!(await sbx.files.exists(`${HOME}/js/c.txt`)))
  })

  await check('watchDir streams events', async () => {
    const events = []
    const w = await sbx.files.watchDir(`${HOME}/js`, (e) => events.push(e))
    await sbx.files.write(`${HOME}/js/watched.txt`, 'w')
    for (let i = 0; i < 200 && !events.some((e) => e.name === 'watched.txt'); i++) await sleep(50)
    await w.stop()
    assert(events.some((e) => e.name === 'watched.txt'), JSON.stringify(events))
  })

  await check('getInfo, setTimeout, list', async () => {
    await sbx.setTimeout(300_000)
    const info = await sbx.getInfo()
    assert(info.sandboxId === sbx.sandboxId)
    assert(info.metadata.run === tag)
    const items = await Sandbox.list({ query: { metadata: { run: tag } } }).nextItems()
    assert(items.length === 1 && items[0].sandboxId === sbx.sandboxId, JSON.stringify(items))
  })

  await check('pause and connect keep files', async () => {
    await sbx.files.write(`${HOME}/keep.txt`, 'kept')
    await sbx.pause()
    assert(!(await sbx.isRunning()))
    const again = await Sandbox.connect(sbx.sandboxId)
    assert(again.sandboxId === sbx.sandboxId)
    assert((await again.files.read(`${HOME}/keep.txt`)) === 'kept')
    sbx = again
  })

  await check('kill', async () => {
    assert((await sbx.kill()) === true)
    assert(!(await sbx.isRunning()))
    assert((await Sandbox.kill(sbx.sandboxId)) === false)
  })

  return finish()
}

function finish() {
  const passed = results.filter(([, ok]) => ok).length
  const failed = results.length - passed
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed === 0 && passed > 0 ? 0 : 1)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
