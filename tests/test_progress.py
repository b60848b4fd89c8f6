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
