// The unchanged `@e2b/code-interpreter` npm package (pinned in
// scripts/setup.d/45-code-interpreter.sh, installed under
// ${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/code-interpreter-js) against
// godel's `code-interpreter-v1` template.
//
// Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY. Prints one line per
// check and `N passed, M failed`; exits non-zero when anything failed.

import { createRequire } from 'node:module'
import path from 'node:path'
import os from 'node:os'

const cache = process.env.GODEL_CACHE || path.join(os.homedir(), '.cache', 'godel')
const sdkDir = process.env.E2B_CI_JS_DIR || path.join(cache, 'e2b-sdk', 'code-interpreter-js')
const require = createRequire(path.join(sdkDir, 'package.json'))
const { Sandbox } = require('@e2b/code-interpreter')

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

async function main() {
  for (const k of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
    if (!process.env[k]) {
      console.error(`${k} must be set`)
      return 2
    }
  }
  let sbx
  await check('Sandbox.create() starts code-interpreter-v1', async () => {
    sbx = await Sandbox.create({ timeoutMs: 300_000 })
  })
  if (sbx) {
    await check('state is kept across runCode calls', async () => {
      await sbx.runCode('x = 1')
      const ex = await sbx.runCode('x + 1')
      assert(ex.text === '2', JSON.stringify(ex.toJSON ? ex.toJSON() : ex))
    })
    await check('stdout and stderr callbacks', async () => {
      const out = []
      const err = []
      await sbx.runCode("import sys\nprint('to out')\nprint('to err', file=sys.stderr)", {
        onStdout: (m) => out.push(m.line),
        onStderr: (m) => err.push(m.line),
      })
      assert(out.join('') === 'to out\n', JSON.stringify(out))
      assert(err.join('') === 'to err\n', JSON.stringify(err))
    })
    await check('an exception is execution.error', async () => {
      const ex = await sbx.runCode('1 / 0')
      assert(ex.error && ex.error.name === 'ZeroDivisionError', JSON.stringify(ex.error))
    })
    await check('a matplotlib figure comes back as a PNG', async () => {
      const ex = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
      const png = ex.results.find((r) => r.png)
      assert(png, 'no png result')
      assert(Buffer.from(png.png, 'base64').subarray(0, 4).toString('latin1') === '\x89PNG')
    })
    await check('kill', async () => {
      await sbx.kill()
    })
  }
  const passed = results.filter(([, ok]) => ok).length
  console.log(`${passed} passed, ${results.length - passed} failed`)
  return results.length === passed ? 0 : 1
}

main().then((code) => process.exit(code))
