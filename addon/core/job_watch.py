"""Bounded job states on the add-on side: every job leaves STARTING / RUNNING / CANCELLING in time.

No bpy here (tested in plain Python). The job controller feeds `JobWatch` every event the backend
client queues and asks it, on each timer tick, whether the job must end now:

- a backend that is silent for `ping_after_s` is pinged (the server answers pings while a job runs);
  one that stays silent for `silent_limit_s` (no event, no pong, no stderr line) is declared hung:
  the job fails with a hint and the controller replaces the process;
- a cancel that the backend has not honoured after `cancel_grace_s` ends the job as well;
- a protocol error with ``id: null`` while the job has had no answer yet is the backend's reply to
  the job's own request line (it could not read it, e.g. over its size limit): it fails the job
  instead of being ignored.

Decisions come back as ``error`` events (`protocol.error_event`) so that the job's state and error
fields still change in one place only: the protocol Job's ``apply``.
"""

import time

from . import protocol as P

ERR_UNRESPONSIVE = "BackendUnresponsive"
ERR_CANCEL_TIMEOUT = "CancelTimeout"


class JobWatch:
    """Deadlines of one job; `clock` is injectable for tests."""

    def __init__(self, job, ping_after_s=20.0, silent_limit_s=180.0, cancel_grace_s=30.0, clock=time.monotonic):
        self.job = job
        self.ping_after_s = ping_after_s
        self.silent_limit_s = silent_limit_s
        self.cancel_grace_s = cancel_grace_s
        self.clock = clock
        self.last_heard = clock()
        self.last_ping = None
        self.cancel_sent_at = None
        self.answered = False  # the backend has sent an event with this job's id

    def heard(self, event=None):
        """Any sign of life from the backend (an event, a pong, a log line)."""
        self.last_heard = self.clock()
        if event is not None and event.get("id") == self.job.id:
            self.answered = True

    def output_seen(self, at):
        """The client's time (time.monotonic) of the backend's last output line, stdout or stderr."""
        if at is not None and at > self.last_heard:
            self.last_heard = at

    def cancel_sent(self):
        if self.cancel_sent_at is None:
            self.cancel_sent_at = self.clock()

    def owns(self, event):
        """True when `event` (not addressed to this job's id) still ends this job: an ``id: null``
        protocol error before the job had any answer is the reply to its own request line."""
        return (event.get("type") == P.ERROR and event.get("id") is None and not self.answered
                and not self.job.finished)

    def adopt(self, event):
        """The ``id: null`` error `event` re-addressed to this job, with a hint for the user."""
        hint = event.get("hint") or ("The backend could not read this request. Update the add-on and the backend "
                                     "together; if the request holds very large data (many images, a huge voxel "
                                     "list), make it smaller.")
        return P.error_event(self.job.id, event.get("error_type") or P.ERR_PROTOCOL,
                             event.get("message") or "The backend refused the request.", hint)

    def wants_ping(self):
        """True when it is time to ping a silent backend (at most once per `ping_after_s`)."""
        now = self.clock()
        if self.job.finished or now - self.last_heard < self.ping_after_s:
            return False
        if self.last_ping is not None and now - self.last_ping < self.ping_after_s:
            return False
        self.last_ping = now
        return True

    def overdue(self):
        """An ``error`` event that must end the job now, or None."""
        if self.job.finished:
            return None
        now = self.clock()
        if self.cancel_sent_at is not None and now - self.cancel_sent_at > self.cancel_grace_s:
            return P.error_event(self.job.id, ERR_CANCEL_TIMEOUT,
                                 "The backend did not stop within %d s of the cancel." % self.cancel_grace_s,
                                 "The backend was stopped; nothing in the scene was changed. It restarts on the "
                                 "next job.")
        if now - self.last_heard > self.silent_limit_s:
            return P.error_event(self.job.id, ERR_UNRESPONSIVE,
                                 "The backend sent nothing for %d s (not even an answer to a ping)."
                                 % self.silent_limit_s,
                                 "It was stopped and restarts on the next job; nothing in the scene was changed. "
                                 "If this repeats, see the backend log (add-on preferences) and try fewer steps "
                                 "or a GPU.")
        return None
