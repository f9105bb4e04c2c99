"""Rare, deduplicated, severity-ranked training alerts (Telegram and a JSON webhook).

Usage from the trainer::

    with Notifier(cfg.notify, run_name) as notifier:
        notifier.notify(Event("rollback", Severity.WARNING, "rolled back", "...", step=1200))

Secrets come only from ``TACOTRAIN_TELEGRAM_TOKEN`` / ``TACOTRAIN_TELEGRAM_CHAT_ID``; see
:mod:`tacotrain.notify.policy` for what gets sent and what gets summed up in a digest.
"""

from tacotrain.config import NotifyConfig, TelegramConfig, WebhookConfig
from tacotrain.notify.events import DeliveryError, Event, Severity, format_message
from tacotrain.notify.notifier import CHAT_ID_ENV, TOKEN_ENV, WEBHOOK_ENV, Notifier
from tacotrain.notify.policy import Decision, Policy
from tacotrain.notify.telegram import TelegramClient, TelegramError
from tacotrain.notify.webhook import WebhookClient, WebhookError

__all__ = [
    "CHAT_ID_ENV",
    "TOKEN_ENV",
    "WEBHOOK_ENV",
    "Decision",
    "DeliveryError",
    "Event",
    "Notifier",
    "NotifyConfig",
    "Policy",
    "Severity",
    "TelegramClient",
    "TelegramConfig",
    "TelegramError",
    "WebhookClient",
    "WebhookConfig",
    "WebhookError",
    "format_message",
]
