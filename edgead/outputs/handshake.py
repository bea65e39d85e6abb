"""The camera's digital handshake with the PLC: busy, result valid, pass and fail outputs
(ready is the line's own output). The sequence per part, as vision sensors wire it:

  trigger -> result_valid off, pass off, fail off, busy on
  result  -> pass or fail on, then result_valid on; busy off when no other part is in work

The PLC latches pass/fail on the rising edge of result_valid. A part failed safe (no decision
by its deadline) finishes with fail like a reject; its late result changes nothing.
"""

from __future__ import annotations

import threading

from edgead.outputs.gpio import LineIO

OUTPUTS = ("busy", "result_valid", "pass", "fail")


class Handshake:
    def __init__(self, line: LineIO):
        self._line = line
        self._lock = threading.Lock()
        self._in_work = 0

    def started(self) -> None:
        with self._lock:
            self._in_work += 1
            for name in ("result_valid", "pass", "fail"):
                self._line.set_output(name, False)
            self._line.set_output("busy", True)

    def finished(self, decision: str) -> None:
        """``decision``: ok, or anything else (reject, error) for fail."""
        with self._lock:
            self._in_work = max(0, self._in_work - 1)
            self._line.set_output("pass", decision == "ok")
            self._line.set_output("fail", decision != "ok")
            self._line.set_output("result_valid", True)  # after pass/fail: they are settled when it rises
            self._line.set_output("busy", self._in_work > 0)
