# SPDX-License-Identifier: MIT
"""The invariant checker of the fault tests (lease_records.py) on synthetic
records, so it provably fails on an overlap, and on the records real echo
backends write."""
import json
import signal
import subprocess

import pytest

from conftest import ECHO, wait_for
from lease_records import assert_invariant, check, parse_lines, read_records, summary


def rec(key, backend, token, pid, ev, ms):
    return json.dumps({"key": key, "token": str(token), "backend": backend, "pid": pid, "ev": ev, "ms": ms})


def life(key, backend, token, pid, start, end, stop=True):
    lines = [rec(key, backend, token, pid, "start", start)]
    t = start + 50
    while t < end:
        lines.append(rec(key, backend, token, pid, "tick", t))
        t += 50
    lines.append(rec(key, backend, token, pid, "stop" if stop else "tick", end))
    return lines


def records(*lives):
    lines = [l for lv in lives for l in lv]
    # Shuffled order across backends, as many writers appending to one file produce.
    lines.sort(key=lambda l: (json.loads(l)["ms"], l))
    return parse_lines("\n".join(lines) + "\n", "synthetic")


def test_one_after_the_other_passes():
    rep = assert_invariant(records(life("k", "b1", 100, 1, 1000, 2000),
                                   life("k", "b2", 200, 2, 2001, 3000, stop=False),
                                   life("k", "b3", 300, 3, 5000, 5100),
                                   life("other", "b4", 50, 4, 1500, 2500)))
    assert rep.keys == ["k", "other"]
    s = summary(rep)
    assert s["backends"] == 4 and s["no stop line (killed, or running at the end)"] == 1 and s["violations"] == 0


def test_overlap_fails_and_names_both_backends():
    rs = records(life("k", "b1", 100, 1, 1000, 2000, stop=False), life("k", "b2", 200, 2, 1900, 3000))
    rep = check(rs)
    assert len(rep.violations) == 1
    assert "b1" in rep.violations[0] and "b2" in rep.violations[0]
    with pytest.raises(AssertionError, match="two backends at once"):
        assert_invariant(rs)


def test_overlap_by_a_single_millisecond_fails():
    with pytest.raises(AssertionError):
        assert_invariant(records(life("k", "b1", 1, 1, 1000, 2000), life("k", "b2", 2, 2, 2000, 2100)))


def test_a_backend_inside_another_fails():
    with pytest.raises(AssertionError):
        assert_invariant(records(life("k", "b1", 1, 1, 1000, 9000), life("k", "b2", 2, 2, 3000, 3100),
                                 life("k", "b3", 3, 3, 9500, 9600)))


def test_two_processes_of_one_backend_at_once_fail():
    with pytest.raises(AssertionError, match="processes of one backend"):
        assert_invariant(records(life("k", "b1", 1, 1, 1000, 2000), life("k", "b1", 1, 2, 1500, 2500)))


def test_fencing_token_must_grow():
    with pytest.raises(AssertionError, match="did not increase"):
        assert_invariant(records(life("k", "b1", 200, 1, 1000, 2000), life("k", "b2", 100, 2, 3000, 4000)))
    with pytest.raises(AssertionError, match="did not increase"):
        assert_invariant(records(life("k", "b1", 200, 1, 1000, 2000), life("k", "b2", 200, 2, 3000, 4000)))
    with pytest.raises(AssertionError, match="not an integer"):
        assert_invariant(records(life("k", "b1", "x", 1, 1000, 2000)))
    with pytest.raises(AssertionError, match="several fencing tokens"):
        assert_invariant(records(life("k", "b1", 1, 1, 1000, 2000), life("k", "b1", 2, 2, 3000, 4000)))


def test_a_broken_line_is_an_error_but_a_torn_last_line_is_not():
    good = rec("k", "b1", 1, 1, "start", 1)
    assert len(parse_lines(good + "\n" + good[:10], "f")) == 1
    with pytest.raises(AssertionError, match="not a record line"):
        parse_lines(good[:10] + "\n" + good + "\n", "f")


def start_echo(path, key, backend, token):
    # It never listens: only its record matters here.
    env = {"PORT": "8080", "ECHO_NEVER_LISTEN": "1", "ECHO_RECORD_FILE": str(path),
           "SESSION_BACKEND_KEY": key, "SESSION_BACKEND_ID": backend, "SESSION_BACKEND_FENCING_TOKEN": str(token)}
    return subprocess.Popen([ECHO], env=env, stderr=subprocess.DEVNULL)


def test_real_echo_backends_sequential_pass_overlapping_fail(tmp_path):
    path = tmp_path / "records.jsonl"
    a = start_echo(path, "k", "ba-1", 10)
    wait_for(lambda: path.exists() and path.read_text().count("\n") >= 3, what="ticks")
    a.send_signal(signal.SIGTERM)
    a.wait()
    b = start_echo(path, "k", "ba-2", 20)
    wait_for(lambda: path.read_text().count('"ba-2"') >= 3, what="ticks of the second")
    b.kill()  # no stop line: its last tick ends it
    b.wait()
    rep = assert_invariant(read_records(str(tmp_path)))
    ls = {l.backend: l for l in rep.lives}
    assert ls["ba-1"].stopped and not ls["ba-2"].stopped
    assert ls["ba-1"].end < ls["ba-2"].start
    # Now two at once: the checker must fail on the real records too.
    c = start_echo(path, "k", "ba-3", 30)
    d = start_echo(path, "k", "ba-4", 40)
    try:
        wait_for(lambda: path.read_text().count('"ba-4"') >= 3 and path.read_text().count('"ba-3"') >= 3,
                 what="ticks of both")
    finally:
        c.kill()
        d.kill()
        c.wait()
        d.wait()
    with pytest.raises(AssertionError, match="ba-3"):
        assert_invariant(read_records(str(path)))
    # Every line is whole although four processes appended to one file.
    assert all(l.startswith("{") and l.endswith("}") for l in path.read_text().splitlines())
