"""The Dagster web UI in a real browser: Playwright drives Debian's chromium against ``dagster dev``
(started as ``make ui`` starts it: workspace.yaml, repo root) on an instance where the demo graph
was materialised.  Every asset page renders with its description; the charts open as images that
decoded (naturalWidth > 0); the benchmark's numeric metadata draws in the Plots tab; the
``reevaluate`` job launched from the Launchpad succeeds; and the re-evaluation sensor, turned on
in the UI, re-runs the benchmark when a student checkpoint is materialised.

About three minutes on 2 CPU cores (materialising the demo graph, starting dagster dev, two runs).
Set AGEDISTILL_UI_SCREENSHOTS=docs/img to refresh the screenshots docs/UI.md shows.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import json
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from agedistill_dag.definitions import build_definitions
from agedistill_dag.jobs import AUTOMATION_SENSOR
from agedistill_core.pipeline import stage_keys
from agedistill_dag.materialize import STAGE_OF_ASSET, materialize_all
from agedistill_dag.profile import Profile
from agedistill_testing import REPO, write_params

CHROMIUM = Path("/usr/bin/chromium")
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError as exc:  # pragma: no cover - the dev dependencies include playwright
    pytestmark = pytest.mark.skip(reason=f"needs the playwright package (pip install playwright): {exc}")
else:
    pytestmark = pytest.mark.skipif(
        not CHROMIUM.is_file(), reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")

PROFILE = "demo"
# asset -> a numeric metadata entry its latest materialisation shows ({run}: the student's run name,
# which carries a hash of its recipe, e.g. mn3_small-455659)
ASSETS = {"face_manifest": "images", "face_crops": "images", "teacher_soft_labels": "faces", "vmage_table": "faces",
          "lfwc_images": "faces", "student_checkpoints": "best_val_mae", "benchmark_tables": "mae_to_teacher[{run}]"}
# asset -> (Markdown metadata entry holding the chart, the chart's alt text)
CHARTS = {"vmage_table": ("age_group_histogram", "teacher ages by SPEC group"),
          "student_checkpoints": ("training_curves", "{run} training curves"),
          "benchmark_tables": ("robustness_chart", "MAE per corruption and severity")}
START_TIMEOUT_S = 180      # dagster dev: webserver, daemon and code server on a busy machine
RUN_TIMEOUT_S = 300        # the reevaluate run: a process that imports torch, scores 21 faces x 5 sets
STOP_GRACE_S = 10          # dagster dev ignores SIGTERM while it waits for its children: SIGKILL then
UI_MS = 60_000             # Playwright waits for UI elements (the first page compiles the code location)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the whole group, SIGKILL to the group after ``grace_s``; returns when none is left."""
    pgid = proc.pid                       # started with start_new_session: it leads its own group
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()                   # reap the leader (a zombie still counts as a group member)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.wait(timeout=5)


# The code location as the UI knows it: dagster dev answers /server_info before its code server has
# loaded the definitions, and a page opened meanwhile shows each asset as an "External Asset"
# (known only from its materialisations in the instance) with Materialize disabled.
LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def code_locations(url: str) -> list[dict]:
    """The UI's code locations (name, loadStatus, locationOrLoadError), from its GraphQL API."""
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        workspace = json.load(resp)["data"]["workspaceOrError"]
    return workspace.get("locationEntries", [])


