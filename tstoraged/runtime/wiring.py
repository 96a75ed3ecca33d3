"""From validated :class:`~tstoraged.config.Settings` to the pipeline's plain settings."""

from __future__ import annotations

import ssl

from tstoraged.config.model import Settings, TLSSettings
from tstoraged.pipeline import settings as ps

__all__ = ["batch_settings", "queue_settings", "retry_settings", "ssl_context", "target_settings"]


def ssl_context(tls: TLSSettings) -> ssl.SSLContext | None:
    """The client TLS context of ``[tstorage.tls]``, or None when TLS is off."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        password = tls.key_password.get_secret_value() if tls.key_password is not None else None
        context.load_cert_chain(
            str(tls.cert_file),
            str(tls.key_file) if tls.key_file is not None else None,
            password=password,
        )
    return context


def target_settings(settings: Settings) -> ps.TargetSettings:
    """``[tstorage]`` as the writer's target."""
    t = settings.tstorage
    return ps.TargetSettings(
        host=t.host,
        port=t.port,
        timeout=t.timeout,
        ssl_context=ssl_context(t.tls),
        write_mode=t.write_mode,
        connect_timeout=t.connect_timeout,
        server_hostname=t.tls.server_hostname,
    )


def batch_settings(settings: Settings) -> ps.BatchSettings:
    """``[batch]``."""
    b = settings.batch
    return ps.BatchSettings(
        max_batch_size=b.max_batch_size, max_records=b.max_records, flush_interval=b.flush_interval
    )


def queue_settings(settings: Settings) -> ps.QueueSettings:
    """``[queue]``."""
    return ps.QueueSettings(
        max_records=settings.queue.max_records, max_bytes=settings.queue.max_bytes
    )


def retry_settings(settings: Settings) -> ps.RetrySettings:
    """``[retry]``."""
    r = settings.retry
    return ps.RetrySettings(
        initial_backoff=r.initial_backoff,
        max_backoff=r.max_backoff,
        jitter=r.jitter,
        give_up_after_attempts=r.give_up_attempts,
        give_up_after_seconds=r.give_up_after,
        max_refusals=r.max_refusals,
        outage_report_interval=r.outage_report_interval,
    )
