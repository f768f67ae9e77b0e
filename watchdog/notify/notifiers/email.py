"""Email receiver over SMTP (stdlib smtplib in a worker thread). Stage: notify.

Plain-text mail with the same content as the other receivers: subject = the title line, body = the
rendered text (capped). Security: `starttls` (default, port 587), `ssl` (implicit TLS, port 465) or
`none` (port 25; AUTH over it is refused unless `allow_insecure_auth`). Certificates are verified
(system store or `ca_file`). Messages of one incident share a `References` header so mail clients
thread them; `Message-ID` is derived from the notification id (stable across retries).

Outcomes: connection refused / reset / timeouts / TLS failures / 4xx replies → retryable; 5xx replies
(bad recipient, sender refused, auth rejected with 535) and a server without STARTTLS/AUTH →
permanent. Some recipients refused but others accepted → ok, with the refused ones in the reason.
The password is a secret: never in a reason or a log line. Each server reply is read up to 64 KB
(`RECEIVER_REPLY_CAP`); a longer one is a retryable failure. This module must never block the event
loop (smtplib runs in a thread) or raise on a failed delivery.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from watchdog.adapters.http import RECEIVER_REPLY_CAP
from watchdog.clock import Clock, SystemClock
from watchdog.config.receivers import EmailReceiverConfig
from watchdog.model import Delivery, DeliveryOutcome, Notification
from watchdog.notify.notifiers.webhook import Scrubber, optional_secret
from watchdog.notify.render import build_message, compile_template, fmt_value

DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class _ReplyTooLarge(OSError):
    """One SMTP reply went past RECEIVER_REPLY_CAP (smtplib has no bound on the number of reply lines)."""


class _CappedReader:
    """The socket file smtplib reads a reply from, allowing at most `cap` bytes for that reply."""

    def __init__(self, raw: Any, cap: int) -> None:
        self._raw, self._left = raw, cap

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._raw.readline(limit)
        self._left -= len(line)
        if self._left < 0:
            raise _ReplyTooLarge(f"reply larger than {RECEIVER_REPLY_CAP} bytes")
        return line

    def close(self) -> None:
        self._raw.close()


class _CappedSMTP(smtplib.SMTP):
    """smtplib.SMTP reading at most RECEIVER_REPLY_CAP bytes of each reply (a hostile server streaming
    "250-" lines forever would otherwise grow the worker thread's memory until the process dies)."""

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None:
            if self.sock is None:
                raise smtplib.SMTPServerDisconnected("please run connect() first")
            self.file = self.sock.makefile("rb")
        raw = self.file
        self.file = _CappedReader(raw, RECEIVER_REPLY_CAP)
        try:
            return super().getreply()
        except smtplib.SMTPServerDisconnected as e:
            if isinstance(e.__context__, _ReplyTooLarge):
                raise smtplib.SMTPResponseException(
                    451, f"reply larger than {RECEIVER_REPLY_CAP} bytes (not read further)".encode()) from None
            raise
        finally:
            if self.file is not None:
                self.file = raw


class _CappedSMTPSSL(_CappedSMTP, smtplib.SMTP_SSL):
    """Implicit TLS, with the same reply cap."""
def _code_outcome(code: int) -> DeliveryOutcome:
    return DeliveryOutcome.RETRYABLE if 400 <= code < 500 else DeliveryOutcome.PERMANENT


def _smtp_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return fmt_value(" ".join(text.split()), 160)


class EmailNotifier:
    def __init__(
        self,
        name: str,
        cfg: EmailReceiverConfig,
        *,
        clock: Clock | None = None,
        base_dir: Path | None = None,
        source: str = "config",
    ) -> None:
        self.name = name
        self._cfg = cfg
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._password = optional_secret(
            cfg.password_env,
            cfg.password_file,
            field=f"notify.receivers.{name}.password",
            base_dir=base_dir,
            source=source,
        )
        self._scrub = Scrubber(self._password)
        self._template = compile_template(cfg)
        self._port = cfg.port or DEFAULT_PORTS[cfg.security]
        ca = cfg.ca_file
        if ca is not None and not ca.is_absolute() and base_dir is not None:
            ca = base_dir / ca
        self._ca = ca
        self._where = f"smtp {cfg.host}:{self._port}"

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self._ca) if self._ca else None)
        if not self._cfg.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def build(self, n: Notification) -> EmailMessage:
        msg = build_message(n, self._template, self._cfg.max_bytes)
        m = EmailMessage()
        subject = " ".join((self._cfg.subject_prefix + msg.rendered.title).split())
        m["Subject"] = subject[:250]
        m["From"] = self._cfg.from_addr
        m["To"] = ", ".join(self._cfg.to)
        m["Date"] = email.utils.formatdate(self._clock.time(), localtime=False)
        safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", n.id)[:120]
        m["Message-ID"] = f"<{safe_id}.{re.sub(r'[^A-Za-z0-9._-]', '_', self.name)}@vllm-watchdog>"
        thread = f"<incident-{n.incident_id}.{n.fingerprint}@vllm-watchdog>"
        m["References"] = thread
        m["In-Reply-To"] = thread
        m["X-Vllm-Watchdog-Event"] = n.event.value
        m["X-Vllm-Watchdog-Severity"] = n.severity.value
        m["X-Vllm-Watchdog-Fingerprint"] = n.fingerprint
        m.set_content(msg.text)
        return m

    def _send_sync(self, m: EmailMessage) -> dict[str, tuple[int, bytes]]:
        cfg = self._cfg
        smtp: smtplib.SMTP
        if cfg.security == "ssl":
            smtp = _CappedSMTPSSL(
                cfg.host,
                self._port,
                local_hostname=cfg.local_hostname,
                timeout=cfg.timeout_s,
                context=self._ssl_context(),
            )
        else:
            smtp = _CappedSMTP(cfg.host, self._port, local_hostname=cfg.local_hostname, timeout=cfg.timeout_s)
        with smtp:
            smtp.ehlo()
            if cfg.security == "starttls":
                smtp.starttls(context=self._ssl_context())
                smtp.ehlo()
            if cfg.username and self._password is not None:
                self._login(smtp, cfg.username, self._password.reveal())
            return smtp.send_message(m)

    @staticmethod
    def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
        """One AUTH attempt with the first of PLAIN/LOGIN the server offers. Unlike `SMTP.login`, a 535
        is not retried with other mechanisms: the same wrong password would only count more failures
        against the account (and some servers stall the second attempt)."""
        if not smtp.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("the server does not offer SMTP AUTH")
        advertised = smtp.esmtp_features["auth"].upper().split()
        for mech in ("PLAIN", "LOGIN"):
            if mech in advertised:
                smtp.user, smtp.password = user, password
                smtp.auth(mech, smtp.auth_plain if mech == "PLAIN" else smtp.auth_login)
                return
        raise smtplib.SMTPNotSupportedError(f"no supported AUTH mechanism (server offers: {' '.join(advertised)})")

    async def send(self, notification: Notification) -> Delivery:
        try:
            m = self.build(notification)
        except Exception as exc:
            return self._done(Delivery(DeliveryOutcome.PERMANENT, f"cannot build mail: {type(exc).__name__}"))
        try:
            async with asyncio.timeout(self._cfg.timeout_s * 4):
                refused = await asyncio.to_thread(self._send_sync, m)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _ in exc.recipients.values()]
            outcome = (
                DeliveryOutcome.RETRYABLE
                if any(_code_outcome(c) is DeliveryOutcome.RETRYABLE for c in codes)
                else DeliveryOutcome.PERMANENT
            )
            listed = ", ".join(f"{a} ({c} {_smtp_text(t)})" for a, (c, t) in exc.recipients.items())
            return self._done(
                Delivery(outcome, f"{self._where}: all recipients refused: {listed}", status_code=codes[0])
            )
        except smtplib.SMTPAuthenticationError as exc:
            return self._done(
                Delivery(
                    _code_outcome(exc.smtp_code),
                    f"{self._where}: authentication failed ({exc.smtp_code} {_smtp_text(exc.smtp_error)}); "
                    "check username and password",
                    status_code=exc.smtp_code,
                )
            )
        except smtplib.SMTPNotSupportedError as exc:
            return self._done(
                Delivery(
                    DeliveryOutcome.PERMANENT,
                    f"{self._where}: server does not support what the config asks ({_smtp_text(str(exc))}); "
                    "check security/username",
                )
            )
        except smtplib.SMTPResponseException as exc:  # sender refused, data error, connect error with a code
            return self._done(
                Delivery(
                    _code_outcome(exc.smtp_code),
                    f"{self._where}: {exc.smtp_code} {_smtp_text(exc.smtp_error)}",
                    status_code=exc.smtp_code,
                )
            )
        except smtplib.SMTPServerDisconnected:
            return self._done(Delivery(DeliveryOutcome.RETRYABLE, f"{self._where}: server closed the connection"))
        except ssl.SSLCertVerificationError as exc:
            return self._done(
                Delivery(
                    DeliveryOutcome.RETRYABLE,
                    f"{self._where}: TLS certificate verification failed ({fmt_value(exc.verify_message or '', 80)})",
                )
            )
        except ssl.SSLError as exc:
            return self._done(Delivery(DeliveryOutcome.RETRYABLE, f"{self._where}: TLS error ({exc.reason})"))
        except ConnectionRefusedError:
            return self._done(Delivery(DeliveryOutcome.RETRYABLE, f"{self._where}: connection refused"))
        except TimeoutError:
            return self._done(Delivery(DeliveryOutcome.RETRYABLE, f"{self._where}: timed out"))
        except OSError as exc:
            return self._done(
                Delivery(DeliveryOutcome.RETRYABLE, f"{self._where}: {type(exc).__name__} ({exc.strerror or exc})")
            )
        except smtplib.SMTPException as exc:
            return self._done(Delivery(DeliveryOutcome.RETRYABLE, f"{self._where}: {type(exc).__name__}"))
        if refused:
            listed = ", ".join(f"{a} ({c})" for a, (c, _) in refused.items())
            n_ok = len(self._cfg.to) - len(refused)
            return self._done(
                Delivery(DeliveryOutcome.OK, f"{self._where}: sent to {n_ok}/{len(self._cfg.to)}; refused: {listed}")
            )
        return self._done(Delivery(DeliveryOutcome.OK, f"{self._where}: sent to {len(self._cfg.to)} recipient(s)"))

    def _done(self, d: Delivery) -> Delivery:
        clean = self._scrub(d.reason)
        return d if clean == d.reason else Delivery(d.outcome, clean, d.status_code, d.retry_after_s)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<EmailNotifier {self.name!r}>"


__all__ = ["EmailNotifier", "EmailReceiverConfig"]