def _locations_loaded(url: str) -> bool:
    """True once every code location finished loading (fails the test if one failed to load)."""
    entries = code_locations(url)
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return False
    for e in entries:
        loaded = e["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            pytest.fail(f"code location {e['name']} failed to load: {loaded.get('message')}")
    return all((e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation" for e in entries)


def _screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("AGEDISTILL_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"ui_{name}.png"))


class UI:
    def __init__(self, url: str, home: Path, params: Path, log: Path):
        self.url, self.home, self.params, self.log = url, home, params, log
        settings = Profile.load(PROFILE, str(params)).settings          # the student's run (partition)
        self.run = stage_keys(settings, STAGE_OF_ASSET["student_checkpoints"])[0]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.is_file() else ""

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """dagster dev on a fresh instance holding the materialised demo graph (1 training epoch,
    4 LFW+C partitions); stopped, process group and all, at the end of the module."""
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    params = write_params(tmp, {PROFILE: {
        "workdir": str(tmp / "work"), "dataset": {"name": "demo", "root": str(tmp / "raw")}, "shard_size": 64,
        "students": {"epochs": 1, "batch_size": 32, "threads": 1},
        "corruptions": {"names": ["defocus_blur", "jpeg"], "severities": [1, 5]}}}, default=PROFILE)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        materialize_all(PROFILE, str(params), instance=instance)

    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "AGEDISTILL_PARAMS": str(params),
           "AGEDISTILL_PROFILE": PROFILE, "AGEDISTILL_EXECUTOR": "in_process"}
    log = tmp / "dagster_dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml",
                                 "-h", "127.0.0.1", "-p", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ui = UI(f"http://127.0.0.1:{port}", home, params, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster dev exited with {proc.returncode}:\n{ui.log_tail()}")
            try:                            # served, and the code location (the asset definitions) loaded
                if _locations_loaded(ui.url):
                    break
            except (OSError, ValueError, KeyError, TypeError):
                pass                                # not serving yet, or a half-started GraphQL answer
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not serve {ui.url} with its code location loaded within "
                            f"{START_TIMEOUT_S} s:\n{ui.log_tail()}")
            time.sleep(0.5)
        yield ui
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def browser(ui):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        # the first visit to a fresh instance shows Dagster's community dialog: skip it (the
        # instance remembers, so no later page shows it)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui.url}/assets/{PROFILE}/vmage_table")
        skip = page.get_by_role("button", name="Skip")
        skip.click(timeout=UI_MS)
        expect(skip).to_have_count(0)
        page.close()
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UI_MS)
    expect.set_options(timeout=UI_MS)       # assertions too (5 s by default: short on a busy machine)
    yield page
    page.close()


def _descriptions(ui: UI) -> dict[str, str]:
    graph = build_definitions(Profile.load(PROFILE, str(ui.params))).resolve_asset_graph()
    return {a: graph.get(dg.AssetKey([PROFILE, a])).description for a in ASSETS}


def test_every_asset_page_renders(ui, page):
    for asset, description in _descriptions(ui).items():
        page.goto(f"{ui.url}/assets/{PROFILE}/{asset}")
        expect(page.get_by_text(description, exact=True)).to_be_visible()
        expect(page.get_by_text("Latest materialization").first).to_be_visible()
        # the latest materialisation's metadata table, with its Plots view
        entry = page.get_by_role("row").filter(has=page.get_by_text(ASSETS[asset].format(run=ui.run), exact=True))
        expect(entry.first).to_be_visible()
        expect(page.get_by_role("button", name="Plots")).to_be_visible()
        assert "Unexpected GraphQL error" not in page.inner_text("body")


@pytest.mark.parametrize("asset", sorted(CHARTS))
def test_chart_opens_as_an_image(ui, page, asset):
    """Markdown metadata with a data: URI PNG: the metadata table shows it behind [Show Markdown]
    (Dagster inlines Markdown under 1000 characters only); the dialog shows the decoded image."""
    entry, alt = CHARTS[asset]
    alt = alt.format(run=ui.run)
    page.goto(f"{ui.url}/assets/{PROFILE}/{asset}")
    row = page.get_by_role("row").filter(has=page.get_by_text(entry, exact=True))
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.get_by_role("img", name=alt)
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width >= 300 and height >= 150, (asset, width, height)
    if asset == "benchmark_tables":
        _screenshot(page, "benchmark_chart")


def test_benchmark_numbers_plotted_over_materialisations(ui, page):
    page.goto(f"{ui.url}/assets/{PROFILE}/benchmark_tables")
    page.get_by_role("button", name="Plots").click()
    for name in (f"mae_to_teacher[{ui.run}]", "test_faces"):
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    canvases = page.locator("canvas")
    expect(canvases.first).to_be_visible()
    # each plot drew something: non-transparent pixels on its canvas
    painted = page.evaluate("""() => Array.from(document.querySelectorAll('canvas')).map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })""")
    assert len(painted) >= 2 and all(n > 100 for n in painted), painted
    _screenshot(page, "benchmark_plots")


def test_reevaluate_launched_from_the_launchpad_succeeds(ui, page):
    with ui.instance() as instance:
        before = len(instance.fetch_materializations(dg.AssetKey([PROFILE, "benchmark_tables"]), limit=100).records)
    page.goto(f"{ui.url}/jobs")
    # (a job's link is also named by its icons: match the text)
    page.get_by_role("link").filter(has=page.get_by_text("reevaluate", exact=True)).click()
    page.wait_for_url("**/jobs/reevaluate**")
    page.goto(page.url.split("/jobs/reevaluate")[0] + "/jobs/reevaluate/playground")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
    _screenshot(page, "reevaluate_run")
    with ui.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.job_name == "reevaluate", run
        assert run.status == dg.DagsterRunStatus.SUCCESS, f"{run.status}:\n{ui.log_tail()}"
        records = instance.fetch_materializations(dg.AssetKey([PROFILE, "benchmark_tables"]), limit=100).records
    assert len(records) == before + 1 and records[0].run_id == run_id
    assert f"mae_to_teacher[{ui.run}]" in records[0].asset_materialization.metadata


def _wait_for_run(ui: UI, known: set[str], timeout_s: float) -> dg.DagsterRun:
    """The first run not in ``known``, once it has finished (fails the test after ``timeout_s``)."""
    deadline, new = time.monotonic() + timeout_s, []
    with ui.instance() as instance:
        while time.monotonic() < deadline:
            new = [r for r in instance.get_runs() if r.run_id not in known]
            if new and new[-1].is_finished:
                return new[-1]
            time.sleep(2)
    pytest.fail(f"no finished run after {timeout_s} s (new runs: {new}):\n{ui.log_tail()}")


def test_reevaluation_sensor_turned_on_in_the_ui_reacts_to_a_new_checkpoint(ui, page):
    page.goto(f"{ui.url}/automation")
    page.get_by_role("link").filter(has=page.get_by_text(AUTOMATION_SENSOR, exact=True)).click()
    running = page.get_by_role("checkbox")       # the "Running" switch; its input is hidden: click its label
    expect(running).not_to_be_checked()          # off by default
    try:
        running.locator("..").click()
        expect(running).to_be_checked()
        # the first evaluation: nothing new since the sensor started, nothing requested
        expect(page.get_by_text("0 runs requested")).to_be_visible(timeout=START_TIMEOUT_S * 1000)
        with ui.instance() as instance:
            known = {r.run_id for r in instance.get_runs()}
            # a new checkpoint, recorded with the metadata of the real one, so that the asset page the
            # other tests read (in whatever order they run) still shows the curves and numbers
            key = dg.AssetKey([PROFILE, "student_checkpoints"])
            latest = instance.get_latest_materialization_event(key).asset_materialization
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=ui.run,
                                                                        metadata=dict(latest.metadata)))
        run = _wait_for_run(ui, known, RUN_TIMEOUT_S + 60)      # the sensor ticks every 30 s
        assert run.tags.get("dagster/sensor_name") == AUTOMATION_SENSOR, run.tags
        assert run.asset_selection == {dg.AssetKey([PROFILE, "benchmark_tables"])}
        assert run.status == dg.DagsterRunStatus.SUCCESS, f"{run.status}:\n{ui.log_tail()}"
    finally:
        if running.is_checked():
            running.locator("..").click()
        expect(running).not_to_be_checked()
