"""Drives the stats page in Debian's headless chromium for tests/stats_page.rs.

    python3 stats_page.py ADMIN_URL TOKEN SCREENSHOT_PATH

Talks to the Rust test by lines: it prints READY when the page shows every
server up (the header saying "started ... ago", the columns' titles what
they count), then waits for a line on stdin (the test has killed origin C),
prints DOWN once C's row says down (the page was not reloaded: a marker set
in the page before is still there) with its failed check in a tooltip and
every row's buttons on one line, clicks drain on A's row, prints DRAINED
once the row says drain, waits for a line (the test counted responses),
takes the screenshot and prints DONE. Every wait has a generous deadline;
a failure prints FAIL and why.
"""
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

DEADLINE = 30.0


def say(line):
    print(line, flush=True)


DRIVER = None


def wait(what, test):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            value = test()
            if value:
                return value
        except (StaleElementReferenceException, WebDriverException):
            pass
        time.sleep(0.1)
    logs = ""
    try:
        logs = "\n".join(str(e) for e in DRIVER.get_log("browser"))
        logs += "\n" + DRIVER.find_element(By.TAG_NAME, "body").text
    except Exception as e:  # the report is best effort
        logs = f"(no browser log: {e})"
    raise SystemExit(f"FAIL: no {what} within {DEADLINE}s\n{logs}")


def main():
    url, token, shot, a, c = sys.argv[1:6]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,560", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    global DRIVER
    driver = DRIVER = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{url}/?token={token}")
        state = lambda server: driver.execute_script(
            "const r = [...document.querySelectorAll('tr[data-server]')]"
            ".find(r => r.dataset.pool === 'app' && r.dataset.server === arguments[0]);"
            "return r ? r.dataset.state : null;", server)
        wait("three rows up", lambda: len(driver.find_elements(
            By.CSS_SELECTOR, "table[data-pool=app] tr[data-state=up]")) == 3)
        # No reload happened yet: the header says since when it runs.
        wait("'started ... ago'", lambda: driver.execute_script(
            "return document.getElementById('reload').textContent").startswith("started "))
        # The counted columns say what they count.
        titles = driver.execute_script(
            "return [...document.querySelectorAll('table[data-pool=app] th')].map(t => t.title).join(' | ')")
        if any(w not in titles for w in ("pocket_server_requests_total", "5xx", "pocket_server_failures_total")):
            raise SystemExit(f"FAIL: column titles do not say what they count: {titles}")
        driver.execute_script("window.pocketMarker = 'not reloaded';")
        say("READY")
        sys.stdin.readline()
        wait(f"row {c} down", lambda: state(c) == "down")
        if driver.execute_script("return window.pocketMarker") != "not reloaded":
            raise SystemExit("FAIL: the page was reloaded")
        # A failed check's reason, however long, leaves the buttons on one
        # line; the cell's tooltip has it whole.
        wait(f"a failed check on row {c}", lambda: "failed" in driver.execute_script(
            "const r = [...document.querySelectorAll('tr[data-server]')]"
            ".find(r => r.dataset.server === arguments[0]);"
            "return r ? r.querySelector('td.check').title : '';", c))
        tops = driver.execute_script(
            "return [...document.querySelectorAll('tr[data-server]')].map(r =>"
            " new Set([...r.querySelectorAll('button')].map(b => b.getBoundingClientRect().top)).size)")
        if any(n != 1 for n in tops):
            raise SystemExit(f"FAIL: a row's buttons wrap: {tops}")
        say("DOWN")

        def click_drain():
            rows = driver.find_elements(By.CSS_SELECTOR, "table[data-pool=app] tr[data-server]")
            row = next(r for r in rows if r.get_attribute("data-server") == a)
            row.find_element(By.CSS_SELECTOR, "button[data-action=drain]").click()
            return True
        wait("drain button", click_drain)
        wait(f"row {a} drain", lambda: state(a) == "drain")
        say("DRAINED")
        sys.stdin.readline()
        # The counters of the last requests, and a req/s figure, shown.
        time.sleep(2.5)
        driver.save_screenshot(shot)
        say("DONE")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
