import io

from preprocess.batch import Progress


def test_progress_in_a_log_writes_whole_lines_with_rates():
    log = io.StringIO()  # not a terminal, as in CI or a batch job's output
    with Progress(40, "videos", desc="flow", file=log) as progress:
        for _ in range(40):
            progress.advance(frames=25)
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 20  # one line per 5 % of the work, the last at 40/40, none repeated at the close
    assert lines[-1].startswith("flow: 100%") and "40/40" in lines[-1]
    assert all("videos/s" in line and "frames/s" in line for line in lines)


def test_progress_of_nothing_still_says_so_once():
    log = io.StringIO()
    with Progress(0, "videos", desc="pose", file=log):
        pass
    assert log.getvalue().count("\n") == 1 and "pose" in log.getvalue()


def test_slow_items_in_a_log_still_get_one_line_per_5_percent(monkeypatch):
    # tqdm's monitor thread lowers miniters to 1 when a bar has printed nothing for maxinterval seconds; with slow
    # items (pose: a second a video) the log then got a line per item. Here the monitor looks every 10 ms.
    import time

    from tqdm import tqdm

    for cls in (tqdm, Progress):  # a monitor already running keeps its 10 s interval: start a fresh one
        if cls.__dict__.get("monitor") is not None:
            cls.monitor.exit()
            monkeypatch.setattr(cls, "monitor", None)
    monkeypatch.setattr(tqdm, "monitor_interval", 0.01)
    log = io.StringIO()
    with Progress(40, "videos", desc="pose", file=log, maxinterval=0.05) as progress:
        for _ in range(40):
            time.sleep(0.03)
            progress.advance()
    assert len(log.getvalue().splitlines()) == 20
