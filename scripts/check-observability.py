#!/usr/bin/env python3
"""Evaluates every Grafana panel query, dashboard variable and alert expression against a
running Prometheus that scrapes a running Meridian (scripts/check-observability.sh sets
them up). Fails (exit 1) on any query that errors or has no data, on any metric name a
query uses that Meridian does not export, and on any alert in --firing that does not fire.

Rules the check applies:
- Grafana variables are replaced before evaluation: $__rate_interval and $__interval by
  5s (four scrapes at the check's 1 s interval), $__range by 1m, $job by the scrape job,
  $instance and $region by .* (what "All" sends); ${DS_PROMETHEUS} must be every panel's
  and target's datasource.
- A query is evaluated as written and must not error. If it ends in a comparison with a
  number (`expr > 0`, `up == 0`, `x > 90 * 86400`), that comparison is removed and the
  rest must return at least one series: alert conditions are normally empty, what they
  compare is not. Otherwise the query itself must return at least one series.
- Every meridian_* name in a query must be a family in Meridian's own /metrics.
"""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request

COMPARISON = re.compile(r"^(?P<lhs>.*?)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[0-9.eE+\-*/ ]+\s*$", re.S)
METRIC = re.compile(r"\bmeridian_[a-z0-9_]+\b")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


class Checker:
    def __init__(self, prom, metrics_text, job):
        self.prom = prom.rstrip("/")
        self.families = set(re.findall(r"^# TYPE (\S+) ", metrics_text, re.M))
        self.job = job
        self.failures = []
        self.checked = 0

    def query(self, expr):
        url = f"{self.prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = json.loads(get(url))
        except urllib.error.HTTPError as e:
            body = json.loads(e.read().decode() or "{}")
        except OSError as e:
            return None, str(e)
        if body.get("status") != "success":
            return None, f"{body.get('errorType')}: {body.get('error')}"
        data = body["data"]
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            result = [result]
        return result, None

    def substitute(self, expr):
        for name, value in [
            ("__rate_interval", "5s"),
            ("__interval", "5s"),
            ("__range", "1m"),
            ("job", self.job),
            ("instance", ".*"),
            ("region", ".*"),
        ]:
            expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
        return expr

    def names(self, what, expr):
        for name in sorted(set(METRIC.findall(expr))):
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in self.families else name
            if family not in self.families:
                self.fail(what, f"metric {name} is not exported by Meridian")

    def check(self, what, expr, must_fire=False):
        self.checked += 1
        if "$" in expr:
            self.fail(what, f"unknown variable in {expr!r}")
            return
        self.names(what, expr)
        result, err = self.query(expr)
        if err:
            self.fail(what, f"error: {err}\n    {expr}")
            return
        m = COMPARISON.match(expr)
        data_expr = m.group("lhs") if m else expr
        if m:
            data, err = self.query(data_expr)
            if err:
                self.fail(what, f"error without its threshold: {err}\n    {data_expr}")
                return
        else:
            data = result
        if not data:
            self.fail(what, f"no data\n    {data_expr}")
            return
        if must_fire and not result:
            self.fail(what, f"expected to fire, but returns nothing\n    {expr}")
            return
        state = "fires" if m and result else ("ok" if m else f"{len(data)} series")
        print(f"  ok   {what}: {state}")

    def fail(self, what, msg):
        self.failures.append(f"{what}: {msg}")
        print(f"  FAIL {what}: {msg}")


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def check_dashboard(c, path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds["type"] != "datasource" or ds["query"] != "prometheus":
        c.fail("dashboard", "no datasource variable DS_PROMETHEUS of type prometheus")
    want_ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        if v.get("datasource") != want_ds:
            c.fail(f"variable ${v['name']}", "datasource is not ${DS_PROMETHEUS}")
        q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        if not m:
            c.fail(f"variable ${v['name']}", f"not a label_values() query: {q}")
            continue
        c.check(f"variable ${v['name']}", c.substitute(f"count by ({m.group(2)}) ({m.group(1)})"))
    ids = set()
    for p in panels(dash["panels"]):
        if p["id"] in ids:
            c.fail(f"panel {p['title']!r}", f"duplicate id {p['id']}")
        ids.add(p["id"])
        if p["type"] == "row":
            continue
        if p.get("datasource") != want_ds:
            c.fail(f"panel {p['title']!r}", "datasource is not ${DS_PROMETHEUS}")
        if not p.get("targets"):
            c.fail(f"panel {p['title']!r}", "no query")
        for t in p.get("targets", []):
            if t.get("datasource") != want_ds:
                c.fail(f"panel {p['title']!r}/{t['refId']}", "datasource is not ${DS_PROMETHEUS}")
            c.check(f"panel {p['title']!r}/{t['refId']}", c.substitute(t["expr"]))


def check_rules(c, expected_count, firing):
    groups = json.loads(get(f"{c.prom}/api/v1/rules"))["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    alerts = [r for r in rules if r["type"] == "alerting"]
    if len(alerts) != expected_count:
        c.fail("rules", f"Prometheus loaded {len(alerts)} alerts, the file has {expected_count}")
    for r in rules:
        if r.get("health") not in ("ok", "unknown") or r.get("lastError"):
            c.fail(f"rule {r['name']}", f"Prometheus evaluates it with an error: {r.get('lastError')}")
    for r in alerts:
        c.check(f"alert {r['name']}", r["query"], must_fire=r["name"] in firing)
    missing = set(firing) - {r["name"] for r in alerts}
    for name in sorted(missing):
        c.fail(f"alert {name}", "not in the rules")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--metrics", required=True, help="Meridian's /metrics URL")
    ap.add_argument("--job", default="meridian")
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--alerts", type=int, required=True, help="alerts in the rules file")
    ap.add_argument("--firing", default="", help="comma-separated alerts that must fire")
    ap.add_argument("--only", help="evaluate one expression (must fire) and nothing else")
    args = ap.parse_args()
    c = Checker(args.prometheus, get(args.metrics), args.job)
    if args.only:
        c.check("expression", args.only, must_fire=True)
    else:
        print("dashboard:")
        check_dashboard(c, args.dashboard)
        print("alert rules:")
        check_rules(c, args.alerts, [f for f in args.firing.split(",") if f])
    if c.failures:
        print(f"{len(c.failures)} of {c.checked} checks failed", file=sys.stderr)
        sys.exit(1)
    print(f"all {c.checked} queries return data")


if __name__ == "__main__":
    main()
