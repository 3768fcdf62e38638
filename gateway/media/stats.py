"""What the media feature counts, exported to Prometheus at scrape time (see gateway/metrics.py)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class MediaStats:
    def __init__(self) -> None:
        self.uploads: Counter[str] = Counter()  # stored, by kind
        self.upload_bytes: Counter[str] = Counter()  # stored bytes, by kind
        self.refused: Counter[str] = Counter()  # refused uploads and downloads, by error code
        self.downloads: Counter[str] = Counter()  # by variant
        self.download_bytes = 0
        self.deletions: Counter[str] = Counter()  # attachments deleted, by kind
        self.uploads_in_progress = 0
        self.display_copies_made = 0  # made on first download, for images stored without one


class MediaCollector(Collector):
    def __init__(self, stats: MediaStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        s = self.stats
        uploads = CounterMetricFamily("kefu_media_uploads", "Attachments stored, by kind.", labels=["kind"])
        upload_bytes = CounterMetricFamily("kefu_media_upload_bytes", "Bytes of attachments stored, by kind.", labels=["kind"])
        for kind in sorted(s.uploads):
            uploads.add_metric([kind], s.uploads[kind])
            upload_bytes.add_metric([kind], s.upload_bytes[kind])
        refused = CounterMetricFamily("kefu_media_refused", "Uploads and downloads refused, by error code.", labels=["code"])
        for code in sorted(s.refused):
            refused.add_metric([code], s.refused[code])
        downloads = CounterMetricFamily("kefu_media_downloads", "Attachment downloads served, by variant.", labels=["variant"])
        for variant in sorted(s.downloads):
            downloads.add_metric([variant], s.downloads[variant])
        deletions = CounterMetricFamily("kefu_media_deletions", "Attachments deleted (their blobs removed), by kind.", labels=["kind"])
        for kind in sorted(s.deletions):
            deletions.add_metric([kind], s.deletions[kind])
        yield uploads
        yield upload_bytes
        yield refused
        yield downloads
        yield deletions
        yield CounterMetricFamily("kefu_media_download_bytes", "Bytes of attachments sent.", value=s.download_bytes)
        yield CounterMetricFamily(
            "kefu_media_display_copies_made", "Display copies made on first download, for images stored without one.", value=s.display_copies_made
        )
        yield GaugeMetricFamily("kefu_media_uploads_in_progress", "Uploads being received or inspected.", value=s.uploads_in_progress)
