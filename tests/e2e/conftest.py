"""pytest's side of the end-to-end tests: fixtures, sanitizer checks and
the no-skip switch. The farm itself (Broker, Agent, Target, clients,
certificates, wait_until, ...) is the library farm.py.

Fixtures:
  broker_factory(**conf) -> Broker   a started broker (stopped at teardown)
  broker                             broker_factory() with short health timings
  stopped_at_teardown                a list whose objects are stopped at teardown

Sanitizers: every process started here inherits ASAN_OPTIONS,
UBSAN_OPTIONS and LSAN_OPTIONS that halt on the first error and write reports
to files under SAN_DIR, and TSAN_OPTIONS that write ThreadSanitizer's reports
there too (with tests/tsan/tsan.supp: uninstrumented libraries only); an autouse fixture fails the test whose processes
left a report there, or whose logs hold one.

TSB_E2E_ENGINE=postgresql (make e2e-pg): brokers run on PostgreSQL
(farm.py); the cluster they share is stopped at session end, and the tests
marked @pytest.mark.sqlite_only (they work on SQLite's file) are deselected,
not skipped.

TSBROKER_NO_SKIP=1 (make test with CI=true, .ci/run): a skipped test fails
the run, with the skip's reason; what the tests need is installed by
tools/deps.sh test, so a skip in CI is a missing install step or a bug.
"""
import glob
import os
import pathlib
import shutil
import tempfile
import time

import pytest

import farm
from farm import ROOT, Broker

NO_SKIP = os.environ.get("TSBROKER_NO_SKIP") == "1"


# ---- sanitizers -------------------------------------------------------------
SAN_DIR = os.environ.get("TSBROKER_SAN_DIR") or tempfile.mkdtemp(prefix="tsbroker-san-")
os.makedirs(SAN_DIR, exist_ok=True)
os.chmod(SAN_DIR, 0o1733)   # the front processes (another user) write theirs too
SAN_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                "WARNING: AddressSanitizer", "ERROR: UndefinedBehaviorSanitizer",
                "WARNING: ThreadSanitizer", "FATAL: ThreadSanitizer")


def _san_env():
    lsan_supp = os.path.join(ROOT, "tests", "asan", "lsan.supp")
    tsan_supp = os.path.join(ROOT, "tests", "tsan", "tsan.supp")
    opts = {
        "ASAN_OPTIONS": f"halt_on_error=1:abort_on_error=0:log_exe_name=1:"
                        f"log_path={SAN_DIR}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_exe_name=1:log_path={SAN_DIR}/ubsan",
        "LSAN_OPTIONS": f"suppressions={lsan_supp}:print_suppressions=0",
        "TSAN_OPTIONS": f"suppressions={tsan_supp}:print_suppressions=0:log_exe_name=1:"
                        f"second_deadlock_stack=1:log_path={SAN_DIR}/tsan",
    }
    for k, v in opts.items():
        os.environ[k] = v


_san_env()


def sanitizer_reports(paths=()):
    """{file: text} of sanitizer reports in SAN_DIR and in the given log files."""
    found = {}
    for f in glob.glob(os.path.join(SAN_DIR, "*")):
        if f.endswith(".seen"):
            continue
        with open(f, errors="replace") as fh:
            found[f] = fh.read()
    for f in paths:
        try:
            with open(f, errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        if any(p in text for p in SAN_PATTERNS):
            found[f] = text
    return found


@pytest.fixture(autouse=True)
def no_sanitizer_reports(tmp_path):
    """Fails a test whose processes (stopped by then: this fixture is torn
    down last) reported an ASan/UBSan/LSan error."""
    early = sanitizer_reports()
    if early:	# left by a fixture torn down after the previous test
        for f in early:
            os.rename(f, f + ".seen")
        pytest.fail("sanitizer reports from an earlier teardown:\n" +
                    "\n".join(f"== {f}\n{t[-6000:]}" for f, t in early.items()), pytrace=False)
    yield
    logs = glob.glob(os.path.join(str(tmp_path), "**", "*.log"), recursive=True)
    logs += glob.glob(os.path.join(str(tmp_path), "**", "*.out"), recursive=True)
    found = sanitizer_reports(logs)
    if found:
        text = "\n".join(f"== {f}\n{t[-6000:]}" for f, t in found.items())
        for f in found:
            if f.startswith(SAN_DIR):
                os.rename(f, f + ".seen")
        pytest.fail(f"sanitizer reports:\n{text}", pytrace=False)


# ---- the engine axis (TSB_E2E_ENGINE) -------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: works on SQLite's file; deselected "
                            "under TSB_E2E_ENGINE=postgresql")


def pytest_report_header(config):
    return f"tsbroker e2e engine: {farm.ENGINE}"


def pytest_collection_modifyitems(config, items):
    if farm.ENGINE == "sqlite":
        return
    keep = [i for i in items if i.get_closest_marker("sqlite_only") is None]
    gone = [i for i in items if i.get_closest_marker("sqlite_only") is not None]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    """Reports written after the last test's check fail the run too; the
    shared PostgreSQL cluster (if one was started) stops."""
    farm.shared_pg_stop()
    late = sanitizer_reports()
    if late:
        print("\nsanitizer reports after the last test:\n" +
              "\n".join(f"== {f}\n{t[-6000:]}" for f, t in late.items()))
        session.exitstatus = 1
    else:
        seen = glob.glob(os.path.join(SAN_DIR, "*.seen"))
        if not seen and "TSBROKER_SAN_DIR" not in os.environ:
            os.rmdir(SAN_DIR)


@pytest.fixture
def pg_cluster():
    """The pytest process's PostgreSQL primary (farm.shared_pg, started at
    first use): each test makes its own database on it."""
    return farm.shared_pg()


@pytest.fixture
def stopped_at_teardown():
    """A list: whatever a test or fixture appends to it (an object with
    stop(): Broker, Target, ...) is stopped at teardown, the last first."""
    made = []
    yield made
    for x in reversed(made):
        x.stop()


@pytest.fixture(scope="module")
def module_wall_time(request):
    """Prints a module's wall time at its end (the slow suites use it:
    pytestmark = pytest.mark.usefixtures("module_wall_time"))."""
    t = time.monotonic()
    yield
    print(f"\n[{request.module.__name__}] module wall time {time.monotonic() - t:.1f} s")


@pytest.fixture
def broker_factory(tmp_path, stopped_at_teardown):
    def make(name="broker", start=True, **conf):
        b = Broker(tmp_path / name, **conf)
        stopped_at_teardown.append(b)
        return b.start() if start else b
    return make


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


# ---- no skips under TSBROKER_NO_SKIP=1 ---------------------------------------

def _no_skip(report):
    """Turns a skipped report into a failure that names the skip's reason."""
    if not (NO_SKIP and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped, and TSBROKER_NO_SKIP=1 makes a skip fail: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _no_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _no_skip(outcome.get_result())


@pytest.fixture
def open_dir():
    """A directory another user (nobody, the unit's user) can reach: pytest's
    temporary directories are root's, 0700."""
    d = tempfile.mkdtemp(prefix="tsbroker-open-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)
