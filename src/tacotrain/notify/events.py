"""What the trainer reports (:class:`Event`) and how one event reads as a short message.

Events carry a stable ``key`` (``"rollback"``, ``"nan_stop"`` ...) because deduplication and the
digest of suppressed events work per kind of problem, not per message text: the text changes
with every step number, the key does not.

Typical keys and their severity:

* critical: ``nan_stop``, ``crash``, ``guard_gave_up`` (training stopped or cannot continue);
* warning: ``rollback``, ``no_alignment``, ``val_loss_rising`` (needs a human look soon);
* info: ``started``, ``aligned``, ``phase_change``, ``finished`` (progress).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

# Telegram's own limits are 4096 characters per message and 1024 per photo caption; the body is
# cut well below that so a runaway traceback cannot produce a wall of text.
MAX_TEXT_CHARS = 800


class Severity(enum.IntEnum):
    """Ordered so that ``event.severity >= Severity.WARNING`` reads as intended."""

    INFO = 10
    WARNING = 20
    CRITICAL = 30

    @classmethod
    def parse(cls, value: Severity | str | int) -> Severity:
        """Accept ``"warning"`` from a config file as well as the enum member itself."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                raise ValueError(
                    f"unknown severity {value!r}; use info, warning or critical"
                ) from None
        return cls(value)

    @property
    def label(self) -> str:
        """Lower-case name, as written in configs and webhook JSON."""
        return self.name.lower()


@dataclass
class Event:
    """One thing worth telling a human about; ``time`` is wall-clock (for the digest's HH:MM)."""

    key: str
    severity: Severity
    title: str
    text: str = ""
    step: int | None = None
    image: Path | None = None
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Callers may pass "warning" or a str path; normalise once so the rest never has to.
        self.severity = Severity.parse(self.severity)
        if self.image is not None and not isinstance(self.image, Path):
            self.image = Path(self.image)


def format_message(event: Event, run_name: str) -> str:
    """Plain text, first line self-sufficient (it is what a phone lock screen shows).

    Example: ``[lj-base] WARNING at step 1200: rolled back to step 1000`` followed by the body.
    """
    where = f" at step {event.step}" if event.step is not None else ""
    head = f"[{run_name}] {event.severity.name}{where}: {event.title}".strip()
    body = event.text.strip()
    if len(body) > MAX_TEXT_CHARS:
        body = body[: MAX_TEXT_CHARS - 3].rstrip() + "..."
    return f"{head}\n{body}" if body else head


class DeliveryError(Exception):
    """A sink could not deliver a message; the flags tell the sender what to do next.

    ``retryable``: try again after a back-off (``retry_after`` seconds when the server said so).
    ``disables_sink``: the server rejected our credentials or destination, so every further
    message would fail the same way; the sink is switched off for the rest of the run instead
    of hammering the API. Messages never contain secrets (tokens, full webhook URLs).
    """

    def __init__(
        self,
        status: int | None,
        description: str,
        retryable: bool,
        retry_after: float | None = None,
        disables_sink: bool = False,
    ) -> None:
        self.status = status
        self.description = description
        self.retryable = retryable
        self.retry_after = retry_after
        self.disables_sink = disables_sink
        code = f"HTTP {status}" if status is not None else "no HTTP response"
        super().__init__(f"{code}: {description}")
