"""Schedules: periodic publishes (cron or every N seconds), each tick published once across every
hub of a bus. `Schedule` is the definition and its ticks (schedule.py); the hub's one task that
fires them is `Scheduler` (runner.py); the bus decides, atomically, which tick is new
(`actionhub.bus.ticks`, and in Redis `scripts.FIRE_TICKS`). Nothing here imports redis."""

from .runner import MAX_CATCH_UP, MISSED_AFTER, ScheduleInfo, Scheduler
from .schedule import CATCH_UPS, CatchUp, Schedule, ScheduleOptions, tick_time

__all__ = [
    "CATCH_UPS",
    "MAX_CATCH_UP",
    "MISSED_AFTER",
    "CatchUp",
    "Schedule",
    "ScheduleInfo",
    "ScheduleOptions",
    "Scheduler",
    "tick_time",
]
