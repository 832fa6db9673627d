"""Loads the demo's page in Debian's headless chromium for tests/demo.rs.

    python3 demo_page.py URL LOADS

Opens URL, then reloads it until it was loaded LOADS times, as a newcomer
does after reading the demo's welcome text. After each load it prints the
page's text on one line (the origin's "hello from A (request N) path /"),
so the Rust test sees which server each page load reached. A browser asks
for /favicon.ico after each page; the test reads Pocket's access log for
those. Every wait has a generous deadline; a failure prints FAIL and why.
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


def body_text(driver):
    """The page's text once it has some (a reload may still be loading)."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            text = driver.find_element(By.TAG_NAME, "body").text.strip()
            if text:
                return " ".join(text.split())
        except (StaleElementReferenceException, WebDriverException):
            pass
        time.sleep(0.1)
    raise SystemExit(f"FAIL: the page showed no text within {DEADLINE}s")


def main():
    url, loads = sys.argv[1], int(sys.argv[2])
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=800,400", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(DEADLINE)
    try:
        driver.get(url)
        say(body_text(driver))
        for _ in range(loads - 1):
            # A marker set in the page: gone once the reload has replaced it,
            # so the text read next is the new load's, not the old one's.
            driver.execute_script("window.pocketMarker = 'old page';")
            driver.refresh()
            end = time.monotonic() + DEADLINE
            while driver.execute_script("return window.pocketMarker || ''") == "old page":
                if time.monotonic() > end:
                    raise SystemExit(f"FAIL: the page was not reloaded within {DEADLINE}s")
                time.sleep(0.1)
            say(body_text(driver))
        say("DONE")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
