"""The dashboard in a real headless browser (Debian's chromium, driven by Selenium): it logs in
with the printed URL, shows what `qsrv status` shows, updates live as tasks run and a worker
dies, shows a gateway user's job with its logs; a screenshot of each page is written and is not
blank; the browser's console has no errors."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qsrv
from qsrv.errors import TaskCancelledError
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster, cli_status, free_port, qsrv_cli
from tests._support.processes import stop_processes

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them)")


def ok_task(i: int) -> int:
    return i * 2


def bad_task(i: int) -> None:
    raise ValueError(f"dashboard failure {i}")


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def png_is_not_blank(path: Path) -> bool:
    """Whether a PNG shows something: its decoded rows hold many distinct byte values."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat))) > 16


def shoot(browser: Any, page: str, out: Path, name: str = "") -> Path:
    browser.execute_script(f"location.hash = '#{page}'")
    wait_for(lambda: browser.find_element(By.ID, f"page-{page}").is_displayed(), 20,
             f"the {page} page")
    path = out / f"{name or page}.png"
    assert browser.save_screenshot(str(path))
    assert png_is_not_blank(path), f"{path} is blank"
    return path


def text(browser: Any, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def console_errors(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def worker_rows(browser: Any) -> dict[str, dict[str, Any]]:
    """The workers table, read at once in the page (it is redrawn on every update)."""
    rows: list[dict[str, Any]] = browser.execute_script("""
        return [...document.querySelectorAll('#workers tbody tr')].map(tr => ({
            cells: [...tr.querySelectorAll('td')].map(td => td.textContent),
            dead: tr.classList.contains('dead')}));""")
    return {r["cells"][1].replace(" (gone)", ""): {
        "id": r["cells"][0], "executors": r["cells"][5], "running": r["cells"][6],
        "dead": r["dead"]} for r in rows}


def column(browser: Any, selector: str) -> list[str]:
    return list(browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
        selector))


def test_cluster_pages_live(browser: Any, tmp_path: Path) -> None:
    with Cluster() as cluster:
        cluster.worker("w1", "--cpus", "1")
        cluster.worker("w2", "--cpus", "1")
        wait_for(lambda: cluster.ready({"w1", "w2"}), 60, "two workers")
        port = free_port()
        dash = qsrv_cli("dashboard", "--address", cluster.address, "--port", str(port),
                        "--interval", "0.2", stdout=subprocess.PIPE)
        try:
            assert dash.stdout is not None
            line = dash.stdout.readline()
            url = line.split(": ", 1)[1].strip()
            assert url.startswith(f"http://127.0.0.1:{port}/?token=")
            _cluster_pages(browser, cluster, url, tmp_path)
        finally:
            stop_processes([dash])


def _cluster_pages(browser: Any, cluster: Cluster, url: str, out: Path) -> None:
    browser.get(url)  # logs in once, then the token leaves the address
    wait_for(lambda: browser.current_url.endswith(":" + url.split(":")[2].split("/")[0] + "/"),
             20, "the login redirect")
    status = cluster.status()
    wait_for(lambda: text(browser, "count-workers") == str(len(status["workers"])), 30,
             "the workers count")
    rows = wait_for(lambda: (r := worker_rows(browser)) and len(r) == 2 and r, 30, "rows")
    for w in status["workers"]:
        assert rows[w["name"]]["id"] == str(w["id"])
        assert rows[w["name"]]["executors"] == str(w["executors"])
    from qsrv.quantum.engines import platforms

    offered = {p.name for p in platforms(status)}
    assert "aer.statevector.cpu" in offered
    wait_for(lambda: set(column(browser, "#platforms tbody td:first-child")) == offered, 30,
             "the platforms the workers offer")
    shoot(browser, "cluster", out)

    # tasks run: the page follows without a reload
    qsrv.shutdown()
    qsrv.init(cluster.address, TOKEN)
    try:
        ok, bad = qsrv.distribute_task(ok_task), qsrv.distribute_task(bad_task)
        assert sum(qsrv.get([ok(i) for i in range(30)])) == 870
        for ref in [bad(i) for i in range(2)]:
            with pytest.raises(ValueError):
                qsrv.get(ref)
        never = ok.options(target={"nowhere": 1})(0)  # waits: no worker has 'nowhere'
        qsrv.cancel(never)  # the scheduler decides this failure: no executor reports it
        with pytest.raises(TaskCancelledError):
            qsrv.get(never, timeout=60)
        held = qsrv.reserve({"cpu": 1}, name="dashboard-reservation").wait(60)
        reservations = wait_for(lambda: browser.execute_script(
            "return [...document.querySelectorAll('#reservations tbody tr')].map(tr =>"
            " [...tr.querySelectorAll('td')].map(td => td.textContent))"), 30,
            "the reservation on the page")
        assert [r[:2] for r in reservations] == [[held.id, "dashboard-reservation"]]
        assert reservations[0][4] == "ready"
        held.release()
    finally:
        qsrv.shutdown()
    browser.execute_script("location.hash = '#tasks'")
    updates_before = int(browser.execute_script("return document.body.dataset.updates"))
    wait_for(lambda: int(text(browser, "total-done") or 0) >= 30
             and int(text(browser, "total-failed") or 0) >= 2, 30, "live task counts")
    wait_for(lambda: int(browser.execute_script("return document.body.dataset.updates"))
             > updates_before, 30, "updates pushed to the page")
    tracebacks = column(browser, "#failures details.failure pre")
    assert any("ValueError: dashboard failure" in t for t in tracebacks), tracebacks
    wait_for(lambda: "cancelled: 1" in text(browser, "failure-kinds"), 30, "failure kinds")
    kinds = browser.execute_script(
        "return [...document.querySelectorAll('#failures details.failure')].map(d =>"
        " [d.dataset.kind, d.querySelector('pre').textContent])")
    assert any(k == "cancelled" and "was cancelled" in t for k, t in kinds), kinds
    assert any(k == "error" and "ValueError" in t for k, t in kinds), kinds
    assert float(text(browser, "rate-submitted")) >= 0
    functions = column(browser, "#functions tbody td:first-child")
    assert any(f.endswith("ok_task") for f in functions)
    assert any(f.endswith("bad_task") for f in functions)
    assert browser.execute_script(
        "const c = document.getElementById('stream'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;") > 0, \
        "the task stream drew nothing"
    shoot(browser, "tasks", out)

    # a worker dies: the page says so
    stop_processes([cluster.workers["w2"]])
    wait_for(lambda: text(browser, "count-workers") == "1" if browser.execute_script(
        "location.hash = '#cluster'; return true") else False, 60, "one worker left")
    after = json.loads(cli_status(cluster.address, "--json").stdout)
    assert [w["name"] for w in after["workers"]] == ["w1"]
    rows = wait_for(lambda: (r := worker_rows(browser)) and r.get("w2", {}).get("dead") and r,
                    30, "the dead worker's row")
    assert not rows["w1"]["dead"]
    shoot(browser, "cluster", out, "cluster-after-worker-died")
    assert console_errors(browser) == []

    # the printed token logged in once; without the cookie the login page shows
    browser.delete_all_cookies()
    browser.get(url)
    assert browser.find_element(By.ID, "token").is_displayed()
    refused = console_errors(browser)  # the spent token: 401, the only error
    assert len(refused) == 1 and "401" in refused[0]["message"], refused


def test_gateway_jobs_with_logs(browser: Any, tmp_path: Path) -> None:
    from qsrv.gateway import Client, GatewayConfig, Program, add_user
    from tests._support.gateway import ThreadedGateway

    with Cluster() as cluster:
        cluster.worker("w1", "--cpus", "1")
        wait_for(lambda: cluster.ready({"w1"}), 60, "a worker")
        data = tmp_path / "data"
        gateway = ThreadedGateway(GatewayConfig(
            data_dir=data, port=0, cluster_address=cluster.address, cluster_token=TOKEN,
            log_flush_interval_s=0.1, stop_grace_s=2.0))
        try:
            alice = add_user(data, "alice")[1]
            bob = add_user(data, "bob")[1]
            src = tmp_path / "prog"
            src.mkdir()
            (src / "main.py").write_text(textwrap.dedent("""
                print("hello from alice's job")
            """))
            job = Client(gateway.url, alice).run(
                Program(title="hello", entrypoint="main.py", working_dir=str(src)))
            job.result(timeout=120)
            qasm = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
                    'h q[0];\ncx q[0],q[1];\nmeasure q -> c;\n')
            alices = Client(gateway.url, alice)
            session = alices.session("aer.statevector.cpu", max_duration="1h")
            batch = alices.create_batch(qasm, [{"shots": 50}] * 3,
                                        session=session).wait(timeout=120)
            bobs = Client(gateway.url, bob).run(
                Program(title="bobs", entrypoint="main.py", working_dir=str(src)))
            bobs.result(timeout=120)

            browser.get(gateway.url + "/dashboard/")
            browser.find_element(By.ID, "token").send_keys(alice)
            browser.find_element(By.CSS_SELECTOR, "form button").click()
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                   f"#jobs tr[data-job-id='{job.job_id}']"),
                     30, "alice's job on the page")
            ids = browser.execute_script(
                "return [...document.querySelectorAll('#jobs tbody tr')]"
                ".map(tr => tr.dataset.jobId)")
            assert ids == [job.job_id]  # not bob's
            assert not browser.find_element(By.ID, "nav-cluster").is_displayed()
            browser.execute_script(  # the table is redrawn as updates come: click in one go
                "document.querySelector(`button[data-job-id='${arguments[0]}']`).click()",
                job.job_id)
            wait_for(lambda: "hello from alice's job" in text(browser, "job-logs"), 30,
                     "the job's logs")
            batches = wait_for(lambda: browser.execute_script(
                "return [...document.querySelectorAll('#batches tbody tr')].map(tr =>"
                " [tr.dataset.batchId, ...[...tr.querySelectorAll('td')].map(td =>"
                " td.textContent)])"), 30, "the batch")
            assert [b[0] for b in batches] == [batch.id]
            assert batches[0][5] == "3 / 3" and batches[0][3] == "DONE"
            sessions = browser.execute_script(
                "return [...document.querySelectorAll('#sessions tbody tr')].map(tr =>"
                " [tr.dataset.sessionId, tr.querySelectorAll('td')[1].textContent])")
            assert sessions == [[session.id, "aer.statevector.cpu"]], \
                text(browser, "gateway-note")
            assert batch.session_id == session.id
            shoot(browser, "gateway", tmp_path)
            # alice cannot read bob's logs through the dashboard
            status = browser.execute_script(
                "return fetch('api/jobs/' + arguments[0] + '/logs').then(r => r.status)",
                bobs.job_id)
            assert status == 404
            assert text(browser, "jobs-by-status") == "jobs SUCCEEDED: 1, quantum jobs DONE: 3"
            assert [e for e in console_errors(browser) if "/logs" not in e["message"]] == []

            # the cluster token: jobs counted by user and status, nobody's jobs or logs
            browser.get(gateway.url + "/dashboard/logout")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "form button").click()
            browser.execute_script("location.hash = '#gateway'")
            rows = wait_for(lambda: browser.execute_script(
                "return [...document.querySelectorAll('#by-user tbody tr')].map(tr =>"
                " [...tr.querySelectorAll('td')].map(td => td.textContent))"), 30,
                "jobs by user")
            assert ["alice", "jobs", "SUCCEEDED", "1"] in rows
            assert ["bob", "jobs", "SUCCEEDED", "1"] in rows
            assert ["alice", "quantum jobs", "DONE", "3"] in rows, rows
            assert browser.find_element(By.ID, "nav-cluster").is_displayed()
            assert not browser.find_element(By.ID, "jobs").is_displayed()
            shoot(browser, "gateway", tmp_path, "gateway-by-user")
            assert console_errors(browser) == []
        finally:
            gateway.stop()
