"""Grasp-hold (SAFETY.md 15): a gripper closed on an object keeps a set squeeze, not a stall.

A policy (or a leader arm) asks for the jaws fully closed when it grasps, so a servo whose jaws
an object stopped keeps pushing at its torque cap: the position error stays large, the current
high and the motor heats. On the STS3215 that also trips its overload protection once the load
stays above ``Overload_Torque`` (lerobot writes 25 % for the gripper) for ``Protection_Time``
(2 s): the output then drops to ``Protective_Torque`` (20 %) until the goal is reached, and a
held object can slip.

:class:`GraspHold` watches the commanded and the measured gripper position. When the command
has stayed well past where the jaws stopped for a few ticks, it is a grasp: from then on the
command is held ``squeeze_pct`` past the measured jaws (a position servo pushes in proportion
to that error), and the control loop lowers the gripper's torque cap to the safety config's
``grasp_torque_limit`` (22 %, below lerobot's 25 % Overload_Torque) for as long as the hold
lasts (:meth:`real.arm.GatedArm.set_grasp_torque`): a stiff servo that would saturate at 4 %
error still squeezes steadily, without tripping. On the twin, over one 15 s pick: overload bit
in 0 of 99 status lines with the hold's cap, 39 of 101 with the 50 % cap kept. Asking for the
jaws more open than that releases the hold at once; so does any tick without a policy action
(a stop, a park). It only shapes the request: the gate still checks and writes every command.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRIPPER = 5  # index of the gripper in SO-101 joint order


def joint_array(action) -> np.ndarray | None:
    """A request as [6] floats in SO-101 joint order (the gate's own conversion), or None for
    anything the gate would refuse; it is passed to the gate as it is, which refuses it."""
    from safety.gate import as_joint_array

    try:
        return as_joint_array(action)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class GraspHold:
    """Per-tick request shaping for the gripper (lerobot units: 0 closed .. 100 open).

    Args:
        detect_gap_pct: the command at least this far past the measured jaws counts as
            pressing on something...
        detect_ticks: ...once it has done so, with the jaws still, for this many ticks.
        still_pct: jaws moving less than this per tick are still.
        squeeze_pct: while holding, the command is the measured jaws minus this.
    """

    detect_gap_pct: float = 6.0
    detect_ticks: int = 4
    still_pct: float = 0.5
    squeeze_pct: float = 4.0

    def __post_init__(self):
        if not 0 < self.squeeze_pct < self.detect_gap_pct:
            raise ValueError(
                f"squeeze_pct must be in (0, detect_gap_pct={self.detect_gap_pct}), got "
                f"{self.squeeze_pct}: a hold at least as hard as the detection gap never ends"
            )
        if self.detect_ticks < 1 or self.still_pct <= 0:
            raise ValueError("detect_ticks must be >= 1 and still_pct > 0")
        self.grasps = 0  # grasps detected so far
        self.reset()

    def reset(self) -> None:
        """Forget the present grasp (a tick without a policy action, a stop)."""
        self.holding = False
        self._pressing = 0
        self._last_measured: float | None = None

    def apply(self, requested: np.ndarray | None, measured: float | None) -> np.ndarray | None:
        """The request to send this tick.

        Args:
            requested: [6] joint request in lerobot units, or None (no fresh action).
            measured: the gripper's measured position this tick, or None (no reading).
        Returns:
            ``requested``, with the gripper held at ``measured - squeeze_pct`` while it grasps.
        """
        if requested is None or measured is None or not np.isfinite(measured):
            return requested
        moved = self._last_measured is not None and abs(measured - self._last_measured) >= (
            self.still_pct
        )
        self._last_measured = measured
        want = float(requested[GRIPPER])
        hold_at = measured - self.squeeze_pct
        if self.holding:
            if not np.isfinite(want) or want >= hold_at:  # opening (or a bad value: the gate's)
                self.holding, self._pressing = False, 0
                return requested
            return self._held(requested, hold_at)
        pressing = np.isfinite(want) and measured - want >= self.detect_gap_pct and not moved
        self._pressing = self._pressing + 1 if pressing else 0
        if self._pressing >= self.detect_ticks:
            self.holding = True
            self.grasps += 1
            return self._held(requested, hold_at)
        return requested

    @staticmethod
    def _held(requested: np.ndarray, hold_at: float) -> np.ndarray:
        out = np.array(requested, dtype=np.float64, copy=True)
        out[GRIPPER] = hold_at
        return out
