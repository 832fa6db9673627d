"""Checks a tcp listener's rows on the stats page in Debian's headless
chromium, for tests/stats_page.rs (a_tcp_listener_row_counts_...).

    python3 stats_page_tcp.py ADMIN_URL SCREENSHOT_PATH

The test has made 3 connections to listener "db" that no server took (SC)
and 2 to "gate" that on_connect refused (PR). Prints OK once the page shows:
both rows in the "TCP listeners" table with a "tcp" mark, db's connections
3, failed 3, rejected 0; gate's connections 2, rejected 2; the column titles
naming connections and pocket_tcp_connections_total, never requests; the
pool db table marked tcp with connection columns. Else FAIL and why, within
a generous deadline.
"""
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

DEADLINE = 30.0

ROWS = """
const row = l => document.querySelector('#tcp-listeners tr[data-listener="' + l + '"]');
const cell = (l, c) => { const r = row(l); const td = r && r.querySelector('td.' + c); return td ? td.textContent : null; };
return {
  db: [cell('db', 'connections'), cell('db', 'rejected'), cell('db', 'failed')],
  gate: [cell('gate', 'connections'), cell('gate', 'rejected'), cell('gate', 'failed')],
  mark: row('db') ? row('db').querySelector('.mode').textContent : null,
  visible: !document.getElementById('tcp-listeners').hidden,
  httpHidden: document.getElementById('listeners').hidden,
  titles: [...document.querySelectorAll('#tcp-listeners th')].map(t => t.textContent + ' ' + t.title).join(' | '),
  pool: [...document.querySelectorAll('table[data-pool=db] th')].map(t => t.textContent + ' ' + t.title).join(' | '),
  poolMode: (document.querySelector('table[data-pool=db]') || {dataset: {}}).dataset.mode,
  poolTitle: document.querySelector('table[data-pool=db]') ? document.querySelector('table[data-pool=db]').previousSibling.textContent : '',
};
"""


def main():
    url, shot = sys.argv[1:3]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,560", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/")
        want = {"db": ["3", "0", "3"], "gate": ["2", "2", "0"]}
        seen = None
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                seen = driver.execute_script(ROWS)
            except WebDriverException as e:
                seen = str(e)
            if isinstance(seen, dict) and seen["db"] == want["db"] and seen["gate"] == want["gate"]:
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"FAIL: the tcp rows never showed {want}: {seen}")
        problems = []
        if seen["mark"] != "tcp":
            problems.append(f"no tcp mark on db's row: {seen['mark']!r}")
        if not seen["visible"] or not seen["httpHidden"]:
            problems.append("the TCP listeners table should show, the (empty) HTTP one not")
        for words, where in ((seen["titles"], "listener"), (seen["pool"], "pool")):
            if "connections" not in words or "request" in words:
                problems.append(f"{where} columns do not count connections: {words}")
        if "pocket_tcp_connections_total" not in seen["titles"]:
            problems.append(f"listener columns do not name their metric: {seen['titles']}")
        if "pocket_server_tcp_connections_total" not in seen["pool"]:
            problems.append(f"pool columns do not name their metric: {seen['pool']}")
        if seen["poolMode"] != "tcp" or "tcp" not in seen["poolTitle"]:
            problems.append(f"pool db not marked tcp: {seen['poolMode']!r} {seen['poolTitle']!r}")
        if problems:
            raise SystemExit("FAIL: " + "; ".join(problems))
        driver.save_screenshot(shot)
        print("OK", flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
