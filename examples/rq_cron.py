"""RQ's cron configuration for pqlkit: ``rq cron rq_cron`` enqueues ``sweep()`` every 5 minutes.

Run one ``rq cron`` (several sweeps at once are safe, only wasteful) next to your workers
(``rq worker pqlkit``). Without RQ's scheduler, a crontab line does the same:
``*/5 * * * * cd /app && python -c "import rq_jobs; rq_jobs.sweep(); rq_jobs.close_client()"``.
"""

from __future__ import annotations

from rq import cron
from rq_jobs import QUEUE, sweep

cron.register(sweep, QUEUE, interval=300)  # seconds
