#!/usr/bin/env python3
"""Drive a hold's admin panel like its captain would in a browser (cookies, CSRF tokens).

    hold_admin.py BASE_URL HANDLE APP_PASSWORD add-crew MEMBER ROLE

Logs in at BASE_URL/admin/login, then posts the "add member" form of /admin. Prints the
panel's message (the redirect's ?ok= / ?err=) and exits 1 unless the member was added.
Standard library only.
"""

import http.cookiejar
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main():
    base, handle, password, action = sys.argv[1:5]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())

    def get(path):
        with opener.open(base + path, timeout=30) as r:
            return r.read().decode()

    def post(path, fields):
        data = urllib.parse.urlencode(fields).encode()
        try:
            with opener.open(base + path, data=data, timeout=30) as r:
                return r.status, r.headers.get("Location", ""), r.read().decode()
        except urllib.error.HTTPError as e:  # 303 (no redirect handler) and errors land here
            return e.code, e.headers.get("Location", ""), e.read().decode(errors="replace")

    def csrf(page):
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        if not m:
            sys.exit("no CSRF token on the page")
        return m.group(1)

    token = csrf(get("/admin/login"))
    status, loc, body = post(
        "/admin/login",
        {"csrf": token, "next": "/admin", "identifier": handle, "password": password},
    )
    if status != 303:
        sys.exit("admin login failed: HTTP %d %s" % (status, body[:300]))
    if action != "add-crew":
        sys.exit("unknown action " + action)
    member, role = sys.argv[5:7]
    token = csrf(get("/admin"))
    status, loc, body = post(
        "/admin/crew/add", {"csrf": token, "member": member, "role": role, "tier": ""}
    )
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    print((q.get("ok") or q.get("err") or [body[:300]])[0])
    sys.exit(0 if status == 303 and "ok" in q else 1)


if __name__ == "__main__":
    main()
