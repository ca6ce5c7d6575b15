# SPDX-License-Identifier: MIT
"""The one promise users build on, checked from the backends' own records:
at most one backend per key at any moment, and fencing tokens of a key that
only ever grow.

Every echo backend started with ECHO_RECORD_FILE appends JSON lines
  {"key":K,"token":T,"backend":B,"pid":N,"ev":"start"|"tick"|"stop","ms":REALTIME_MS}
while it runs (a tick every 50 ms). A SIGKILLed backend writes no stop line,
so the life of one backend process is [first line, last line]: it certainly
ran then, which is all the check needs. Two lives of one key overlap when one
starts before the other's last line. The check never looks at controller or
drone state, so it holds whatever they believe.
"""
import glob
import json
import os
from dataclasses import dataclass, field


@dataclass
class Life:
    """One backend process, as its record shows it."""
    key: str
    backend: str
    token: str
    pid: int
    start: int          # ms of its first line
    end: int            # ms of its last line
    stopped: bool       # wrote a stop line (exited by itself or on SIGTERM)
    source: str = ""
    lines: int = 0

    def describe(self):
        how = "stop line" if self.stopped else "last tick (no stop line: killed)"
        return (f"backend {self.backend} token {self.token} pid {self.pid} "
                f"[{self.start} .. {self.end}] ({self.end - self.start} ms, {how}; {self.source})")


@dataclass
class Report:
    lives: list = field(default_factory=list)
    violations: list = field(default_factory=list)

    @property
    def keys(self):
        return sorted({l.key for l in self.lives})

    def by_key(self):
        out = {}
        for l in self.lives:
            out.setdefault(l.key, []).append(l)
        for v in out.values():
            v.sort(key=lambda l: (l.start, l.end))
        return out


def parse_lines(text, source=""):
    """Records from the text of one file. A line cut short by a process that
    died in the middle of a write cannot happen (one write(2) per line on
    O_APPEND), but a reader racing a writer may see a last line without its
    newline: that one is skipped. Anything else that does not parse is an
    error, so a broken record never passes silently."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            rec = json.loads(line)
            rec["key"], rec["token"], rec["backend"], int(rec["pid"]), int(rec["ms"]), rec["ev"]
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                continue
            raise AssertionError(f"{source}:{i + 1}: not a record line: {line!r}")
        rec["source"] = source
        out.append(rec)
    return out


def read_records(*paths):
    """Records from files, or from every *.jsonl under directories."""
    out = []
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "**", "*.jsonl"), recursive=True)) if os.path.isdir(p) else [p]
        for f in files:
            if os.path.exists(f):
                with open(f, errors="replace") as fh:
                    out.extend(parse_lines(fh.read(), os.path.basename(f)))
    return out


def lives(records):
    """One Life per (key, backend, token, pid)."""
    acc = {}
    for r in records:
        ident = (r["key"], r["backend"], r["token"], int(r["pid"]))
        ms = int(r["ms"])
        l = acc.get(ident)
        if l is None:
            l = acc[ident] = Life(r["key"], r["backend"], r["token"], int(r["pid"]), ms, ms, False,
                                  r.get("source", ""))
        l.start = min(l.start, ms)
        l.end = max(l.end, ms)
        l.stopped = l.stopped or r["ev"] == "stop"
        l.lines += 1
    return list(acc.values())


def _token_int(t):
    try:
        return int(t)
    except (TypeError, ValueError):
        return None


def check(records):
    """All violations of the invariant in these records (an empty list: none)."""
    rep = Report(lives=lives(records))
    for key, ls in rep.by_key().items():
        # Overlap: sorted by start, each life against every earlier one still running.
        for j, b in enumerate(ls):
            for a in ls[:j]:
                if b.start <= a.end:
                    same = a.backend == b.backend
                    rep.violations.append(
                        f"key {key!r}: two {'processes of one backend' if same else 'backends'} at once "
                        f"for {a.end - b.start + 1} ms:\n    {a.describe()}\n    {b.describe()}")
        # Fencing tokens: one per backend, strictly growing with the backends' start times.
        first = {}
        for l in ls:
            first.setdefault(l.backend, l)
        seq = sorted(first.values(), key=lambda l: l.start)
        for l in seq:
            if _token_int(l.token) is None:
                rep.violations.append(f"key {key!r}: fencing token is not an integer: {l.describe()}")
        tokens = {}
        for l in ls:
            tokens.setdefault(l.backend, set()).add(l.token)
        for bid, ts in tokens.items():
            if len(ts) > 1:
                rep.violations.append(f"key {key!r}: backend {bid} ran with several fencing tokens {sorted(ts)}")
        for a, b in zip(seq, seq[1:]):
            ta, tb = _token_int(a.token), _token_int(b.token)
            if ta is not None and tb is not None and not tb > ta:
                rep.violations.append(
                    f"key {key!r}: fencing token did not increase ({ta} then {tb}):\n"
                    f"    {a.describe()}\n    {b.describe()}")
    return rep


def assert_invariant(records, what="records"):
    """Raises AssertionError naming every overlap and token regression; returns the report."""
    rep = check(records)
    if rep.violations:
        raise AssertionError(f"{len(rep.violations)} violation(s) of 'at most one backend per key' in {what}:\n"
                             + "\n".join(rep.violations))
    return rep


def summary(rep):
    """A few numbers for a printed table."""
    ls = rep.lives
    return {
        "keys": len(rep.keys),
        "backends": len({l.backend for l in ls}),
        "no stop line (killed, or running at the end)": sum(1 for l in ls if not l.stopped),
        "record lines": sum(l.lines for l in ls),
        "violations": len(rep.violations),
    }
