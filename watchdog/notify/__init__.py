"""Notification stage: tell people and systems about incident edges. Stage: notify.

`routing` picks receivers for a notification (an Alertmanager-like tree with `continue` and time
windows), `render` builds the human text, and `notifiers/` holds one module per receiver kind with
its config model, registered in `notifiers.NOTIFIERS`. The durable outbox and the dispatcher that
calls `Notifier.send` with retries live beside them. Nothing in this package may import another
stage package, raise on a failed delivery, or let a secret into a reason, a log line or a row.
"""
