// For `e2b` npm versions before 2.7.0: show, with the installed SDK, why they
// cannot reach godel over plain HTTP: they ignore E2B_API_URL and
// E2B_SANDBOX_URL and always use https://api.<E2B_DOMAIN> and
// https://49983-<id>.<E2B_DOMAIN>. Passes while that is so; prints
// `N passed, M failed`.
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.env.E2B_JS_DIR, 'package.json'))
const { ConnectionConfig } = require('e2b')
const cfg = new ConnectionConfig()
const checks = [
  ['E2B_API_URL is ignored (apiUrl is https://api.<domain>)', cfg.apiUrl.startsWith('https://api.')],
  ['there is no sandboxUrl setting', cfg.sandboxUrl === undefined],
  ['the godel endpoint is not used', cfg.apiUrl !== process.env.E2B_API_URL],
]
for (const [name, ok] of checks) console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}`)
console.log('reason: needs TLS at api.<domain> and wildcard DNS/TLS for 49983-<id>.<domain> in front of godel')
const p = checks.filter(([, ok]) => ok).length
console.log(`${p} passed, ${checks.length - p} failed`)
