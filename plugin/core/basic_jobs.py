"""Small jobs that prove the plumbing: the environment report and a self-test job."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .jobs import Job, JobContext, register_job
from .params import spec


@register_job
@dataclass
class EnvironmentReportJob(Job):
    """Report Python, torch, CUDA devices and library versions of the ML environment."""

    kind = "environment_report"
    title = "Environment Report"

    def run(self, ctx: JobContext) -> dict:
        from .environment import report

        ctx.progress("inspect", 0, 1, "Inspecting the machine-learning environment")
        result = report()
        ctx.progress("inspect", 1, 1, "Done")
        return result


@register_job
@dataclass
class SelfTestJob(Job):
    """Counts steps with a pause: proves progress, cancel and crash handling of the runners."""

    kind = "self_test"
    title = "Worker Self-Test"
    hidden = True  # a developer check: not in the Processing toolbox (qgis_process runs it)

    steps: int = spec(5, "STEPS", "Steps", "int", minimum=1, maximum=100000)
    delay: float = spec(0.05, "DELAY", "Seconds per step", "float", minimum=0, maximum=60)
    crash_at: int = spec(-1, "CRASH_AT", "Exit abruptly at this step (-1: never)", "int",
                         minimum=-1, advanced=True)
    ignore_cancel: bool = spec(False, "IGNORE_CANCEL", "Ignore cancel requests", "bool",
                               advanced=True)

    def run(self, ctx: JobContext) -> dict:
        done = 0
        for step in range(1, self.steps + 1):
            if not self.ignore_cancel and ctx.cancelled:
                break
            time.sleep(self.delay)
            if step == self.crash_at:
                os._exit(139)  # like a segfault: no cleanup, no message
            done = step
            ctx.progress("step", step, self.steps, f"step {step}", value=step * step)
        return {"completed": done, "cancelled": ctx.cancelled}
