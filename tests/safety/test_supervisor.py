"""Supervisor: watchdogs, health rules and latches (SAFETY.md 10-14, 16, 17, 22)."""

from __future__ import annotations

import numpy as np
import pytest

from safety.supervisor import Directive, ServoHealth, Supervisor, TickReport


def health(temp=30.0, volts=12.0, amps=0.2, status=0) -> ServoHealth:
    return ServoHealth(
        temperature_c=np.full(6, temp),
        voltage_v=np.full(6, volts),
        current_a=np.full(6, amps),
        status=np.full(6, status),
    )


def fresh(now: float, **kw) -> TickReport:
    return TickReport(now=now, action_time=now, observation_time=now, **kw)


def test_all_fresh_runs():
    d = Supervisor().tick(fresh(1.0, health=health()))
    assert d.directive == Directive.RUN and d.infer and d.speed_scale == 1.0


@pytest.mark.parametrize(
    ("age", "expected"), [(0.05, Directive.RUN), (0.15, Directive.HALT), (2.5, Directive.PARK)]
)
def test_command_freshness(age, expected):
    sup = Supervisor()
    d = sup.tick(TickReport(now=10.0, action_time=10.0 - age, observation_time=10.0))
    assert d.directive == expected
    assert (sup.latched == Directive.PARK) == (expected == Directive.PARK)  # park latches


def test_halt_does_not_latch_and_park_does():
    sup = Supervisor()
    assert sup.tick(TickReport(now=1.0, action_time=0.8, observation_time=1.0)).directive == (
        Directive.HALT
    )
    assert sup.tick(fresh(1.1)).directive == Directive.RUN
    sup.tick(TickReport(now=5.0, action_time=1.1, observation_time=5.0))
    assert sup.tick(fresh(5.1)).directive == Directive.PARK  # latched
    sup.reset()
    assert sup.tick(fresh(5.2)).directive == Directive.RUN


def test_stale_or_frozen_observation_stops_inference_only():
    sup = Supervisor()
    d = sup.tick(TickReport(now=1.0, action_time=1.0, observation_time=0.5))
    assert not d.infer and d.directive == Directive.RUN
    for i in range(5):
        d = sup.tick(fresh(2.0 + i / 30, frames_changed=False))
    assert not d.infer and any("frozen" in r for r in d.reasons)
    assert sup.tick(fresh(3.0)).infer  # frames move again


def test_bus_failures_hold_then_cut_power():
    sup = Supervisor()
    sup.tick(fresh(0.0))
    assert sup.tick(fresh(0.03, bus_read_ok=False)).directive == Directive.RUN
    sup.tick(fresh(0.06, bus_read_ok=False))
    assert sup.tick(fresh(0.1, bus_read_ok=False)).directive == Directive.HOLD
    assert sup.heartbeat_ok
    d = sup.tick(fresh(0.6, bus_read_ok=False))
    assert d.directive == Directive.POWER_CUT and not sup.heartbeat_ok
    assert sup.tick(fresh(0.7)).directive == Directive.POWER_CUT  # latched


def test_temperature_derates_then_parks():
    sup = Supervisor()
    assert sup.tick(fresh(0.0, health=health(temp=56.0))).speed_scale == 0.5
    assert sup.tick(fresh(0.1)).speed_scale == 0.5  # stays derated between polls
    assert sup.tick(fresh(0.5, health=health(temp=50.0))).speed_scale == 1.0  # cooled
    assert sup.tick(fresh(1.0, health=health(temp=63.0))).directive == Directive.PARK


@pytest.mark.parametrize("bad", [{"status": 4}, {"volts": 5.0}])
def test_alarms_and_undervoltage_park(bad):
    assert Supervisor().tick(fresh(0.0, health=health(**bad))).directive == Directive.PARK


def test_stall_needs_both_current_and_tracking_error_for_half_a_second():
    sup = Supervisor()
    strain = {"health": health(amps=2.0), "tracking_error_rad": 0.5}
    assert sup.tick(fresh(0.0, **strain)).directive == Directive.RUN
    assert sup.tick(fresh(0.3, **strain)).directive == Directive.RUN
    assert sup.tick(fresh(0.6, **strain)).directive == Directive.RELIEVE
    other = Supervisor()
    other.tick(fresh(0.0, health=health(amps=2.0)))  # grasping: current but on target
    assert other.tick(fresh(1.0, health=health(amps=2.0))).directive == Directive.RUN


def test_repeated_overruns_latch_a_protective_stop():
    sup = Supervisor()
    for i in range(4):
        assert sup.tick(fresh(i / 30, loop_s=0.05)).directive == Directive.RUN
    assert sup.tick(fresh(0.2, loop_s=0.05)).directive == Directive.HOLD
    assert sup.tick(fresh(0.3, loop_s=0.001)).directive == Directive.HOLD  # latched


def test_gripper_overload_while_grasping_is_not_an_alarm_elsewhere_it_is():
    squeezing = health()
    squeezing.status[5] = 32  # the gripper's overload protection: it is holding a cube
    assert Supervisor().tick(fresh(0.0, health=squeezing)).directive == Directive.RUN
    elbow = health()
    elbow.status[2] = 32
    assert Supervisor().tick(fresh(0.0, health=elbow)).directive == Directive.PARK
    both = health()
    both.status[5] = 32 | 4  # the gripper overheating as well
    assert Supervisor().tick(fresh(0.0, health=both)).directive == Directive.PARK
