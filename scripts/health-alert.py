#!/usr/bin/env python3
"""keel-health-alert: POST one JSON alert (read on stdin) to the webhook whose URL is in URL_FILE.

Usage: keel-health-alert URL_FILE < alert.json

Installed as /usr/local/sbin/keel-health-alert; keel-health --record calls it when the host's
status changes. The URL is a secret (keel:alertWebhookUrl): it is read from the root-only file
keel placed, never taken from the command line or the environment, and never printed — not even
in an error (a webhook URL usually carries its token in the path). Only https URLs are used, and
plain http to the loopback address (a local relay, or the VM test's listener).

Exit codes: 0 delivered (2xx); 1 not delivered (refused, unreachable, timeout, non-2xx);
2 usage, unreadable file, or a URL keel does not use.
"""
import ipaddress
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_SECONDS = 10
PROG = "keel-health-alert"


def fail(code, message):
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(code)


def loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args):
    if len(args) != 1:
        fail(2, "usage: keel-health-alert URL_FILE < alert.json")
    try:
        with open(args[0], encoding="utf-8") as f:
            url = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        fail(2, f"cannot read the webhook file {args[0]}: {getattr(e, 'strerror', None) or 'not text'}")
    if not url:
        fail(2, f"no webhook URL in {args[0]} (keel:alertWebhookUrl is not set)")
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback(parts.hostname))):
        fail(2, f"the URL in {args[0]} is not an https:// URL (nor http:// to the loopback address); "
                "fix: pulumi config set --secret keel:alertWebhookUrl https://…")
    body = sys.stdin.buffer.read()
    try:
        json.loads(body)
    except ValueError:
        fail(2, "stdin is not JSON")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "keel-health"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        fail(1, f"the webhook answered HTTP {e.code}")
    except urllib.error.URLError as e:
        fail(1, f"the webhook could not be reached: {e.reason}")
    except (OSError, ValueError) as e:
        fail(1, f"the webhook could not be reached: {type(e).__name__}")
    if not 200 <= status < 300:
        fail(1, f"the webhook answered HTTP {status}")
    print(f"{PROG}: delivered (HTTP {status})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
