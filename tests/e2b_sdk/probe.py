#!/usr/bin/env python3
"""For `e2b` Python versions before 2.7.0: show, with the installed SDK, why
they cannot reach godel over plain HTTP. They ignore E2B_API_URL and
E2B_SANDBOX_URL and always use https://api.<E2B_DOMAIN> and
https://49983-<id>.<E2B_DOMAIN> (or localhost:3000 / :49983 in debug mode).
Passes while that is so; prints `N passed, M failed`."""

import os

from e2b.connection_config import ConnectionConfig

url = os.environ["E2B_API_URL"]
cfg = ConnectionConfig()
checks = [
    ("E2B_API_URL is ignored (api_url is https://api.<domain>)", cfg.api_url.startswith("https://api.")),
    ("there is no sandbox_url setting", not hasattr(cfg, "sandbox_url") and not hasattr(cfg, "_sandbox_url")),
    ("the godel endpoint is not used", cfg.api_url != url),
]
for name, ok in checks:
    print(("ok   " if ok else "FAIL ") + name)
print("reason: needs TLS at api.<domain> and wildcard DNS/TLS for 49983-<id>.<domain> in front of godel")
print(f"{sum(ok for _, ok in checks)} passed, {sum(not ok for _, ok in checks)} failed")
