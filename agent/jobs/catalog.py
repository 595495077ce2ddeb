"""The catalog: every job the agent can run, by name (the job allow-list).

To add a job, import its class here and add one line to :func:`build_jobs`.
``POST /v1/jobs/{job}/run`` refuses (404) any name not in this mapping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agent.config import Config
from agent.jobs.backup_repair import BackupRepairJob
from agent.jobs.base import Job
from agent.jobs.cleanup import CleanupJob
from agent.jobs.digest import DigestJob
from agent.jobs.healthcheck import HealthcheckJob
from agent.jobs.watchdog_job import WatchdogJob

#: When set to ``1`` in the daemon's environment, the test-only ``selftest``
#: job is registered (the integration tests use it; never set in production).
TEST_JOBS_ENV = "VMAGENT_TEST_JOBS"


def build_jobs(config: Config) -> Mapping[str, Job]:
    """``{name: job}`` of every registered job, in display order."""
    jobs: list[Job] = [CleanupJob(), WatchdogJob()]
    jobs.append(BackupRepairJob())
    jobs.append(HealthcheckJob())
    jobs.append(DigestJob())
    if os.environ.get(TEST_JOBS_ENV) == "1":
        from agent.jobs.selftest import SelfTestJob

        jobs.append(SelfTestJob())
    return {job.name: job for job in jobs}
