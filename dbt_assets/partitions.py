"""Every partitions definition of the platform, in one place.

Per-study assets are partitioned by (de-identified, i.e. shifted) study date.  The
first day is configurable because shifted dates reach back up to two years.
"""

from __future__ import annotations

import os

import dagster as dg

PARTITIONS_START = os.environ.get("TOMOSIGHT_PARTITIONS_START", "2018-01-01")

study_date = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)
"""Daily partitions by study date; ``end_offset=1`` makes today's studies materialisable."""
