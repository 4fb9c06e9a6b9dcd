"""Ingest: edges that decode input, validate it, dead-letter the bad part and append the rest.

Files (:func:`ingest_file`) today; HTTP and MQTT edges share the same rules.
"""

from fluvial.ingest.files import IngestReport, ingest_file, parse_time_ms

__all__ = ["IngestReport", "ingest_file", "parse_time_ms"]
