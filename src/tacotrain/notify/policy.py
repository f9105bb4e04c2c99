"""Which events become messages: severity floor, per-key dedupe, a global token bucket, digest.

Messages stay rare enough that nobody mutes the bot before the one that matters (a crash).
The rules, in order:

1. **Severity floor.** Events below ``min_severity`` are dropped and not counted anywhere: the
   user asked not to hear about them, so a digest line about them would be noise too.
2. **Dedupe (non-critical only).** A warning or info event whose key was *sent* less than
   ``dedupe_seconds`` ago is suppressed. The window runs from the last message actually sent,
   so a condition that persists is re-announced once per window and its repeats are summed up in
   the digest. Critical events skip this rule: each crash or NaN stop is news.
3. **Global token bucket.** ``burst`` tokens, refilled at ``rate_limit_per_minute``; every sent
   message spends one, an empty bucket suppresses. Critical events are *not* exempt (a crash
   loop must not flood a phone either), but lower severities may not spend the last token when
   ``burst >= 2``: that token is reserved, so a critical event arriving in the middle of a
   warning storm still goes out. Over any window of ``t`` seconds at most
   ``burst + rate_limit_per_minute * t / 60`` messages pass.
4. **Digest.** Suppressed events are counted per key; :meth:`Policy.digest` turns the counts into
   one message at most every ``digest_interval_seconds`` (``force=True`` at close). Digests do
   not spend tokens: their own interval already bounds them.

The class is pure (no I/O, no threads) and takes its clock as an argument so tests can replay a
storm of a thousand events over a simulated minute without sleeping.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

from tacotrain.config import NotifyConfig
from tacotrain.notify.events import Event, Severity

Decision = Literal["send", "suppress", "drop"]

# How many keys a digest names before it says "and N more kinds": a digest must stay one short
# message even after a storm of distinct keys.
DIGEST_MAX_KEYS = 8


class Policy:
    """Decides ``send`` / ``suppress`` / ``drop`` per event; see the module docstring for rules.

    Not thread-safe on its own: :class:`~tacotrain.notify.notifier.Notifier` holds a lock.
    """

    def __init__(self, cfg: NotifyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._min = Severity.parse(cfg.min_severity)
        self._rate_per_second = cfg.rate_limit_per_minute / 60.0
        # One token kept back for critical events, unless that would leave none for the rest.
        self._reserve = 1 if cfg.burst >= 2 else 0
        now = clock()
        self._tokens = float(cfg.burst)
        self._refilled_at = now
        self._last_sent: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._suppressed_since: float | None = None  # wall time of the first uncounted-for one
        self._last_digest = now

    @property
    def pending_suppressed(self) -> int:
        """Suppressed events not yet reported in a digest."""
        return sum(self._suppressed.values())

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._refilled_at)  # a clock going backwards must not drain
        self._tokens = min(float(self.cfg.burst), self._tokens + elapsed * self._rate_per_second)
        self._refilled_at = now

    def _suppress(self, event: Event) -> Decision:
        if self._suppressed_since is None:
            self._suppressed_since = event.time
        self._suppressed[event.key] += 1
        return "suppress"

    def decide(self, event: Event) -> Decision:
        """Apply the rules to one event and update the state as if the decision is carried out.

        ``drop``: below the severity floor, forgotten. ``suppress``: counted for the digest.
        ``send``: a token was spent and the key's dedupe window restarts now.
        """
        if event.severity < self._min:
            return "drop"
        now = self._clock()
        self._refill(now)
        critical = event.severity >= Severity.CRITICAL
        if not critical:
            last = self._last_sent.get(event.key)
            if last is not None and now - last < self.cfg.dedupe_seconds:
                return self._suppress(event)
        needed = 1.0 if critical else 1.0 + self._reserve
        # Tiny tolerance: refills are float sums, 0.9999999 tokens after a full period is 1.
        if self._tokens + 1e-9 < needed:
            return self._suppress(event)
        self._tokens -= 1.0
        self._last_sent[event.key] = now
        return "send"

    def digest(self, force: bool = False) -> str | None:
        """One summary of suppressed events, or None when nothing is due.

        Due when something was suppressed and ``digest_interval_seconds`` passed since the last
        digest (or since the policy was created); ``force`` skips the interval (used at close).
        Returning a digest resets the counts.
        """
        if not self._suppressed:
            return None
        now = self._clock()
        if not force and now - self._last_digest < self.cfg.digest_interval_seconds:
            return None
        total = sum(self._suppressed.values())
        ranked = sorted(self._suppressed.items(), key=lambda kv: (-kv[1], kv[0]))
        parts = [f"{n} x {key}" for key, n in ranked[:DIGEST_MAX_KEYS]]
        if len(ranked) > DIGEST_MAX_KEYS:
            parts.append(f"and {len(ranked) - DIGEST_MAX_KEYS} more kinds")
        since = time.strftime("%H:%M", time.localtime(self._suppressed_since or time.time()))
        noun = "event" if total == 1 else "events"
        self._suppressed.clear()
        self._suppressed_since = None
        self._last_digest = now
        return f"{total} {noun} suppressed since {since}: {', '.join(parts)}"
